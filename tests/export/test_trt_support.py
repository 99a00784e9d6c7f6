"""The static TensorRT 10 check: clean graphs pass, graphs TensorRT's parser would refuse fail by node."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from grmp_edge.errors import GrmpError  # noqa: E402
from grmp_edge.export.trt_support import (  # noqa: E402
    SUPPORTED_OPS,
    UNSUPPORTED_OPS,
    check_tensorrt_support,
    require_tensorrt_support,
)


def _model(nodes, inputs, outputs, initializers=(), opset=17, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", opset), *[helper.make_opsetid(d, v) for d, v in extra_opsets]]
    return helper.make_model(graph, opset_imports=opsets)


def _clean_model(opset=17):
    """uint8 NHWC image -> Cast -> scale -> LayerNorm -> MatMul -> Softmax -> ReduceMean -> Sigmoid."""
    w = numpy_helper.from_array(np.ones((3, 3), np.float32), "w")
    scale = numpy_helper.from_array(np.array(1 / 255, np.float32), "scale")
    gamma = numpy_helper.from_array(np.ones(3, np.float32), "gamma")
    axes = numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Mul", ["x", "scale"], ["xs"], name="scale"),
        helper.make_node("LayerNormalization", ["xs", "gamma"], ["ln"], axis=-1, name="ln"),
        helper.make_node("MatMul", ["ln", "w"], ["mm"], name="mm"),
        helper.make_node("Softmax", ["mm"], ["sm"], axis=-1, name="softmax"),
        helper.make_node("ReduceMean", ["sm", "axes"], ["mean"], keepdims=0, name="reduce"),
        helper.make_node("Sigmoid", ["mean"], ["score"], name="sigmoid"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", 4, 4, 3])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        [w, scale, gamma, axes],
        opset=opset if opset >= 18 else 18,
    )


def test_table_encodes_reference_facts():
    assert SUPPORTED_OPS["LayerNormalization"][0].split() == ["FP32", "FP16", "BF16"]
    assert "UINT8" in SUPPORTED_OPS["Cast"][0].split()
    assert "INT8" in SUPPORTED_OPS["DequantizeLinear"][0].split()
    assert {"Col2Im", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeLinear"} <= UNSUPPORTED_OPS
    assert not set(SUPPORTED_OPS) & UNSUPPORTED_OPS


def test_clean_graph_passes(tmp_path):
    model = _clean_model()
    onnx.checker.check_model(model, full_check=True)
    assert check_tensorrt_support(model) == []
    path = tmp_path / "clean.onnx"
    onnx.save(model, str(path))
    require_tensorrt_support(path)  # accepts a path too


def test_custom_domain_and_unsupported_op_fail_with_node_names():
    nodes = [
        helper.make_node("FusedMatMul", ["x", "x"], ["y"], domain="com.microsoft", name="fused_mm"),
        helper.make_node("Col2Im", ["y", "shape", "block"], ["z"], name="col2im_node"),
    ]
    inits = [numpy_helper.from_array(np.array([2, 2], np.int64), n) for n in ("shape", "block")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])],
                   [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits,
                   opset=18, extra_opsets=[("com.microsoft", 1)])
    problems = check_tensorrt_support(model)
    assert {(p.node, p.op) for p in problems} >= {("fused_mm", "FusedMatMul"), ("col2im_node", "Col2Im")}
    with pytest.raises(GrmpError, match=r"fused_mm \(FusedMatMul\).*col2im_node \(Col2Im\)"):
        require_tensorrt_support(model, "model_fp32.onnx")


def test_opset_21_fails():
    model = _clean_model(opset=21)
    problems = check_tensorrt_support(model)
    assert [p.op for p in problems] == ["opset"]
    assert "21" in problems[0].message


def test_unlisted_op_fails():
    model = _model([helper.make_node("Attention", ["x", "x", "x"], ["y"], name="attn")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], opset=20)
    assert [(p.node, p.op) for p in check_tensorrt_support(model)] == [("attn", "Attention")]


def test_asymmetric_uint8_qdq_fails():
    """ONNX Runtime's default U8 activations with zero point 128 are not TensorRT's explicit quantization."""
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(128, np.uint8), "zp")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="quant"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dequant")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [scale, zp])
    problems = check_tensorrt_support(model)
    nodes_hit = {p.node for p in problems}
    assert {"quant", "dequant", "q"} <= nodes_hit
    assert any("UINT8" in p.message for p in problems)
    assert any("zero" in p.message for p in problems if p.node == "quant")


def test_symmetric_int8_qdq_passes():
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(0, np.int8), "zp")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="quant"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dequant")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [scale, zp])
    assert check_tensorrt_support(model) == []


def test_restrictions_are_checked():
    """Restrictions of the matrix: non-constant axes, Resize cubic/antialias, used LayerNorm extra outputs."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Slice", ["x", "starts", "ends", "shape"], ["sliced"], name="slice_dynamic_axes"),
        helper.make_node("Resize", ["x", "", "scales"], ["resized"], mode="cubic", antialias=1, name="resize_cubic"),
        helper.make_node("LayerNormalization", ["x", "gamma"], ["ln", "ln_mean"], name="ln_two_outputs"),
        helper.make_node("Add", ["ln", "ln_mean"], ["y"], name="add"),
    ]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "starts"),
             numpy_helper.from_array(np.array([1], np.int64), "ends"),
             numpy_helper.from_array(np.ones(4, np.float32), "scales"),
             numpy_helper.from_array(np.ones(4, np.float32), "gamma")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "sliced", "resized")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])], outputs, inits,
                   opset=19)
    by_node = {}
    for p in check_tensorrt_support(model):
        by_node.setdefault(p.node, []).append(p.message)
    assert set(by_node) == {"slice_dynamic_axes", "resize_cubic", "ln_two_outputs"}
    assert len(by_node["resize_cubic"]) == 2  # cubic mode and antialiasing
