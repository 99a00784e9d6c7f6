"""Native TensorRT backend: a bundle's ``.plan`` run through the TensorRT 10 name-based API.

Written against the TensorRT 10 Python API and nothing it deprecates, so that it also runs on
TensorRT 11: ``Runtime.deserialize_cuda_engine``, ``num_io_tensors`` / ``get_tensor_name`` /
``get_tensor_mode`` / ``get_tensor_dtype`` / ``get_tensor_shape`` / ``get_tensor_profile_shape``,
and on the execution context ``set_input_shape``, ``set_tensor_address`` and
``execute_async_v3(stream)`` (no bindings lists, no ``execute_v2``).

Memory goes through cuda-python (``cuda.bindings.runtime``; ``cuda.cudart`` before cuda-python
12.6) or, when that is what is installed, pycuda: pinned host buffers, device buffers, one CUDA
stream, asynchronous copies in and out, one synchronisation per batch. Buffers are sized for the
largest batch seen so far (powers of two, up to the plan's profile maximum) and reallocated only
when a larger one arrives. CUDA events around ``execute_async_v3`` give the GPU time of the last
batch (``last_gpu_ms``) for the benchmark report.

The same class serves both TensorRT flavours (:data:`~grmp_edge.runtime.plan_compat.FLAVOURS`):
``tensorrt`` (JetPack / data-centre TensorRT) and ``tensorrt-rtx`` (TensorRT for RTX, whose plans
are built ahead of time and whose kernels are compiled just in time on the first load; the compiled
kernels are kept in a runtime cache under :func:`grmp_edge.artifacts.cache_root`, so only the first
start on a GPU pays for them). TensorRT-RTX's lean and dispatch runtimes are never imported: they
crash on machines without a GPU.

The plan's sidecar is compared with this device (:mod:`~grmp_edge.runtime.plan_compat`) before
the plan is deserialised. tensorrt, tensorrt_rtx_bindings, cuda-python and pycuda are imported lazily.
"""
from __future__ import annotations

import ctypes
import importlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from grmp_edge.artifacts import atomic_write_bytes, cache_root
from grmp_edge.device import gpu_facts, import_cudart
from grmp_edge.errors import GrmpError, require
from grmp_edge.preprocess import check_image_batch
from grmp_edge.runtime.backend import Backend
from grmp_edge.runtime.bundle import LoadedBundle
from grmp_edge.runtime.plan_compat import check_plan_compatible, flavour, rebuild_command, sm_name
from grmp_edge.spec import BundleFile, INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

# TensorRT DataType member name -> numpy dtype (BF16 / FP8 / INT4 / FP4 have no numpy type).
NUMPY_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}


def numpy_dtype(trt_dtype: Any) -> np.dtype:
    """The numpy dtype of a ``tensorrt.DataType`` (or its name); GrmpError for types numpy lacks."""
    name = getattr(trt_dtype, "name", None) or str(trt_dtype).rsplit(".", 1)[-1]
    if name not in NUMPY_DTYPES:
        raise GrmpError(f"TensorRT tensor type {name} has no numpy equivalent; the plan's inputs and "
                        "outputs must be FLOAT, HALF, INT8, UINT8, INT32, INT64 or BOOL")
    return np.dtype(NUMPY_DTYPES[name])


def batch_limits(engine_shape: tuple[int, ...], profile: tuple[tuple[int, ...], ...] | None) -> tuple[int, int, int]:
    """(min, opt, max) batch of an input: its profile's first dimension when the batch axis is
    dynamic (-1), else the fixed batch."""
    if engine_shape[0] >= 0:
        return engine_shape[0], engine_shape[0], engine_shape[0]
    if not profile:
        raise GrmpError("the plan's batch axis is dynamic but it has no optimisation profile")
    low, opt, high = (int(shape[0]) for shape in profile)
    return low, opt, high


