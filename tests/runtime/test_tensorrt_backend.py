"""Native TensorRT backend.

Here (no GPU, no tensorrt) three layers are tested: the pure helpers (dtype and shape mapping,
buffer growth); the backend's own logic (engine inspection, shape binding, buffer growth and
rebinding, output trimming, refusals, cleanup) against a stand-in ``tensorrt`` module and an
in-memory stand-in for CUDA that follow the TensorRT 10 name-based API; and, where a GPU is
present, the real CUDA memory layer and a real engine built from the tiny graph (marked
``tensorrt``; they skip here with the reason).
"""
from __future__ import annotations

import sys
import types
from contextlib import contextmanager

import numpy as np
import pytest

from grmp_edge.errors import GrmpError
from grmp_edge.runtime import tensorrt_backend
from grmp_edge.runtime.backends import open_backend
from grmp_edge.runtime.bundle import load_bundle
from grmp_edge.runtime.tensorrt_backend import (
    HostDeviceBuffer,
    batch_limits,
    grown_capacity,
    numpy_dtype,
    per_sample_count,
)


import tiny_bundle as _tiny
ORIN_SIDECAR = _tiny.ORIN_SIDECAR
SIZE = _tiny.SIZE
make_bundle = _tiny.make_bundle
reference_scores = _tiny.reference_scores
tiny_onnx = _tiny.tiny_onnx


ORIN_FACTS = {k: ORIN_SIDECAR[k] for k in ("tensorrt_version", "gpu_name", "compute_capability")}


# ---------------------------------------------------------------- pure helpers


class DataType:
    """Stands for a tensorrt.DataType member (pybind enums expose ``.name``)."""

    def __init__(self, name):
        self.name = name


@pytest.mark.parametrize("trt_dtype, expected", [
    (DataType("FLOAT"), np.float32), (DataType("HALF"), np.float16), (DataType("UINT8"), np.uint8),
    (DataType("INT8"), np.int8), (DataType("INT32"), np.int32), (DataType("INT64"), np.int64),
    (DataType("BOOL"), np.bool_), ("DataType.HALF", np.float16),
])
def test_numpy_dtype(trt_dtype, expected):
    assert numpy_dtype(trt_dtype) == np.dtype(expected)


def test_numpy_dtype_refuses_types_numpy_lacks():
    with pytest.raises(GrmpError, match="BF16 has no numpy equivalent"):
        numpy_dtype(DataType("BF16"))


def test_batch_limits():
    profile = ((1, 8, 8, 3), (2, 8, 8, 3), (16, 8, 8, 3))
    assert batch_limits((-1, 8, 8, 3), profile) == (1, 2, 16)
    assert batch_limits((4, 8, 8, 3), None) == (4, 4, 4)
    with pytest.raises(GrmpError, match="no optimisation profile"):
        batch_limits((-1, 8, 8, 3), None)


def test_per_sample_count():
    assert per_sample_count((-1,), "score") == 1
    assert per_sample_count((-1, 512), "embedding") == 512
    assert per_sample_count((-1, 8, 8, 3), "image") == 192
    with pytest.raises(GrmpError, match="only the batch axis may be dynamic"):
        per_sample_count((-1, -1), "boxes")


def test_grown_capacity():
    assert grown_capacity(4, 3, 16) == 4
    assert grown_capacity(0, 1, 16) == 1
    assert grown_capacity(2, 3, 16) == 4
    assert grown_capacity(4, 9, 12) == 12
    with pytest.raises(GrmpError, match="exceeds this engine's maximum batch 12"):
        grown_capacity(4, 13, 12)


# ---------------------------------------------------------------- stand-ins for CUDA and tensorrt


