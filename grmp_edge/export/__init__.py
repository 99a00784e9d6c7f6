"""Compiler side: fold prompts into constants, ONNX, FP16/INT8 variants, TensorRT plans, bundles."""
