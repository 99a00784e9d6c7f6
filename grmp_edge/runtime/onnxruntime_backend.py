"""ONNX Runtime backend: a bundle's ONNX graph on the first of TensorRT, CUDA or CPU execution
providers that this onnxruntime build has and that initialises.

Graph optimisation is at its highest level, one inter-op thread, ``threads`` intra-op threads
(default: physical cores). The TensorRT provider caches its engines under
:func:`grmp_edge.artifacts.cache_root`, so that only the first start on a device pays for the build.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from grmp_edge.artifacts import cache_root
from grmp_edge.device import physical_cores
from grmp_edge.errors import GrmpError, require
from grmp_edge.preprocess import check_image_batch
from grmp_edge.runtime.backend import Backend
from grmp_edge.runtime.bundle import LoadedBundle
from grmp_edge.spec import BundleFile, INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
PROVIDER_ORDER = (TRT_EP, CUDA_EP, CPU_EP)
BACKEND_OF_PROVIDER = {TRT_EP: "onnxruntime-tensorrt", CUDA_EP: "onnxruntime-cuda", CPU_EP: "onnxruntime-cpu"}


def _trt_cache_dir(file: BundleFile) -> Path:
    return cache_root() / "ort-tensorrt" / file.sha256[:16]


def ort_session(path: str | os.PathLike, providers: Sequence, threads: int | None = None, label: str | None = None,
                spin: bool = True):
    """An ONNX Runtime session with every graph optimisation, one inter-op thread and ``threads``
    intra-op threads (ORT's default when None); a graph ORT cannot load is a one-line GrmpError.
    ``spin`` False makes idle intra-op threads sleep instead of spin-waiting for the next call: less
    CPU between the frames of a paced source, a little more latency per call
    (``benchmarks/ort_spin.md``)."""
    ort = require("onnxruntime", "runtime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise GrmpError(f"ONNX Runtime cannot load {label or path}: {str(exc).splitlines()[0]}") from None


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime session over one bundle file, on the first of ``providers`` that initialises.

    ``threads`` sets intra-op threads (default: physical cores); ``spin`` False lets them sleep
    between calls (for paced sources, see :func:`ort_session`); graph optimisation is at its highest
    level. The TensorRT provider caches its engines under ``~/.cache/grmp-edge`` so that only the
    first start on a device pays for the build.
    """

    def __init__(self, path: Path, file: BundleFile, size: int, providers: Sequence[str], threads: int | None = None,
                 spin: bool = True):
        self.file = file
        self.precision = file.precision
        self._size = size
        self._threads = threads or physical_cores()
        self.spin = spin
        provider_specs = []
        for p in providers:
            if p == TRT_EP:
                cache = _trt_cache_dir(file)
                cache.mkdir(parents=True, exist_ok=True)
                provider_specs.append((p, {
                    "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
                }))
            else:
                provider_specs.append(p)
        self._session = ort_session(path, provider_specs, self._threads, label=file.path, spin=spin)
        self._check_io()
        self.providers = list(self._session.get_providers())
        self.name = BACKEND_OF_PROVIDER.get(self.providers[0], f"onnxruntime-{self.providers[0]}")

    def _check_io(self) -> None:
        inputs = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(uint8)" \
                or OUTPUT_NAME not in outputs:
            got = ", ".join(f"{i.name}: {i.type} {i.shape}" for i in inputs)
            raise GrmpError(
                f"{self.file.path} is not a grmp-edge graph: expected input {INPUT_NAME} uint8 NHWC and output "
                f"{OUTPUT_NAME}, got inputs [{got}] and outputs {outputs}"
            )
        dims = inputs[0].shape[1:]
        if all(isinstance(d, int) for d in dims) and tuple(dims) != (self._size, self._size, 3):
            raise GrmpError(
                f"{self.file.path} takes {tuple(dims)} crops but the bundle's preprocessing makes "
                f"({self._size}, {self._size}, 3); the manifest and the graph disagree, re-export the bundle"
            )

    def infer(self, batch_uint8_nhwc: np.ndarray) -> np.ndarray:
        batch = check_image_batch(batch_uint8_nhwc, self._size, self.max_batch)
        score = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        return np.asarray(score, dtype=np.float32).reshape(len(batch))

    def describe(self) -> str:
        return (f"{self.name} {self.precision} {self.file.path} "
                f"({self._threads} threads{'' if self.spin else ' that sleep between calls'}, "
                f"providers {', '.join(self.providers)})")

    def close(self) -> None:
        self._session = None


def _ort_providers(providers: Sequence[str] | None) -> list[str]:
    """The providers to ask for: the given ones (checked), else every available one of TensorRT >
    CUDA > CPU."""
    available = require("onnxruntime", "runtime").get_available_providers()
    if providers:
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise GrmpError(f"ONNX Runtime provider(s) {', '.join(unknown)} not available here; "
                            f"this onnxruntime has {', '.join(available)}")
        return list(providers)
    return [p for p in PROVIDER_ORDER if p in available]


def open_onnxruntime(
    bundle: LoadedBundle,
    precision: str = "auto",
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    spin: bool = True,
) -> OnnxRuntimeBackend:
    """An ONNX Runtime backend on ``providers`` (default: TensorRT > CUDA > CPU, those available),
    loading the bundle file meant for the first of them; ``threads`` and ``spin`` as
    :class:`OnnxRuntimeBackend` takes them."""
    chosen = _ort_providers(providers)
    target = BACKEND_OF_PROVIDER.get(chosen[0], "onnxruntime-cpu")
    file = bundle.file_for(target, precision)
    backend = OnnxRuntimeBackend(bundle.path_of(file), file, bundle.preprocess.size, chosen, threads, spin)
    if backend.name != target:
        log.warning("%s did not initialise; %s runs on %s", chosen[0], file.path, backend.providers[0])
    return backend