class FakeMemory:
    """CUDA memory kept in numpy: 'device' allocations live in ``self.device`` by address."""

    name = "fake-cuda"

    def __init__(self):
        self.device: dict[int, np.ndarray] = {}
        self.stream_handle = 0xCAFE
        self.allocations = self.releases = self.syncs = 0
        self.closed = False
        self._next = 0x1000

    @contextmanager
    def activate(self):
        yield

    def allocate(self, count, dtype):
        host = np.zeros(count, dtype)
        ptr, self._next = self._next, self._next + 0x1000 + host.nbytes
        self.device[ptr] = np.zeros(host.nbytes, np.uint8)
        self.allocations += 1

        def release():
            del self.device[ptr]
            self.releases += 1

        return HostDeviceBuffer(host=host, device_ptr=ptr, release=release)

    def to_device(self, buf, nbytes):
        self.device[buf.device_ptr][:nbytes] = buf.host.view(np.uint8)[:nbytes]

    def to_host(self, buf, nbytes):
        buf.host.view(np.uint8)[:nbytes] = self.device[buf.device_ptr][:nbytes]

    def new_event(self):
        return object()

    def record(self, event):
        pass

    def elapsed_ms(self, start, end):
        return 0.25

    def synchronize(self):
        self.syncs += 1

    def close(self):
        self.closed = True


