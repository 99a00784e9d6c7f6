"""INT8: symmetric QDQ on GEMM inputs only for TensorRT; the fastest passing CPU form for ONNX Runtime."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="quantisation needs onnx")
pytest.importorskip("onnxruntime.quantization", reason="quantisation needs onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from grmp_edge.errors import GrmpError  # noqa: E402
from grmp_edge.export.fp16 import score_head_nodes  # noqa: E402
from grmp_edge.export.gates import GATE_DEFAULTS, GateFailed, agreement_gate, run_onnx  # noqa: E402
from grmp_edge.export.int8 import (  # noqa: E402
    CPU_CANDIDATES,
    GEMM_OPS,
    quantize_int8_cpu,
    quantize_int8_qdq,
    tensorrt_qdq_problems,
)


def _calib(graph):
    return graph.batches(8, stop=32)


@pytest.fixture(scope="module")
def qdq_paths(tiny_graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8")
    return {m: quantize_int8_qdq(tiny_graph.onnx_path, out / f"qdq_{m}.onnx", _calib(tiny_graph), m)
            for m in ("minmax", "percentile")}


def _consumers(model):
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def test_qdq_zero_points_are_symmetric_int8(qdq_paths):
    model = onnx.load(str(qdq_paths["minmax"]))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zero_point = init[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    assert tensorrt_qdq_problems(model) == []


def test_qdq_wraps_gemm_inputs_only(tiny_graph, qdq_paths):
    model = onnx.load(str(qdq_paths["minmax"]))
    consumers = _consumers(model)
    producers = {out: n for n in model.graph.node for out in n.output}
    dequantized = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    fed = {c.op_type for n in dequantized for c in consumers[n.output[0]]}
    assert fed == {"MatMul", "Conv"}
    # LayerNorm, Softmax and GELU read float tensors, and no GEMM output is re-quantized.
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "Erf"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
        if node.op_type in GEMM_OPS:
            assert all(c.op_type != "QuantizeLinear" for c in consumers.get(node.output[0], []))
    # Every backbone GEMM is quantized; the head's are not.
    head = set(score_head_nodes(onnx.load(str(tiny_graph.onnx_path))))
    for node in model.graph.node:
        if node.op_type in GEMM_OPS:
            quantized = any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
                            for i in node.input)
            assert quantized == (node.name not in head), node.name


def test_qdq_weights_are_per_channel(qdq_paths):
    model = onnx.load(str(qdq_paths["minmax"]))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in init]
    assert len(weights) == 9  # conv + 4 linear layers x 2 blocks
    for node in weights:
        axis = {a.name: a.i for a in node.attribute}["axis"]
        assert init[node.input[1]].shape == (init[node.input[0]].shape[axis],)
        assert init[node.input[0]].dtype == np.int8


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_qdq_runs_on_ort_and_passes_the_gate(tiny_graph, qdq_paths, method):
    batches = tiny_graph.batches(16)
    ref = run_onnx(tiny_graph.onnx_path, batches, threads=1)
    gate = agreement_gate(method, ref, run_onnx(qdq_paths[method], batches, threads=1),
                          min_srcc=GATE_DEFAULTS["int8"])
    assert gate.passed, gate


def test_calibration_methods_give_different_ranges(qdq_paths):
    def scales(path):
        model = onnx.load(str(path))
        init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        return np.array([float(init[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"])

    minmax, percentile = scales(qdq_paths["minmax"]), scales(qdq_paths["percentile"])
    assert minmax.shape == percentile.shape
    assert np.all(percentile <= minmax * (1 + 1e-6)) and np.any(percentile < minmax)


@pytest.mark.slow
def test_entropy_calibration_clips_ranges(tiny_graph, qdq_paths, tmp_path):
    path = quantize_int8_qdq(tiny_graph.onnx_path, tmp_path / "qdq_entropy.onnx", _calib(tiny_graph), "entropy")
    model = onnx.load(str(path))
    assert tensorrt_qdq_problems(model) == []
    minmax = onnx.load(str(qdq_paths["minmax"]))
    get = lambda m: {  # noqa: E731
        n.input[0]: float(numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == n.input[1])))
        for n in m.graph.node if n.op_type == "QuantizeLinear"}
    entropy_scales, minmax_scales = get(model), get(minmax)
    assert any(entropy_scales[k] < 0.95 * minmax_scales[k] for k in entropy_scales)
    batches = tiny_graph.batches(16)
    gate = agreement_gate("entropy", run_onnx(tiny_graph.onnx_path, batches), run_onnx(path, batches), min_srcc=0.99)
    assert gate.passed, gate


def test_qdq_rejects_bad_arguments(tiny_graph, tmp_path):
    with pytest.raises(GrmpError, match="calibration method"):
        quantize_int8_qdq(tiny_graph.onnx_path, tmp_path / "q.onnx", _calib(tiny_graph), "kl")
    with pytest.raises(GrmpError, match="uint8"):
        quantize_int8_qdq(tiny_graph.onnx_path, tmp_path / "q.onnx", [tiny_graph.images[:4] / 255.0])
    with pytest.raises(GrmpError, match="no calibration images"):
        quantize_int8_qdq(tiny_graph.onnx_path, tmp_path / "q.onnx", [])
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def _qdq_graph(zero_point: int, consumer: str):
    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(zero_point, np.int8), "zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq"),
        helper.make_node(consumer, ["xd", "w"] if consumer == "MatMul" else ["xd"], ["y"], name="op"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [weight, scale, zp])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_qdq_checker_flags_what_tensorrt_rejects():
    assert tensorrt_qdq_problems(_qdq_graph(0, "MatMul")) == []
    asymmetric = tensorrt_qdq_problems(_qdq_graph(3, "MatMul"))
    assert len(asymmetric) == 2 and all("zero point" in p for p in asymmetric)
    wrapped = tensorrt_qdq_problems(_qdq_graph(0, "Softmax"))
    assert wrapped == ["dq: dequantized tensor feeds Softmax op"]


@pytest.fixture(scope="module")
def cpu_result(tiny_graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8cpu") / "model_int8_cpu.onnx"
    return quantize_int8_cpu(tiny_graph.onnx_path, out, _calib(tiny_graph), tiny_graph.batches(16),
                             labels=-tiny_graph.levels, timing_runs=3, threads=1)


def test_cpu_form_keeps_fastest_passing_candidate(cpu_result):
    path, info = cpu_result
    assert path.is_file()
    names = [c.name for c in info.candidates]
    assert names == [name for name, _, _ in CPU_CANDIDATES]
    passing = [c for c in info.candidates if c.gate.passed]
    assert passing, info
    fastest = min(passing, key=lambda c: c.latency_ms)
    assert info.chosen == fastest
    assert info.fp32_ms > 0 and all(c.latency_ms > 0 for c in info.candidates)
    assert set(info.chosen.gate.labels) == {"fp32", f"int8 cpu {info.chosen.name}"}
    # The manifest's form of the report: today's keys, the chosen form's gate repeated at the top.
    manifest_info = info.to_dict()
    assert list(manifest_info) == ["chosen", "form", "gate", "fp32_ms", "timing_runs", "candidates"]
    assert manifest_info["chosen"] == fastest.name and manifest_info["gate"] == fastest.gate.to_dict()
    assert [list(c) for c in manifest_info["candidates"]] == [["name", "form", "latency_ms", "speedup", "gate"]] * 2
    assert not list(path.parent.glob(".int8cpu-*"))  # the work folder is gone


def test_cpu_form_runs_and_agrees(tiny_graph, cpu_result):
    path, info = cpu_result
    batches = tiny_graph.batches(16)
    scores = run_onnx(path, batches, threads=1)
    gate = agreement_gate("int8 cpu", run_onnx(tiny_graph.onnx_path, batches, threads=1), scores, min_srcc=0.99)
    assert gate.srcc == pytest.approx(info.chosen.gate.srcc)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "QLinearConv"}


def test_cpu_form_fails_an_impossible_gate(tiny_graph, tmp_path):
    args = (tiny_graph.onnx_path, tmp_path / "cpu.onnx", _calib(tiny_graph), tiny_graph.batches(16))
    with pytest.raises(GateFailed, match="no INT8 CPU form passes"):
        quantize_int8_cpu(*args, gate=1.01, timing_runs=1, threads=1)
    assert not (tmp_path / "cpu.onnx").exists()
    path, info = quantize_int8_cpu(*args, gate=1.01, allow_drift=True, timing_runs=1, threads=1)
    best = max(info.candidates, key=lambda c: c.gate.srcc)
    assert path.is_file() and info.chosen == best and not info.chosen.gate.passed
