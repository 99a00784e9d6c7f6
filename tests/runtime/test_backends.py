"""ONNX Runtime backend, input checks and the auto choice between backends."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from grmp_edge.errors import GrmpError
from grmp_edge.runtime import tensorrt_backend
from grmp_edge.device import physical_cores
from grmp_edge.preprocess import check_image_batch
from grmp_edge.runtime.backends import open_backend
from grmp_edge.runtime.bundle import load_bundle


import tiny_bundle as _tiny
SIZE = _tiny.SIZE
make_bundle = _tiny.make_bundle
reference_scores = _tiny.reference_scores


L4 = {"tensorrt_version": "10.7.0", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}


@pytest.fixture
def bundle(tmp_path):
    return load_bundle(make_bundle(tmp_path / "bundle"))


@pytest.fixture
def batch():
    return np.random.default_rng(0).integers(0, 256, size=(3, SIZE, SIZE, 3), dtype=np.uint8)


def _gpu_stack_present() -> bool:
    import onnxruntime

    gpu_ep = {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(onnxruntime.get_available_providers())
    return bool(gpu_ep) or tensorrt_backend.tensorrt_unavailable() is None


@pytest.mark.parametrize("precision, expected_file", [("fp32", "model_fp32.onnx"), ("int8", "model_int8_cpu.onnx")])
def test_onnxruntime_cpu_scores_match_the_graph(bundle, batch, precision, expected_file):
    with open_backend(bundle, "onnxruntime", precision, providers=["CPUExecutionProvider"], threads=1) as backend:
        scores = backend.infer(batch)
        assert backend.name == "onnxruntime-cpu"
        assert backend.file.path == expected_file
        assert backend.precision == precision
        assert backend.max_batch is None
        assert "1 threads" in backend.describe() and expected_file in backend.describe()
    assert scores.dtype == np.float32 and scores.shape == (3,)
    np.testing.assert_allclose(scores, reference_scores(batch), atol=1e-6)


def test_idle_threads_sleep_between_calls_when_asked(bundle, batch):
    with open_backend(bundle, "onnxruntime", "fp32", providers=["CPUExecutionProvider"], threads=1,
                      spin=False) as backend:
        options = backend._session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert "1 threads that sleep between calls" in backend.describe()
        np.testing.assert_allclose(backend.infer(batch), reference_scores(batch), atol=1e-6)
    with open_backend(bundle, "onnxruntime", "fp32", providers=["CPUExecutionProvider"], threads=1) as backend:
        assert "sleep" not in backend.describe()  # ONNX Runtime's default: spin-wait for the next call


def test_batch_sizes_vary_freely(bundle):
    backend = open_backend(bundle, "onnxruntime", "fp32", providers=["CPUExecutionProvider"])
    for n in (1, 5, 2):
        frames = np.full((n, SIZE, SIZE, 3), 255, np.uint8)
        np.testing.assert_allclose(backend.infer(frames), np.full(n, 1 / (1 + np.exp(-1.0))), rtol=1e-6)
    backend.close()


def test_auto_picks_cpu_here_and_logs_why(bundle, batch, caplog):
    if _gpu_stack_present():
        pytest.skip("this machine has a GPU stack; auto would not pick the CPU")
    with caplog.at_level(logging.INFO, logger="grmp_edge.runtime.backends"):
        backend = open_backend(bundle)
    assert backend.name == "onnxruntime-cpu"
    assert backend.precision == "fp32"  # auto on a CPU is full precision
    assert "the bundle has a TensorRT plan but" in backend.reason
    assert "onnxruntime has no CUDA or TensorRT provider" in backend.reason
    logged = [r.getMessage() for r in caplog.records if r.name == "grmp_edge.runtime.backends"]
    assert any("onnxruntime-cpu" in m and backend.reason in m for m in logged)
    np.testing.assert_allclose(backend.infer(batch), reference_scores(batch), atol=1e-6)


def test_auto_without_a_plan_says_so(tmp_path):
    bundle = load_bundle(make_bundle(tmp_path / "b", files=[("model_fp32.onnx", "fp32", "onnx", ["onnxruntime"])]))
    assert "no TensorRT plan at fp32 precision" in open_backend(bundle, "auto", "fp32").reason
    assert "the bundle has no TensorRT plan;" in open_backend(bundle, "auto").reason


def _pretend_gpu(monkeypatch, facts):
    monkeypatch.setattr(tensorrt_backend, "tensorrt_unavailable", lambda flavour_name="tensorrt": None)
    monkeypatch.setattr(tensorrt_backend, "device_facts", lambda flavour_name="tensorrt": dict(facts))


def test_plan_for_another_device_is_refused_with_the_rebuild_command(bundle, monkeypatch):
    _pretend_gpu(monkeypatch, L4)
    with pytest.raises(GrmpError) as info:
        open_backend(bundle, "tensorrt")
    onnx = (bundle.folder / "model_fp16.onnx").resolve()
    assert str(info.value) == (
        "engine model_fp16.plan was built for Orin (sm_87) with TensorRT 10.3.0 (JetPack 6.1); "
        "this is NVIDIA L4 (sm_89) with TensorRT 10.7.0: the TensorRT release differs and the compute "
        f"capability differs; rebuild it here: grmp-edge export --engine --onnx {onnx}"
    )


def test_auto_falls_back_to_onnxruntime_when_the_plan_is_refused(bundle, monkeypatch, caplog):
    _pretend_gpu(monkeypatch, L4)
    with caplog.at_level(logging.WARNING):
        backend = open_backend(bundle, "auto")
    assert backend.name.startswith("onnxruntime")
    assert "TensorRT refused the plan" in backend.reason and "rebuild it here" in backend.reason
    assert any("TensorRT plan refused" in r.getMessage() for r in caplog.records)


def test_tensorrt_backend_without_tensorrt_is_one_line(bundle):
    if tensorrt_backend.tensorrt_unavailable() is None:
        pytest.skip("tensorrt and a GPU are present")
    with pytest.raises(GrmpError) as info:
        open_backend(bundle, "tensorrt")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, SIZE + 1, SIZE, 3), np.uint8), r"shape \(2, 9, 8, 3\)"),
    (np.zeros((2, SIZE, SIZE, 3), np.float32), "dtype float32"),
    (np.zeros((SIZE, SIZE, 3), np.uint8), r"shape \(8, 8, 3\)"),
    (np.zeros((0, SIZE, SIZE, 3), np.uint8), r"shape \(0, 8, 8, 3\)"),
    ([[1, 2, 3]], "dtype list"),
])
def test_wrong_input_is_one_line_error(bundle, bad, match):
    backend = open_backend(bundle, "onnxruntime", "fp32")
    with pytest.raises(GrmpError, match=match) as info:
        backend.infer(bad)
    assert "\n" not in str(info.value)
    assert "(N, 8, 8, 3)" in str(info.value)


def test_check_batch_bounds_and_contiguity():
    strided = np.zeros((4, SIZE, SIZE * 2, 3), np.uint8)[:, :, ::2]
    assert check_image_batch(strided, SIZE).flags.c_contiguous
    with pytest.raises(GrmpError, match="exceeds this engine's maximum batch 2"):
        check_image_batch(np.zeros((3, SIZE, SIZE, 3), np.uint8), SIZE, max_batch=2)


def test_graph_that_is_not_a_bundle_graph_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    folder = make_bundle(tmp_path / "b", files=[("model_fp32.onnx", "fp32", "onnx", ["onnxruntime"])])
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["pixels"], ["score"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "model_fp32.onnx")
    # re-hash so that the bundle is consistent and only the graph is wrong
    make_manifest_match(folder)
    with pytest.raises(GrmpError, match="not a grmp-edge graph: expected input image uint8"):
        open_backend(load_bundle(folder), "onnxruntime", "fp32")


def make_manifest_match(folder):
    from grmp_edge.artifacts import sha256_file
    from grmp_edge.spec import BundleManifest

    manifest = BundleManifest.load(folder / "manifest.json")
    for f in manifest.files:
        f.sha256 = sha256_file(folder / f.path)
    manifest.save(folder / "manifest.json")


def test_unknown_names_are_refused(bundle):
    with pytest.raises(GrmpError, match="unknown backend"):
        open_backend(bundle, "openvino")
    with pytest.raises(GrmpError, match="unknown precision"):
        open_backend(bundle, "auto", "bf16")
    with pytest.raises(GrmpError, match="provider.*NoSuchExecutionProvider.*not available"):
        open_backend(bundle, "onnxruntime", providers=["NoSuchExecutionProvider"])


def test_cpu_backend_refuses_gpu_only_precision(bundle):
    with pytest.raises(GrmpError, match="no onnx file at fp16 for onnxruntime-cpu"):
        open_backend(bundle, "onnxruntime", "fp16", providers=["CPUExecutionProvider"])


def test_physical_cores_is_sane():
    import os

    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


BLOCKED_IMPORTS = textwrap.dedent("""
    import sys

    BLOCKED = {"torch", "open_clip", "onnx", "torchvision"}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())

    import numpy as np
    import grmp_edge.runtime.backends
    import grmp_edge.runtime.bundle
    import grmp_edge.runtime.plan_compat
    import grmp_edge.runtime.tensorrt_backend
    from grmp_edge.runtime.backends import open_backend
    from grmp_edge.runtime.bundle import load_bundle

    backend = open_backend(load_bundle(sys.argv[1]), "auto", "int8")
    scores = backend.infer(np.full((2, 8, 8, 3), 255, np.uint8))
    print(backend.name, backend.file.path, [round(float(s), 4) for s in scores])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
""")


def test_runtime_imports_and_scores_with_torch_and_onnx_blocked(tmp_path):
    folder = make_bundle(tmp_path / "b")
    result = subprocess.run([sys.executable, "-c", BLOCKED_IMPORTS, str(folder)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "model_int8_cpu.onnx [0.7311, 0.7311]" in result.stdout


def test_a_triton_url_names_a_backend_and_a_malformed_one_is_refused(bundle):
    with pytest.raises(GrmpError, match="must look like triton://HOST:PORT/MODEL"):
        open_backend(bundle, "triton://server-without-a-model")
    with pytest.raises(GrmpError, match="or triton://HOST:PORT/MODEL"):
        open_backend(bundle, "tritonserver")