def fake_tensorrt(memory: FakeMemory, input_dtype="UINT8", max_batch=4):
    """A ``tensorrt`` module whose engine runs the tiny graph on ``memory``'s device arrays."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0.30"
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self):
            pass

    tensors = {
        "image": ("INPUT", DataType(input_dtype), (-1, SIZE, SIZE, 3)),
        "score": ("OUTPUT", DataType("FLOAT"), (-1,)),
    }

    class Context:
        def __init__(self):
            self.addresses, self.shape = {}, None

        def set_input_shape(self, name, shape):
            assert name == "image"
            self.shape = tuple(shape)
            return 1 <= shape[0] <= max_batch

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream):
            assert stream == memory.stream_handle
            n = self.shape[0]
            pixels = memory.device[self.addresses["image"]][: n * SIZE * SIZE * 3]
            out = memory.device[self.addresses["score"]].view(np.float32)
            out[:n] = reference_scores(pixels.reshape(n, SIZE, SIZE, 3))  # IndexError if undersized
            return True

    class Engine:
        num_io_tensors = len(tensors)

        def get_tensor_name(self, i):
            return list(tensors)[i]

        def get_tensor_mode(self, name):
            return tensors[name][0]

        def get_tensor_dtype(self, name):
            return tensors[name][1]

        def get_tensor_shape(self, name):
            return tensors[name][2]

        def get_tensor_profile_shape(self, name, profile_index):
            assert profile_index == 0
            return [(1, SIZE, SIZE, 3), (2, SIZE, SIZE, 3), (max_batch, SIZE, SIZE, 3)]

        def create_execution_context(self):
            self.context = Context()
            return self.context

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            if data != b"good engine":
                self.logger.log(ILogger.Severity.ERROR, "The engine plan file is not compatible with this version")
                return None
            trt.engine = Engine()
            return trt.engine

    trt.ILogger, trt.Runtime = ILogger, Runtime
    return trt


@pytest.fixture
def fake_gpu(monkeypatch):
    memory = FakeMemory()
    trt = fake_tensorrt(memory)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tensorrt_backend, "tensorrt_unavailable", lambda flavour_name="tensorrt": None)
    monkeypatch.setattr(tensorrt_backend, "device_facts", lambda flavour_name="tensorrt": dict(ORIN_FACTS))
    monkeypatch.setattr(tensorrt_backend, "open_cuda_memory", lambda: memory)
    return memory, trt


def test_engine_scores_and_grows_its_buffers(tmp_path, fake_gpu):
    memory, trt = fake_gpu
    bundle = load_bundle(make_bundle(tmp_path / "b", plan_bytes=b"good engine"))
    backend = open_backend(bundle)  # auto
    assert backend.name == "tensorrt" and backend.precision == "fp16"
    assert backend.reason.startswith("auto: tensorrt")
    assert backend.max_batch == 4
    assert backend.describe() == "tensorrt fp16 model_fp16.plan (TensorRT 10.3.0, Orin sm_87, batch 1..4, fake-cuda)"
    assert memory.allocations == 2  # image + score, sized for the profile's opt batch

    rng = np.random.default_rng(1)
    one = rng.integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    np.testing.assert_allclose(backend.infer(one), reference_scores(one), atol=1e-7)
    assert backend.last_gpu_ms == 0.25
    assert memory.allocations == 2

    before = dict(trt.engine.context.addresses)
    three = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    scores = backend.infer(three)
    assert scores.dtype == np.float32 and scores.shape == (3,)
    np.testing.assert_allclose(scores, reference_scores(three), atol=1e-7)
    assert (memory.allocations, memory.releases) == (4, 2)  # grown to 4 once
    assert trt.engine.context.addresses != before  # new buffers were bound
    assert trt.engine.context.shape == (3, SIZE, SIZE, 3)

    np.testing.assert_allclose(backend.infer(three[:2]), reference_scores(three[:2]), atol=1e-7)
    assert memory.allocations == 4
    with pytest.raises(GrmpError, match="exceeds this engine's maximum batch 4"):
        backend.infer(np.zeros((5, SIZE, SIZE, 3), np.uint8))
    with pytest.raises(GrmpError, match="uint8 RGB batch"):
        backend.infer(np.zeros((1, SIZE, SIZE, 3), np.float32))

    backend.close()
    assert memory.releases == memory.allocations and memory.closed and not memory.device
    backend.close()


def test_unloadable_plan_is_refused_with_tensorrts_reason_and_frees_memory(tmp_path, fake_gpu):
    memory, _ = fake_gpu
    bundle = load_bundle(make_bundle(tmp_path / "b", plan_bytes=b"stale engine"))
    with pytest.raises(GrmpError) as info:
        open_backend(bundle, "tensorrt")
    message = str(info.value)
    assert message.startswith("TensorRT could not load model_fp16.plan (The engine plan file is not compatible")
    assert "rebuild it here: grmp-edge export --engine --onnx " in message
    assert memory.closed


def test_incompatible_sidecar_is_refused_before_deserialising(tmp_path, fake_gpu, monkeypatch):
    memory, trt = fake_gpu
    monkeypatch.setattr(tensorrt_backend, "device_facts", lambda flavour_name="tensorrt": dict(ORIN_FACTS, compute_capability="8.9"))
    bundle = load_bundle(make_bundle(tmp_path / "b", plan_bytes=b"good engine"))
    with pytest.raises(GrmpError, match=r"built for Orin \(sm_87\).*this is Orin \(sm_89\)"):
        open_backend(bundle, "tensorrt")
    assert not hasattr(trt, "engine") and memory.allocations == 0


def test_engine_that_is_not_a_bundle_engine_is_refused(tmp_path, monkeypatch):
    memory = FakeMemory()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(memory, input_dtype="FLOAT"))
    monkeypatch.setattr(tensorrt_backend, "device_facts", lambda flavour_name="tensorrt": dict(ORIN_FACTS))
    monkeypatch.setattr(tensorrt_backend, "open_cuda_memory", lambda: memory)
    bundle = load_bundle(make_bundle(tmp_path / "b", plan_bytes=b"good engine"))
    with pytest.raises(GrmpError, match="not a grmp-edge engine: expected input image uint8"):
        open_backend(bundle, "tensorrt")
    assert memory.closed


def test_tampered_plan_is_refused_before_anything_else(tmp_path, fake_gpu):
    bundle = load_bundle(make_bundle(tmp_path / "b", plan_bytes=b"good engine"))
    (bundle.folder / "model_fp16.plan").write_bytes(b"good engine, patched")
    with pytest.raises(GrmpError, match="model_fp16.plan does not match its sha256"):
        open_backend(bundle, "tensorrt")


# ---------------------------------------------------------------- real GPU


def _gpu_or_skip():
    facts, why = tensorrt_backend.gpu_facts()
    if facts is None:
        pytest.skip(f"needs a CUDA GPU: {why}")
    return facts


def test_cuda_memory_round_trip_and_events():
    _gpu_or_skip()
    memory = tensorrt_backend.open_cuda_memory()
    try:
        with memory.activate():
            buffers = [memory.allocate(1000, np.float32), memory.allocate(4096, np.uint8)]
            start, end = memory.new_event(), memory.new_event()
            expected = []
            for i, buf in enumerate(buffers):
                buf.host[:] = np.arange(buf.host.size) % 251 + i
                expected.append(buf.host.copy())
                memory.record(start)
                memory.to_device(buf, buf.host.nbytes)
                memory.record(end)
            for buf in buffers:
                buf.host[:] = 0
                memory.to_host(buf, buf.host.nbytes)
            memory.synchronize()
            for buf, want in zip(buffers, expected):
                np.testing.assert_array_equal(buf.host, want)
            assert memory.elapsed_ms(start, end) >= 0.0
            for buf in buffers:
                buf.release()
    finally:
        memory.close()


def _build_plan(trt, onnx_bytes: bytes, max_batch: int) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_bytes), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, SIZE, SIZE, 3), (2, SIZE, SIZE, 3), (max_batch, SIZE, SIZE, 3))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "TensorRT failed to build the tiny graph"
    return bytes(plan)


@pytest.mark.tensorrt
def test_real_engine_matches_the_graph(tmp_path):
    why = tensorrt_backend.tensorrt_unavailable()
    if why:
        pytest.skip(f"needs tensorrt and an NVIDIA GPU: {why}")
    import tensorrt as trt

    facts = tensorrt_backend.device_facts()
    plan = _build_plan(trt, tiny_onnx(), max_batch=4)
    files = [("model_fp32.onnx", "fp32", "onnx", ["onnxruntime", "tensorrt"]),
             ("model_fp32.plan", "fp32", "plan", ["tensorrt"])]
    sidecar = dict(facts, precision="fp32", batch={"min": 1, "opt": 2, "max": 4})
    bundle = load_bundle(make_bundle(tmp_path / "b", files=files, sidecar=sidecar, plan_bytes=plan))
    backend = open_backend(bundle, "auto", "fp32")
    try:
        assert backend.name == "tensorrt" and backend.max_batch == 4
        rng = np.random.default_rng(2)
        for n in (1, 3, 4, 2):
            batch = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
            np.testing.assert_allclose(backend.infer(batch), reference_scores(batch), atol=1e-5)
            assert backend.last_gpu_ms > 0.0
        with pytest.raises(GrmpError, match="maximum batch 4"):
            backend.infer(np.zeros((5, SIZE, SIZE, 3), np.uint8))
    finally:
        backend.close()

    other = dict(sidecar, compute_capability="1.0")
    stale = load_bundle(make_bundle(tmp_path / "stale", files=files, sidecar=other, plan_bytes=plan))
    with pytest.raises(GrmpError, match="rebuild it here: grmp-edge export --engine --onnx"):
        open_backend(stale, "tensorrt", "fp32")


# ---------------------------------------------------------------- TensorRT-RTX (fakes + the real no-GPU path)

RTX_FILES = (("model_fp32.onnx", "fp32", "onnx", ["onnxruntime", "tensorrt"]),
             ("model_fp16_rtx.plan", "fp16", "plan", ["tensorrt-rtx"]))
RTX_SIDECAR = {"flavour": "tensorrt-rtx", "tensorrt_version": "1.7.1.116", "compute_capabilities": ["8.6", "8.9", "12.0"],
               "gpu_name": None, "compute_capability": None, "precision": "fp16", "batch": {"min": 1, "opt": 1, "max": 8}}
RTX_4090 = {"gpu_name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}


def fake_tensorrt_rtx(memory: FakeMemory):
    """A stand-in ``tensorrt_rtx_bindings``: the fake engine above plus TensorRT-RTX's runtime config and
    runtime cache, whose serialised form grows by b"+kernels" each time kernels are compiled."""
    trt = fake_tensorrt(memory)
    trt.__name__, trt.__version__ = "tensorrt_rtx_bindings", "1.7.1.116"
    trt.loaded_caches = []

    class RuntimeCache:
        def __init__(self):
            self.data = b""

        def deserialize(self, data):
            self.data = bytes(data)
            trt.loaded_caches.append(self.data)
            return True

        def serialize(self):
            return self.data + b"+kernels"

    class RuntimeConfig:
        def create_runtime_cache(self):
            return RuntimeCache()

        def set_runtime_cache(self, cache):
            self.cache = cache
            return True

    deserialize = trt.Runtime.deserialize_cuda_engine

    def deserialize_with_config(self, data):
        engine = deserialize(self, data)
        if engine is not None:
            plain = engine.create_execution_context
            engine.create_runtime_config = RuntimeConfig

            def create_execution_context(config):
                assert isinstance(config.cache, RuntimeCache)  # the cache is set before the context exists
                return plain()

            engine.create_execution_context = create_execution_context
        return engine

    trt.Runtime.deserialize_cuda_engine = deserialize_with_config
    return trt


@pytest.fixture
def fake_rtx_gpu(monkeypatch, tmp_path):
    """A fake RTX 4090 with the fake TensorRT-RTX module; the project's cache folder under tmp_path."""
    memory = FakeMemory()
    trt = fake_tensorrt_rtx(memory)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx_bindings", trt)
    monkeypatch.setattr(tensorrt_backend, "gpu_facts", lambda device=0: (dict(RTX_4090), ""))
    monkeypatch.setattr(tensorrt_backend, "open_cuda_memory", lambda: memory)
    monkeypatch.setenv("GRMP_EDGE_CACHE", str(tmp_path / "cache"))
    return memory, trt


