"""Compiler side: fold prompts into constants, ONNX, FP16/INT8 variants, TensorRT plans, bundles.

The Python API is :func:`grmp_edge.export.build.build_bundle` (a checkpoint in, a checked bundle
out) and :func:`grmp_edge.export.plans.build_plans_from_onnx` (a plan of an exported graph, on the
device), both configured by :class:`grmp_edge.export.options.ExportOptions`; what each ``--format``
writes and takes is the table in :mod:`grmp_edge.export.formats`.
"""
