"""TensorRT plans: sidecar compatibility rules (pure, run everywhere) and the real build (needs TensorRT)."""
from __future__ import annotations

import json

import pytest

from grmp_edge.device import parse_tegra_release
from grmp_edge.errors import GrmpError
from grmp_edge.export.tensorrt_build import (
    batch_profile,
    default_timing_cache,
    load_sidecar,
    sidecar_path,
)

ORIN = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "jetpack": "JetPack 6.1"}


def _sidecar(**changes):
    return {"plan": "model_fp16.plan", "precision": "fp16", "batch": {"min": 1, "opt": 1, "max": 8},
            "onnx_sha256": "0" * 64, **ORIN, **changes}


def test_sidecar_sits_next_to_the_plan(tmp_path):
    plan = tmp_path / "model_fp16.plan"
    assert sidecar_path(plan) == tmp_path / "model_fp16.plan.json"
    with pytest.raises(GrmpError, match="no sidecar model_fp16.plan.json"):
        load_sidecar(plan)
    sidecar_path(plan).write_text(json.dumps(_sidecar()))
    assert load_sidecar(plan)["gpu_name"] == "Orin"


def test_batch_profile_validation():
    assert batch_profile((1, 4, 8)) == {"min": 1, "opt": 4, "max": 8}
    for bad in [(0, 1, 8), (1, 9, 8), (2, 1, 8), (1, 8)]:
        with pytest.raises(GrmpError, match="batch profile"):
            batch_profile(bad)


def test_tegra_release_parsing():
    text = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8"
    assert parse_tegra_release(text) == "L4T R36.4.3"
    assert parse_tegra_release("not a jetson") is None


def test_timing_cache_is_per_version_and_gpu(tmp_path, monkeypatch):
    monkeypatch.delenv("GRMP_EDGE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    orin = default_timing_cache(ORIN)
    assert orin.parent == tmp_path / "grmp-edge"
    assert orin != default_timing_cache({**ORIN, "tensorrt_version": "10.7.0"})
    assert orin != default_timing_cache({**ORIN, "gpu_name": "Orin Nano"})


@pytest.fixture(scope="session")
def trt():
    """The tensorrt module (session-scoped and listed first, so the skip comes before any export work)."""
    return pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed here; run on a Jetson or GPU box with grmp-edge[tensorrt]"
    )


@pytest.mark.tensorrt
def test_build_plans_with_sidecars(trt, tiny_graph, tmp_path):
    from grmp_edge.artifacts import sha256_file
    from grmp_edge.export.fp16 import to_fp16
    from grmp_edge.export.int8 import quantize_int8_qdq
    from grmp_edge.export.tensorrt_build import build_engine, current_device_info
    from grmp_edge.runtime.plan_compat import check_plan_compatible

    fp16 = to_fp16(tiny_graph.onnx_path, tmp_path / "model_fp16.onnx")
    qdq = quantize_int8_qdq(tiny_graph.onnx_path, tmp_path / "model_int8_qdq.onnx", tiny_graph.batches(8, stop=16))
    cache = tmp_path / "timing.cache"
    here = current_device_info()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    for onnx_path, precision in [(tiny_graph.onnx_path, "fp32"), (fp16, "fp16"), (qdq, "int8")]:
        plan = build_engine(onnx_path, tmp_path / f"model_{precision}.plan", precision, batch=(1, 2, 4),
                            timing_cache=cache)
        sidecar = load_sidecar(plan)
        assert sidecar["precision"] == precision and sidecar["batch"] == {"min": 1, "opt": 2, "max": 4}
        assert sidecar["onnx_sha256"] == sha256_file(onnx_path)
        assert sidecar["flavour"] == "tensorrt" and sidecar["plan_gate"]["passed"], sidecar["plan_gate"]
        assert sum(sidecar["layers"]["gemm"].values()) > 0  # the engine inspector's layers were read
        check_plan_compatible(sidecar, here)
        engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        assert engine is not None
        names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
        assert names == {"image", "score"}
        assert tuple(engine.get_tensor_profile_shape("image", 0)[2]) == (4, 32, 32, 3)
    assert cache.is_file() and cache.stat().st_size > 0


def test_tensorrt_builds_only_for_the_gpu_it_runs_on(monkeypatch):
    """Fake: ``current_device_info`` stands for a Jetson Orin (TensorRT is not installed here)."""
    from grmp_edge.export import tensorrt_build
    from grmp_edge.runtime.plan_compat import flavour

    monkeypatch.setattr(tensorrt_build, "current_device_info", lambda: {"flavour": "tensorrt", **ORIN})
    info = tensorrt_build.build_targets(None, flavour("tensorrt"), None)
    assert info["compute_capabilities"] == ["8.7"] and info["flavour"] == "tensorrt"
    assert tensorrt_build.build_targets(None, flavour("tensorrt"), ["87"])["gpu_name"] == "Orin"
    with pytest.raises(GrmpError, match=r"builds for the GPU it runs on \(sm_87\); --sm picks the targets of --trt rtx"):
        tensorrt_build.build_targets(None, flavour("tensorrt"), ["8.6"])


def test_layers_from_tensorrt_inspector_json():
    """Fake: a hand-written IEngineInspector JSON in TensorRT 10's layout (no TensorRT 10 here)."""
    from grmp_edge.export.trt_layers import layers_from_inspector_json, summarize

    text = json.dumps({"Layers": [
        {"Name": "/mlp/c_fc/MatMul", "LayerType": "MatrixMultiply",
         "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear INT8 format"}],
         "Outputs": [{"Name": "y", "Format/Datatype": "Row major linear FP32 format"}],
         "Metadata": "[ONNX Layer: /mlp/c_fc/MatMul]"},
        {"Name": "/ln_1/LayerNormalization", "LayerType": "Normalization",
         "Inputs": [{"Name": "y", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
         "Outputs": [{"Name": "z", "Format/Datatype": "Row major linear FP32 format"}],
         "Metadata": "[ONNX Layer: /ln_1/LayerNormalization]"},
    ]})
    layers = layers_from_inspector_json(text)
    assert [(layer.is_gemm, layer.precision) for layer in layers] == [(True, "int8"), (False, "fp32")]
    summary = summarize(layers, {"/ln_1/LayerNormalization": "layernorm"})
    assert summary.gemm == {"int8": 1} and summary.layernorm == {"fp32": 1} and summary.softmax == {}
    assert summary.to_dict() == {"layers": {"int8": 1, "fp16": 0, "fp32": 1, "other": 0}, "gemm": {"int8": 1},
                                 "layernorm": {"fp32": 1}, "softmax": {}, "non_int8_gemms": []}
    with pytest.raises(GrmpError, match="detailed profiling verbosity"):
        layers_from_inspector_json(json.dumps({"Layers": ["a", "b"]}))
