"""Inference backends: one interface over ONNX Runtime and native TensorRT, and the choice between them.

Every backend takes the preprocessed batch exactly as the exported graph does (``image``: uint8 RGB
``(N, S, S, 3)``) and returns the ``score`` output as ``(N,)`` float32. :func:`open_backend` picks
the backend and the bundle file:

* ``backend="auto"``: native TensorRT when the bundle has a plan (a ``tensorrt`` one, then a
  ``tensorrt-rtx`` one), that flavour's module imports, a CUDA GPU is visible and the plan's sidecar
  names this GPU and release; else ONNX Runtime with its TensorRT or CUDA provider when this
  onnxruntime build has one; else ONNX Runtime on the CPU. A plan built for another GPU or TensorRT release is refused
  with the rebuild command, and auto then goes on to ONNX Runtime (the warning is logged). Passing
  ``providers`` goes straight to ONNX Runtime with those providers.
* ``backend="tensorrt"`` / ``"tensorrt-rtx"`` / ``"onnxruntime"``: that backend or a one-line
  GrmpError saying why not.

The choice and the reasons for it are logged (logger ``grmp_edge.runtime.backends``) and kept on
``Backend.reason``. Which file each backend loads at each ``precision`` is
:mod:`grmp_edge.runtime.bundle`'s table (``auto``: fp16 on GPUs, fp32 on CPUs).
"""
from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np

from grmp_edge.artifacts import cache_root
from grmp_edge.device import physical_cores
from grmp_edge.preprocess import check_image_batch
from grmp_edge.errors import GrmpError, require
from grmp_edge.runtime.bundle import PRECISIONS, LoadedBundle, auto_precisions
from grmp_edge.runtime.plan_compat import FLAVOURS
from grmp_edge.spec import BundleFile, INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "tensorrt-rtx", "onnxruntime")

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
PROVIDER_ORDER = (TRT_EP, CUDA_EP, CPU_EP)
BACKEND_OF_PROVIDER = {TRT_EP: "onnxruntime-tensorrt", CUDA_EP: "onnxruntime-cuda", CPU_EP: "onnxruntime-cpu"}