def test_auto_picks_the_rtx_plan_and_keeps_the_compiled_kernels(tmp_path, fake_rtx_gpu):
    """Fakes: the TensorRT-RTX module and CUDA memory are stand-ins; the choice, the sidecar check and
    the runtime-cache round trip are the backend's own code."""
    memory, trt = fake_rtx_gpu
    bundle = load_bundle(make_bundle(tmp_path / "b", files=RTX_FILES, sidecar=RTX_SIDECAR, plan_bytes=b"good engine"))
    with open_backend(bundle, "auto") as backend:
        assert backend.name == "tensorrt-rtx" and backend.reason.startswith("auto: tensorrt-rtx")
        batch = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
        np.testing.assert_allclose(backend.infer(batch), reference_scores(batch), rtol=1e-6)
        assert "TensorRT-RTX 1.7.1.116" in backend.describe()
    caches = list((tmp_path / "cache" / "tensorrt-rtx").iterdir())
    assert len(caches) == 1 and caches[0].name.endswith("-sm_89.cache") and caches[0].read_bytes() == b"+kernels"
    assert trt.loaded_caches == []  # the first load had nothing to reuse
    open_backend(bundle, "tensorrt-rtx").close()
    assert trt.loaded_caches == [b"+kernels"] and caches[0].read_bytes() == b"+kernels+kernels"


