"""Which backend scores a bundle on this device: :func:`open_backend` and its ``auto`` rule.

* ``backend="auto"``: native TensorRT when the bundle has a plan (a ``tensorrt`` one, then a
  ``tensorrt-rtx`` one), that flavour's module imports, a CUDA GPU is visible and the plan's sidecar
  names this GPU and release; else ONNX Runtime with its TensorRT or CUDA provider when this
  onnxruntime build has one; else ONNX Runtime on the CPU. A plan built for another GPU or TensorRT
  release is refused with the rebuild command, and auto then goes on to ONNX Runtime (the warning is
  logged). Passing ``providers`` goes straight to ONNX Runtime with those providers.
* ``backend="tensorrt"`` / ``"tensorrt-rtx"`` / ``"onnxruntime"``: that backend or a one-line
  GrmpError saying why not.
* ``backend="triton://HOST[:PORT]/MODEL"``: the model on a Triton server (the bundle still gives
  the preprocessing).

The choice and the reasons for it are logged (logger ``grmp_edge.runtime.backends``) and kept on
``Backend.reason``. Which file each backend loads at each ``precision`` is
:mod:`grmp_edge.runtime.bundle`'s table (``auto``: fp16 on GPUs, fp32 on CPUs). This module imports
the backends; none of them imports it.
"""
from __future__ import annotations

import logging
from typing import Sequence

from grmp_edge.errors import GrmpError, require
from grmp_edge.runtime import tensorrt_backend
from grmp_edge.runtime.backend import Backend
from grmp_edge.runtime.bundle import PRECISIONS, LoadedBundle, auto_precisions
from grmp_edge.runtime.onnxruntime_backend import CPU_EP, CUDA_EP, TRT_EP, open_onnxruntime
from grmp_edge.runtime.plan_compat import FLAVOURS
from grmp_edge.runtime.triton_backend import TRITON_SCHEME, open_triton

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "tensorrt-rtx", "onnxruntime")


def _validate(backend: str, precision: str) -> None:
    if backend not in BACKENDS and not backend.startswith(TRITON_SCHEME):
        raise GrmpError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)} "
                        f"or {TRITON_SCHEME}HOST:PORT/MODEL")
    if precision != "auto" and precision not in PRECISIONS:
        raise GrmpError(f"unknown precision {precision!r}; expected auto or one of {', '.join(PRECISIONS)}")


def _has_plan(bundle: LoadedBundle, precision: str, flavour_name: str = "tensorrt") -> bool:
    wanted = auto_precisions(flavour_name) if precision == "auto" else (precision,)
    return any(bundle.candidates(flavour_name, p) for p in wanted)


def _auto_tensorrt(bundle: LoadedBundle, precision: str, skipped: list[str]) -> Backend | None:
    """The first TensorRT flavour whose plan this device runs; why each did not go on ``skipped``."""
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
    return None


def _auto_onnxruntime_gpu(bundle: LoadedBundle, precision: str, threads: int | None, spin: bool,
                          skipped: list[str]) -> Backend | None:
    """ONNX Runtime on its TensorRT or CUDA provider when one is built in and initialises."""
    available = require("onnxruntime", "runtime").get_available_providers()
    gpu = [p for p in (TRT_EP, CUDA_EP) if p in available]
    if not gpu:
        skipped.append(f"onnxruntime has no CUDA or TensorRT provider (it has {', '.join(available)})")
        return None
    try:
        backend = open_onnxruntime(bundle, precision, gpu + [CPU_EP], threads, spin)
    except GrmpError as exc:
        skipped.append(f"ONNX Runtime on {gpu[0]} failed ({exc})")
        return None
    if backend.name == "onnxruntime-cpu":
        backend.close()
        skipped.append(f"{gpu[0]} did not initialise")
        return None
    backend.reason = f"auto: {backend.name}, " + "; ".join(skipped)
    return backend


def _open_auto(bundle: LoadedBundle, precision: str, threads: int | None, spin: bool) -> Backend:
    skipped: list[str] = []
    chosen = (_auto_tensorrt(bundle, precision, skipped)
              or _auto_onnxruntime_gpu(bundle, precision, threads, spin, skipped))
    if chosen is None:
        chosen = open_onnxruntime(bundle, precision, [CPU_EP], threads, spin)
        chosen.reason = "auto: onnxruntime-cpu, " + "; ".join(skipped)
    return chosen


def open_backend(
    bundle: LoadedBundle,
    backend: str = "auto",
    precision: str = "auto",
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    spin: bool = True,
) -> Backend:
    """Open the backend that scores this bundle on this device (see the module doc for ``auto``).

    ``backend``: one of :data:`BACKENDS` or ``triton://HOST[:PORT]/MODEL``; ``precision``:
    ``auto``, ``fp32``, ``fp16`` or ``int8`` (picks the bundle file); ``providers``: ONNX Runtime
    provider names, in order; ``threads``: CPU intra-op threads (default: physical cores); ``spin``
    False: ONNX Runtime's idle threads sleep between calls (paced sources). The choice is logged and
    kept on ``Backend.reason``.
    """
    _validate(backend, precision)
    if backend.startswith(TRITON_SCHEME):
        chosen: Backend = open_triton(backend, bundle.preprocess.size)
    elif backend in FLAVOURS:
        chosen = tensorrt_backend.open_tensorrt(bundle, precision, backend)
        chosen.reason = f"asked for {backend}"
    elif backend == "onnxruntime" or providers:
        chosen = open_onnxruntime(bundle, precision, providers, threads, spin)
        chosen.reason = f"asked for {'onnxruntime' if backend == 'onnxruntime' else 'providers ' + ', '.join(providers)}"
    else:
        chosen = _open_auto(bundle, precision, threads, spin)
    log.info("backend %s (%s)", chosen.describe(), chosen.reason)
    return chosen
