"""Parameters and FLOPs per image of an ONNX graph (GEMM-like ops only: Conv, MatMul, Gemm)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from grmp_edge.errors import require


def graph_cost(onnx_path: str | Path) -> dict[str, float]:
    """``{"params": ..., "gflops_per_image": ...}`` from shape inference at batch 1.

    FLOPs count a multiply-add as 2. Element-wise ops, softmax and normalisation are left out: on
    a ViT they are a few percent of the total, and leaving them out keeps the number comparable with
    the GEMM peak it is divided by.
    """
    onnx = require("onnx", "export")
    from onnx import shape_inference

    model = onnx.load(str(onnx_path), load_external_data=False)
    params = 0
    for init in model.graph.initializer:
        params += int(np.prod(init.dims)) if init.dims else 1
    # Fix the batch dimension to 1 so inference gives concrete shapes.
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    # Quantised graphs feed GEMMs through DequantizeLinear: look through it to the weight's shape.
    dq_source = {n.output[0]: n.input[0] for n in inferred.graph.node if n.op_type == "DequantizeLinear"}

    def shape(name: str) -> list[int] | None:
        return shapes.get(name) or shapes.get(dq_source.get(name, ""))

    flops = 0.0
    for node in inferred.graph.node:
        out = shape(node.output[0])
        if node.op_type in ("MatMul", "MatMulInteger", "Gemm"):
            a = shape(node.input[0])
            if out and a:
                flops += 2.0 * float(np.prod(out)) * a[-1]
        elif node.op_type in ("Conv", "ConvInteger"):
            w = shape(node.input[1])
            if out and w:
                flops += 2.0 * float(np.prod(out)) * float(np.prod(w[1:]))
    return {"params": float(params), "gflops_per_image": flops / 1e9}
