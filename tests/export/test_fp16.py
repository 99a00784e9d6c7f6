"""FP16 graph: LayerNorm / Softmax / head in FP32, I/O types kept, explicit Casts only, agrees with FP32."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="FP16 conversion needs onnx")
from onnx import TensorProto, helper  # noqa: E402

from grmp_edge.errors import GrmpError  # noqa: E402
from grmp_edge.export.fp16 import float_type_conflicts, score_head_nodes, to_fp16  # noqa: E402
from grmp_edge.export.gates import GATE_DEFAULTS, agreement_gate, run_onnx  # noqa: E402

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16}


@pytest.fixture(scope="module")
def fp16_path(tiny_graph, tmp_path_factory):
    return to_fp16(tiny_graph.onnx_path, tmp_path_factory.mktemp("fp16") / "model_fp16.onnx")


def _tensor_types(model) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def _float_types_of(node, types) -> set[int]:
    return {types[n] for n in [*node.input, *node.output] if n and types.get(n) in FLOAT_TYPES}


def test_io_types_are_kept(fp16_path):
    model = onnx.load(str(fp16_path))
    assert [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input] == [("image", TensorProto.UINT8)]
    assert [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output] == [("score", TensorProto.FLOAT)]


def test_layernorm_softmax_and_head_stay_fp32(tiny_graph, fp16_path):
    model = onnx.load(str(fp16_path))
    types = _tensor_types(model)
    head = set(score_head_nodes(onnx.load(str(tiny_graph.onnx_path))))
    kept = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax") or n.name in head]
    assert {n.op_type for n in kept} >= {"LayerNormalization", "Softmax", "ReduceL2", "MatMul", "Sigmoid"}
    assert len([n for n in kept if n.op_type == "LayerNormalization"]) == 6
    for node in kept:
        assert _float_types_of(node, types) == {TensorProto.FLOAT}, node.name
    # ... while the backbone's GEMMs really run in half precision.
    gemms = [n for n in model.graph.node if n.op_type in ("MatMul", "Conv") and n.name not in head]
    assert gemms and all(_float_types_of(n, types) == {TensorProto.FLOAT16} for n in gemms)


def test_graph_is_strongly_typed_and_valid(fp16_path):
    model = onnx.load(str(fp16_path))
    assert float_type_conflicts(model) == []
    onnx.checker.check_model(model, full_check=True)
    assert not [n for n in model.graph.node if n.domain not in ("", "ai.onnx")]


def test_weights_are_halved(tiny_graph, fp16_path):
    assert fp16_path.stat().st_size < 0.7 * tiny_graph.onnx_path.stat().st_size


def test_fp16_agrees_with_fp32(tiny_graph, fp16_path):
    batches = tiny_graph.batches(16)
    ref = run_onnx(tiny_graph.onnx_path, batches, threads=1)
    gate = agreement_gate("fp16", ref, run_onnx(fp16_path, batches, threads=1), min_srcc=GATE_DEFAULTS["fp16"])
    assert gate.passed, gate
    assert gate.max_abs_delta < 5e-3


def test_head_is_everything_after_the_last_layernorm(tiny_graph):
    head = score_head_nodes(onnx.load(str(tiny_graph.onnx_path)))
    assert {"/Sigmoid", "/ReduceL2", "/Div_1", "/MatMul", "/MatMul_1", "/ln_post/LayerNormalization"} <= set(head)
    assert not [name for name in head if "blocks" in name]


def _graph(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_head_without_layernorm_is_refused():
    model = _graph(
        [helper.make_node("Sigmoid", ["x"], ["score"], name="sig")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])],
    )
    with pytest.raises(GrmpError, match="no LayerNormalization"):
        score_head_nodes(model)
    with pytest.raises(GrmpError, match="no output named"):
        score_head_nodes(model, output="embedding")


def test_mixed_float_node_is_reported():
    half = helper.make_tensor("h", TensorProto.FLOAT16, [2], np.ones(2, np.float16).view(np.uint16).tolist())
    model = _graph(
        [helper.make_node("Mul", ["x", "h"], ["y"], name="mixed")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [half],
    )
    problems = float_type_conflicts(model)
    assert len(problems) == 1 and "float16" in problems[0] and "float32" in problems[0]


def test_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(GrmpError, match="not found"):
        to_fp16(tmp_path / "nope.onnx", tmp_path / "out.onnx")