def per_sample_count(engine_shape: tuple[int, ...], name: str) -> int:
    """Elements per batch item of a tensor whose first axis is the batch; GrmpError if another
    axis is dynamic (data-dependent shapes are not served)."""
    rest = engine_shape[1:]
    if any(d < 0 for d in rest):
        raise GrmpError(f"plan tensor {name} has dynamic non-batch dimensions {engine_shape}; "
                        "only the batch axis may be dynamic")
    return int(np.prod(rest, dtype=np.int64)) if rest else 1


def grown_capacity(current: int, needed: int, maximum: int) -> int:
    """Buffer capacity (in batch items) for ``needed``: unchanged when it fits, else the next power
    of two, capped at the profile's maximum."""
    if needed <= current:
        return current
    if needed > maximum:
        raise GrmpError(f"batch of {needed} exceeds this engine's maximum batch {maximum}")
    return min(maximum, 1 << (needed - 1).bit_length())


@dataclass
class TensorSpec:
    """One IO tensor of an engine, as the engine reports it."""

    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]
    per_sample: int


@dataclass
class HostDeviceBuffer:
    """A tensor's pinned host array and device allocation for ``capacity`` batch items."""

    host: np.ndarray
    device_ptr: int
    release: Callable[[], None]


# ---------------------------------------------------------------- CUDA memory: cuda-python / pycuda


class CudaPythonMemory:
    """Pinned/device buffers, one stream and timing events through cuda-python's runtime API."""

    name = "cuda-python"

    def __init__(self, cudart, device: int = 0):
        self._rt = cudart
        self._device = device
        self._call("cudaSetDevice", device)
        self._stream = self._call("cudaStreamCreate")
        self.stream_handle = int(self._stream)
        self._events: list[Any] = []

    def _call(self, fn: str, *args):
        result = getattr(self._rt, fn)(*args)
        err, rest = result[0], result[1:]
        if err != self._rt.cudaError_t.cudaSuccess:
            raise GrmpError(f"CUDA {fn} failed: {getattr(err, 'name', err)}")
        return rest[0] if len(rest) == 1 else None

    @contextmanager
    def activate(self) -> Iterator[None]:
        """Make this device current in the calling thread (the pipeline infers from its own thread)."""
        self._call("cudaSetDevice", self._device)
        yield

    def allocate(self, count: int, dtype: np.dtype) -> HostDeviceBuffer:
        nbytes = count * np.dtype(dtype).itemsize
        host_ptr = self._call("cudaMallocHost", nbytes)
        device_ptr = self._call("cudaMalloc", nbytes)
        raw = (ctypes.c_uint8 * nbytes).from_address(host_ptr)
        host = np.frombuffer(raw, dtype=np.uint8).view(dtype)

        def release() -> None:
            self._call("cudaFree", device_ptr)
            self._call("cudaFreeHost", host_ptr)

        return HostDeviceBuffer(host=host, device_ptr=int(device_ptr), release=release)

    def to_device(self, buf: HostDeviceBuffer, nbytes: int) -> None:
        self._call("cudaMemcpyAsync", buf.device_ptr, buf.host.ctypes.data, nbytes,
                   self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream)

    def to_host(self, buf: HostDeviceBuffer, nbytes: int) -> None:
        self._call("cudaMemcpyAsync", buf.host.ctypes.data, buf.device_ptr, nbytes,
                   self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream)

    def new_event(self):
        event = self._call("cudaEventCreate")
        self._events.append(event)
        return event

    def record(self, event) -> None:
        self._call("cudaEventRecord", event, self._stream)

    def elapsed_ms(self, start, end) -> float:
        return float(self._call("cudaEventElapsedTime", start, end))

    def synchronize(self) -> None:
        self._call("cudaStreamSynchronize", self._stream)

    def close(self) -> None:
        for event in self._events:
            self._call("cudaEventDestroy", event)
        self._events = []
        if self._stream is not None:
            self._call("cudaStreamDestroy", self._stream)
            self._stream = None


