"""FP16 variant of an exported quality graph, with the overflow-prone parts kept in FP32.

FP16 CLIP ViTs are known to fail on TensorRT through LayerNorm overflow (the variance of the residual
stream exceeds FP16's range), and Softmax and the tiny scoring head gain nothing from half precision
while losing score resolution. So everything runs in FP16 except LayerNormalization, Softmax and the
head (everything after the last LayerNorm that feeds ``score``: projection, L2 normalisation, the
text-direction MatMul and the sigmoid). ONNX Runtime's own converter inserts the Casts; the result is
checked to hold explicit Casts only (no node mixing float types), which a strongly typed TensorRT
network requires.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from grmp_edge.artifacts import atomic_write
from grmp_edge.errors import GrmpError, require
from grmp_edge.export.onnx_export import check_onnx_model
from grmp_edge.spec import OUTPUT_NAME

# Op types kept in FP32 wherever they appear.
KEEP_FP32_OPS = ("LayerNormalization", "Softmax")

# Where the search for the scoring head stops: the head starts after the last LayerNorm; Shape only
# reads a tensor's shape, so the backbone behind it is not part of the head.
_HEAD_BOUNDARY_OPS = {"LayerNormalization", "Shape"}

_FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


def score_head_nodes(model, output: str = OUTPUT_NAME) -> list[str]:
    """Names of the nodes between the last LayerNormalization and ``output`` (the scoring head).

    That is the projection, L2 normalisation, text-direction product and sigmoid: the nodes whose
    precision sets the score's resolution. Raises GrmpError when no LayerNormalization precedes the
    output, because then the head cannot be told from the backbone.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    graph_inputs = {i.name for i in graph.input}
    if output not in producer:
        raise GrmpError(f"the graph has no output named {output!r}")
    head: list[str] = []
    seen: set[int] = set()
    queue = [producer[output]]
    while queue:
        node = queue.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        head.append(node.name)
        if node.op_type in _HEAD_BOUNDARY_OPS:
            continue
        for name in node.input:
            if name in graph_inputs:
                raise GrmpError(
                    f"no LayerNormalization between the input and {output!r}: cannot separate the head"
                )
            if name in producer:
                queue.append(producer[name])
    unnamed = [n for n in head if not n]
    if unnamed:
        raise GrmpError("the scoring head has unnamed nodes; export with node names")
    return head


def float_type_conflicts(model) -> list[str]:
    """Nodes whose float inputs or outputs mix precisions (a strongly typed TensorRT build rejects them).

    Cast is the only node allowed to change float type, and inputs that stay FP32 by their op's
    schema (the converter's ``ALWAYS_FLOAT_INPUTS``, e.g. Resize scales) are not counted. This also
    catches ops whose schema allows mixed float inputs, such as Pow, which a strongly typed
    TensorRT network rejects. Returns one line per offending node.
    """
    onnx = require("onnx", "export")
    float16 = require("onnxruntime.transformers.float16", "export")
    # Lenient inference, so that every offending node is listed rather than the first one raised.
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    elem_type = {v.name: v.type.tensor_type.elem_type for v in
                 list(graph.value_info) + list(graph.input) + list(graph.output)}
    elem_type.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    elem_type[node.output[0]] = attr.t.data_type
    problems = []
    for node in graph.node:
        if node.op_type == "Cast":
            continue
        fixed = set(float16.ALWAYS_FLOAT_INPUTS.get(node.op_type, ()))
        inputs = [name for i, name in enumerate(node.input) if i not in fixed]
        types = {elem_type.get(name) for name in inputs + list(node.output) if name}
        floats = sorted(_FLOAT_TYPES[t] for t in types if t in _FLOAT_TYPES)
        if len(floats) > 1:
            problems.append(f"{node.name} ({node.op_type}): {', '.join(floats)}")
    return problems


def to_fp16(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    keep_fp32_ops: Sequence[str] = KEEP_FP32_OPS,
    keep_fp32_nodes: Iterable[str] | None = None,
    output: str = OUTPUT_NAME,
) -> Path:
    """Write an FP16 copy of ``fp32_path`` to ``out_path`` and return ``out_path``.

    Graph inputs and outputs keep their types (uint8 ``image`` in, float32 ``score`` out). Ops in
    ``keep_fp32_ops`` (default: LayerNormalization, Softmax) and the scoring head found by
    :func:`score_head_nodes` (plus any ``keep_fp32_nodes``) stay FP32 behind explicit Casts.
    Raises GrmpError if the result mixes float types inside a node or fails ONNX's full check.
    """
    onnx = require("onnx", "export")
    float16 = require("onnxruntime.transformers.float16", "export")
    onnx_model = require("onnxruntime.transformers.onnx_model", "export")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise GrmpError(f"ONNX model not found: {fp32_path}")
    model = onnx.load(str(fp32_path))
    keep_nodes = set(score_head_nodes(model, output)) | set(keep_fp32_nodes or ())
    # The converter's default block list (ML and index ops without FP16 kernels) still applies.
    op_block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(keep_fp32_ops))
    # ORT's OnnxModel wrapper runs the converter, then drops cascaded and useless Casts; the Casts
    # it adds are appended, so the graph is sorted again before checking.
    wrapper = onnx_model.OnnxModel(model)
    wrapper.convert_float_to_float16(
        use_symbolic_shape_infer=False,
        keep_io_types=True,
        op_block_list=op_block,
        node_block_list=sorted(keep_nodes),
    )
    wrapper.topological_sort()
    converted = wrapper.model
    conflicts = float_type_conflicts(converted)
    if conflicts:
        raise GrmpError("FP16 graph mixes float types inside nodes: " + "; ".join(conflicts))
    check_onnx_model(converted, "FP16 graph fails the ONNX check")
    return atomic_write(out_path, lambda tmp: onnx.save(converted, str(tmp)))