def test_rtx_plan_for_another_gpu_names_the_rtx_rebuild_command(tmp_path, fake_rtx_gpu, monkeypatch):
    """Fakes: a Turing GPU (sm_75) stands in for a GPU the plan was not built for."""
    monkeypatch.setattr(tensorrt_backend, "gpu_facts", lambda device=0: ({"gpu_name": "RTX 2080", "compute_capability": "7.5"}, ""))
    bundle = load_bundle(make_bundle(tmp_path / "b", files=RTX_FILES, sidecar=RTX_SIDECAR, plan_bytes=b"good engine"))
    with pytest.raises(GrmpError) as info:
        open_backend(bundle, "tensorrt-rtx")
    message = str(info.value)
    assert message.startswith("engine model_fp16_rtx.plan was built for sm_86, sm_89, sm_120 with TensorRT-RTX 1.7.1.116")
    assert "this compute capability is not among the plan's; rebuild it here: grmp-edge export --engine --trt rtx --sm 75 " in message
    # The other flavour's plan is refused by flavour, not by version.
    monkeypatch.setattr(tensorrt_backend, "gpu_facts", lambda device=0: (dict(RTX_4090), ""))
    bundle = load_bundle(make_bundle(tmp_path / "c", files=RTX_FILES, sidecar={**RTX_SIDECAR, "flavour": "tensorrt"},
                                     plan_bytes=b"good engine"))
    with pytest.raises(GrmpError, match="the plan is for TensorRT, this runtime is TensorRT-RTX"):
        open_backend(bundle, "tensorrt-rtx")


def test_rtx_backend_on_a_machine_without_a_gpu_says_so_in_one_line(tmp_path):
    """Real: the installed TensorRT-RTX (skipped where it is absent or a GPU is present)."""
    pytest.importorskip("tensorrt_rtx_bindings")
    facts, _ = tensorrt_backend.gpu_facts()
    if facts is not None:
        pytest.skip("a GPU is present")
    bundle = load_bundle(make_bundle(tmp_path / "b", files=RTX_FILES, sidecar=RTX_SIDECAR))
    with pytest.raises(GrmpError) as info:
        open_backend(bundle, "tensorrt-rtx")
    assert "TensorRT-RTX backend needs an NVIDIA GPU and this machine has none" in str(info.value)
    assert "\n" not in str(info.value)
    backend = open_backend(bundle, "auto")
    assert backend.name == "onnxruntime-cpu" and "the bundle has a TensorRT-RTX plan but" in backend.reason