class PyCudaMemory:
    """The same through pycuda, on the device's primary context (pushed around each use, since
    pycuda contexts are per thread)."""

    name = "pycuda"

    def __init__(self, driver, device: int = 0):
        driver.init()
        self._drv = driver
        self._context = driver.Device(device).retain_primary_context()
        with self.activate():
            self._stream = driver.Stream()
        self.stream_handle = int(self._stream.handle)

    @contextmanager
    def activate(self) -> Iterator[None]:
        self._context.push()
        try:
            yield
        finally:
            self._drv.Context.pop()

    def allocate(self, count: int, dtype: np.dtype) -> HostDeviceBuffer:
        host = self._drv.pagelocked_empty(count, dtype)
        device = self._drv.mem_alloc(host.nbytes)

        def release() -> None:
            device.free()
            host.base.free()

        return HostDeviceBuffer(host=host, device_ptr=int(device), release=release)

    def to_device(self, buf: HostDeviceBuffer, nbytes: int) -> None:
        self._drv.memcpy_htod_async(buf.device_ptr, buf.host.view(np.uint8)[:nbytes], self._stream)

    def to_host(self, buf: HostDeviceBuffer, nbytes: int) -> None:
        self._drv.memcpy_dtoh_async(buf.host.view(np.uint8)[:nbytes], buf.device_ptr, self._stream)

    def new_event(self):
        return self._drv.Event()

    def record(self, event) -> None:
        event.record(self._stream)

    def elapsed_ms(self, start, end) -> float:
        return float(end.time_since(start))

    def synchronize(self) -> None:
        self._stream.synchronize()

    def close(self) -> None:
        self._stream = None
        self._context.detach()


def open_cuda_memory(device: int = 0):
    """CUDA memory through cuda-python, else pycuda; GrmpError naming the extra if neither imports."""
    cudart = import_cudart()
    if cudart is not None:
        return CudaPythonMemory(cudart, device)
    try:
        driver = importlib.import_module("pycuda.driver")
    except ImportError:
        raise GrmpError("the TensorRT backend needs cuda-python (or pycuda); install it with: "
                        "pip install 'grmp-edge[tensorrt]'") from None
    return PyCudaMemory(driver, device)


def import_tensorrt(flavour_name: str = "tensorrt"):
    """The Python module of a TensorRT flavour; GrmpError naming its extra when it is missing."""
    f = flavour(flavour_name)
    return require(f.module, f.extra)


def tensorrt_unavailable(flavour_name: str = "tensorrt") -> str | None:
    """Why the native backend of a TensorRT flavour cannot run here (None when its module imports
    and a GPU is visible); never raises."""
    f = flavour(flavour_name)
    try:
        importlib.import_module(f.module)
    except Exception as exc:  # a broken install raises OSError for missing libnvinfer
        return f"{f.module} does not import ({type(exc).__name__}: {exc})".splitlines()[0]
    facts, why = gpu_facts()
    return None if facts else why


def device_facts(flavour_name: str = "tensorrt") -> dict[str, str]:
    """This device as a plan sidecar records it: ``flavour``, ``tensorrt_version``, ``gpu_name``,
    ``compute_capability``; GrmpError when the flavour's module or a GPU is missing."""
    f = flavour(flavour_name)
    trt = import_tensorrt(f.name)
    facts, why = gpu_facts()
    if facts is None:
        raise GrmpError(f"the {f.label} backend needs an NVIDIA GPU and this machine has none: {why}")
    return {"flavour": f.name, "tensorrt_version": trt.__version__, **facts}


# ---------------------------------------------------------------- the backend


def make_logger(trt):
    """A TensorRT logger that forwards to Python logging, keeps error lines for our messages and
    the builder's ``Layers:`` report (TensorRT-RTX's engine layer information) in ``layer_messages``."""

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.layer_messages: list[str] = []

        def log(self, severity, msg):
            sev = trt.ILogger.Severity
            if msg.startswith("Layers:"):
                self.layer_messages.append(msg)
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                # Kept for the one-line GrmpError that reports the failure; printed only when debugging,
                # so a refused graph or plan is one error line (TensorRT-RTX also logs CUDA errors of
                # calls that are no-ops on a machine without a GPU).
                self.errors.append(msg)
                log.debug("TensorRT error: %s", msg)
            elif severity == sev.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def runtime_cache_path(file: BundleFile, facts: dict[str, str]) -> Path:
    """Where TensorRT-RTX keeps the kernels it compiled for this plan on this GPU."""
    return cache_root() / "tensorrt-rtx" / f"{file.sha256[:16]}-{sm_name(facts['compute_capability'])}.cache"