class Backend(ABC):
    """A loaded model that scores preprocessed batches.

    ``name`` (``onnxruntime-cpu``, ``onnxruntime-cuda``, ``onnxruntime-tensorrt``, ``tensorrt``),
    ``precision`` and ``file`` say what runs; ``max_batch`` is the largest batch accepted (None:
    unbounded); ``reason`` says why :func:`open_backend` chose it.
    """

    name: str
    precision: str
    file: BundleFile
    max_batch: int | None = None
    reason: str = ""

    @abstractmethod
    def infer(self, batch_uint8_nhwc: np.ndarray) -> np.ndarray:
        """Scores ``(N,)`` float32 of a uint8 ``(N, S, S, 3)`` RGB batch."""

    @abstractmethod
    def describe(self) -> str:
        """One line: backend, precision, file and the settings that matter for speed."""

    @abstractmethod
    def close(self) -> None:
        """Release the session / engine and its memory; safe to call twice."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _trt_cache_dir(file: BundleFile) -> Path:
    return cache_root() / "ort-tensorrt" / file.sha256[:16]


def ort_session(path: str | os.PathLike, providers: Sequence, threads: int | None = None, label: str | None = None):
    """An ONNX Runtime session with every graph optimisation, one inter-op thread and ``threads``
    intra-op threads (ORT's default when None); a graph ORT cannot load is a one-line GrmpError."""
    ort = require("onnxruntime", "runtime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise GrmpError(f"ONNX Runtime cannot load {label or path}: {str(exc).splitlines()[0]}") from None


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime session over one bundle file, on the first of ``providers`` that initialises.

    ``threads`` sets intra-op threads (default: physical cores); graph optimisation is at its
    highest level. The TensorRT provider caches its engines under ``~/.cache/grmp-edge`` so that
    only the first start on a device pays for the build.
    """

    def __init__(self, path: Path, file: BundleFile, size: int, providers: Sequence[str], threads: int | None = None):
        self.file = file
        self.precision = file.precision
        self._size = size
        self._threads = threads or physical_cores()
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
        self._session = ort_session(path, provider_specs, self._threads, label=file.path)
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
                f"({self._threads} threads, providers {', '.join(self.providers)})")

    def close(self) -> None:
        self._session = None


def _validate(backend: str, precision: str) -> None:
    if backend not in BACKENDS:
        raise GrmpError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if precision != "auto" and precision not in PRECISIONS:
        raise GrmpError(f"unknown precision {precision!r}; expected auto or one of {', '.join(PRECISIONS)}")


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
) -> OnnxRuntimeBackend:
    """An ONNX Runtime backend on ``providers`` (default: TensorRT > CUDA > CPU, those available),
    loading the bundle file meant for the first of them."""
    chosen = _ort_providers(providers)
    target = BACKEND_OF_PROVIDER.get(chosen[0], "onnxruntime-cpu")
    file = bundle.file_for(target, precision)
    backend = OnnxRuntimeBackend(bundle.path_of(file), file, bundle.preprocess.size, chosen, threads)
    if backend.name != target:
        log.warning("%s did not initialise; %s runs on %s", chosen[0], file.path, backend.providers[0])
    return backend


def _has_plan(bundle: LoadedBundle, precision: str, flavour_name: str = "tensorrt") -> bool:
    wanted = auto_precisions(flavour_name) if precision == "auto" else (precision,)
    return any(bundle.candidates(flavour_name, p) for p in wanted)


def _open_auto(bundle: LoadedBundle, precision: str, threads: int | None) -> Backend:
    from grmp_edge.runtime import tensorrt_backend

    skipped = []
    flavours = [f for f in FLAVOURS.values() if _has_plan(bundle, precision, f.name)]
    if not flavours:
        skipped.append("the bundle has no TensorRT plan" + ("" if precision == "auto" else f" at {precision} precision"))
    for flavour in flavours:  # a plan of either flavour runs only where its sidecar matches this GPU
        missing = tensorrt_backend.tensorrt_unavailable(flavour.name)
        if missing:
            skipped.append(f"the bundle has a {flavour.label} plan but {missing}")
            continue
        try:
            backend = tensorrt_backend.open_tensorrt(bundle, precision, flavour.name)
        except GrmpError as exc:
            log.warning("%s plan refused: %s", flavour.label, exc)
            skipped.append(f"{flavour.label} refused the plan ({exc})")
        else:
            backend.reason = f"auto: {flavour.name}, the bundle's plan matches this GPU and {flavour.label}"
            return backend
    available = require("onnxruntime", "runtime").get_available_providers()
    gpu = [p for p in (TRT_EP, CUDA_EP) if p in available]
    if not gpu:
        skipped.append(f"onnxruntime has no CUDA or TensorRT provider (it has {', '.join(available)})")
    else:
        try:
            backend = open_onnxruntime(bundle, precision, gpu + [CPU_EP], threads)
        except GrmpError as exc:
            skipped.append(f"ONNX Runtime on {gpu[0]} failed ({exc})")
        else:
            if backend.name != "onnxruntime-cpu":
                backend.reason = f"auto: {backend.name}, " + "; ".join(skipped)
                return backend
            backend.close()
            skipped.append(f"{gpu[0]} did not initialise")
    backend = open_onnxruntime(bundle, precision, [CPU_EP], threads)
    backend.reason = "auto: onnxruntime-cpu, " + "; ".join(skipped)
    return backend


def open_backend(
    bundle: LoadedBundle,
    backend: str = "auto",
    precision: str = "auto",
    providers: Sequence[str] | None = None,
    threads: int | None = None,
) -> Backend:
    """Open the backend that scores this bundle on this device (see the module doc for ``auto``).

    ``precision``: ``auto``, ``fp32``, ``fp16`` or ``int8`` (picks the bundle file);
    ``providers``: ONNX Runtime provider names, in order; ``threads``: CPU intra-op threads
    (default: physical cores). The choice is logged and kept on ``Backend.reason``.
    """
    _validate(backend, precision)
    if backend in FLAVOURS:
        from grmp_edge.runtime.tensorrt_backend import open_tensorrt

        chosen: Backend = open_tensorrt(bundle, precision, backend)
        chosen.reason = f"asked for {backend}"
    elif backend == "onnxruntime" or providers:
        chosen = open_onnxruntime(bundle, precision, providers, threads)
        chosen.reason = f"asked for {'onnxruntime' if backend == 'onnxruntime' else 'providers ' + ', '.join(providers)}"
    else:
        chosen = _open_auto(bundle, precision, threads)
    log.info("backend %s (%s)", chosen.describe(), chosen.reason)
    return chosen