class TensorRTBackend(Backend):
    """A deserialised plan with one execution context, one stream and reusable pinned buffers."""

    def __init__(self, plan_bytes: bytes, file: BundleFile, size: int, facts: dict[str, str],
                 rebuild: str, memory=None):
        self._flavour = flavour(facts.get("flavour"))
        self.name = self._flavour.name
        trt = import_tensorrt(self._flavour.name)
        self._runtime_cache = None
        self.file = file
        self.precision = file.precision
        self.last_gpu_ms: float | None = None
        self._size = size
        self._facts = facts
        self._memory = memory or open_cuda_memory()
        self._buffers: dict[str, HostDeviceBuffer] = {}
        self._capacity = 0
        self._bound_batch = 0
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        try:
            with self._memory.activate():
                self._engine = self._runtime.deserialize_cuda_engine(plan_bytes)
                if self._engine is None:
                    raise GrmpError(f"TensorRT could not load {file.path} ({self._last_error()}); "
                                    f"rebuild it here: {rebuild}")
                self._context = self._create_context()
                self._tensors = self._inspect(trt)
                self._min_batch, opt, self.max_batch = batch_limits(
                    self._tensors[INPUT_NAME].shape, self._profile(INPUT_NAME))
                self._start, self._end = self._memory.new_event(), self._memory.new_event()
                self._ensure_capacity(max(1, opt))
        except BaseException:
            self.close()
            raise

    def _create_context(self):
        """An execution context; TensorRT-RTX's gets a runtime cache so that the kernels it compiles
        on the first load are reused by later starts."""
        if not self._flavour.aot:
            return self._engine.create_execution_context()
        config = self._engine.create_runtime_config()
        self._runtime_cache = config.create_runtime_cache()
        path = runtime_cache_path(self.file, self._facts)
        if path.is_file() and not self._runtime_cache.deserialize(path.read_bytes()):
            log.warning("ignoring the unreadable TensorRT-RTX runtime cache %s", path)
        config.set_runtime_cache(self._runtime_cache)
        return self._engine.create_execution_context(config)

    def _save_runtime_cache(self) -> None:
        if self._runtime_cache is None:
            return
        data = self._runtime_cache.serialize()
        if data is not None:
            atomic_write_bytes(runtime_cache_path(self.file, self._facts), bytes(memoryview(data)))
        self._runtime_cache = None

    def _last_error(self) -> str:
        return self._logger.errors[-1] if self._logger.errors else "no detail logged"

    def _inspect(self, trt) -> dict[str, TensorSpec]:
        engine = self._engine
        tensors = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            tensors[name] = TensorSpec(
                name=name,
                is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                dtype=numpy_dtype(engine.get_tensor_dtype(name)),
                shape=shape,
                per_sample=per_sample_count(shape, name),
            )
        inputs = [t for t in tensors.values() if t.is_input]
        expected = (self._size, self._size, 3)
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].dtype != np.uint8 \
                or inputs[0].shape[1:] != expected or OUTPUT_NAME not in tensors or tensors[OUTPUT_NAME].is_input:
            got = ", ".join(f"{t.name} {'in' if t.is_input else 'out'} {t.dtype} {t.shape}" for t in tensors.values())
            raise GrmpError(f"{self.file.path} is not a grmp-edge engine: expected input {INPUT_NAME} uint8 "
                            f"(N, {self._size}, {self._size}, 3) and output {OUTPUT_NAME}; it has {got}")
        return tensors

    def _profile(self, name: str) -> tuple[tuple[int, ...], ...] | None:
        if self._tensors[name].shape[0] >= 0:
            return None
        shapes = self._engine.get_tensor_profile_shape(name, 0)
        return tuple(tuple(int(d) for d in s) for s in shapes)

    def _ensure_capacity(self, n: int) -> None:
        capacity = grown_capacity(self._capacity, n, self.max_batch)
        if capacity == self._capacity:
            return
        if self._buffers:
            self._memory.synchronize()  # nothing may still read the old buffers
            self._release_buffers()
        for t in self._tensors.values():
            buf = self._memory.allocate(capacity * t.per_sample, t.dtype)
            self._buffers[t.name] = buf
            if not self._context.set_tensor_address(t.name, buf.device_ptr):
                raise GrmpError(f"TensorRT refused the buffer address of {t.name}")
        self._capacity = capacity

    def _release_buffers(self) -> None:
        for buf in self._buffers.values():
            buf.release()
        self._buffers = {}
        self._capacity = 0

    def infer(self, batch_uint8_nhwc: np.ndarray) -> np.ndarray:
        batch = check_image_batch(batch_uint8_nhwc, self._size, self.max_batch)
        n = len(batch)
        if n < self._min_batch:
            raise GrmpError(f"batch of {n} is below this engine's minimum batch {self._min_batch}")
        with self._memory.activate():
            self._ensure_capacity(n)
            if n != self._bound_batch:
                if not self._context.set_input_shape(INPUT_NAME, (n, self._size, self._size, 3)):
                    raise GrmpError(f"TensorRT refused input shape ({n}, {self._size}, {self._size}, 3)")
                self._bound_batch = n
            image = self._buffers[INPUT_NAME]
            image.host[: batch.size] = batch.reshape(-1)
            self._memory.to_device(image, batch.nbytes)
            self._memory.record(self._start)
            if not self._context.execute_async_v3(self._memory.stream_handle):
                raise GrmpError(f"TensorRT failed to run {self.file.path}: {self._last_error()}")
            self._memory.record(self._end)
            for t in self._tensors.values():
                if not t.is_input:
                    self._memory.to_host(self._buffers[t.name], n * t.per_sample * t.dtype.itemsize)
            self._memory.synchronize()
            self.last_gpu_ms = self._memory.elapsed_ms(self._start, self._end)
        score = self._buffers[OUTPUT_NAME].host
        return score[: n * self._tensors[OUTPUT_NAME].per_sample].astype(np.float32).reshape(n, -1)[:, 0]

    def describe(self) -> str:
        return (f"{self.name} {self.precision} {self.file.path} ({self._flavour.label} {self._facts['tensorrt_version']}, "
                f"{self._facts['gpu_name']} {sm_name(self._facts['compute_capability'])}, "
                f"batch {self._min_batch}..{self.max_batch}, {self._memory.name})")

    def close(self) -> None:
        memory, self._memory = self._memory, None
        if memory is None:
            return
        with memory.activate():
            memory.synchronize()
            self._save_runtime_cache()
            self._release_buffers()
            # The context holds the engine's activation memory: release it before the engine.
            self._context = None
            self._engine = None
            self._runtime = None
            memory.close()


def open_tensorrt(bundle: LoadedBundle, precision: str = "auto", flavour_name: str = "tensorrt") -> TensorRTBackend:
    """The native backend of a TensorRT flavour over the bundle's plan at ``precision`` (auto: fp16
    > fp32 > int8), after checking the plan's sidecar against this device; GrmpError with the
    rebuild command when they differ, or in one line when this machine has no GPU."""
    f = flavour(flavour_name)
    plan = bundle.file_for(f.name, precision)
    sidecar = bundle.sidecar(plan)
    facts = device_facts(f.name)
    rebuild = rebuild_command(bundle.onnx_source(plan, sidecar), plan.precision, f.name, facts["compute_capability"])
    check_plan_compatible(sidecar, facts, plan_name=f"engine {plan.path}", rebuild=rebuild)
    return TensorRTBackend(bundle.path_of(plan).read_bytes(), plan, bundle.preprocess.size, facts, rebuild)
