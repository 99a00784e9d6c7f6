"""TensorRT plans from the bundle's ONNX graphs, built on the device that will run them.

Written against the TensorRT 10 Python API and kept ready for 11: networks are explicit-batch
(the only kind since 10), strongly typed (the FP16 graph carries its own Casts and the INT8 graph its
Q/DQ nodes, so TensorRT must not re-pick precisions), the workspace is a memory-pool limit, one
optimisation profile covers the batch axis of ``image``, and a timing cache file makes rebuilds fast.
``BuilderFlag.FP16`` is used only for the weakly typed fallback (an FP32 graph built as FP16), which
TensorRT 11 removed.

A plan only runs on the TensorRT version and GPU it was built with, so each ``.plan`` gets a sidecar
JSON saying which; the runtime's :func:`grmp_edge.runtime.plan_compat.check_plan_compatible`
compares it with the current device and tells the user to rebuild on the device otherwise.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import subprocess
from pathlib import Path
from typing import Sequence

from grmp_edge.artifacts import atomic_write, atomic_write_bytes, atomic_write_json, cache_root, sha256_file
from grmp_edge.errors import GrmpError, require
from grmp_edge.runtime.tensorrt_backend import make_logger
from grmp_edge.spec import read_json

PRECISIONS = ("fp32", "fp16", "int8")
INPUT_NAME = "image"
REBUILD_HINT = "rebuild it on this device with `grmp-edge export --engine`"


# ---------------------------------------------------------------------------------------------
# Sidecar (pure: no TensorRT needed)


def sidecar_path(plan_path: str | os.PathLike) -> Path:
    """The sidecar JSON next to a plan: ``model_fp16.plan`` -> ``model_fp16.plan.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".json")


def batch_profile(batch: Sequence[int]) -> dict:
    """``(min, opt, max)`` batch sizes as ``{"min", "opt", "max"}``; GrmpError unless 1 <= min <= opt <= max."""
    try:
        low, opt, high = (int(b) for b in batch)
    except (TypeError, ValueError):
        raise GrmpError(f"batch profile must be three integers (min, opt, max), got {batch!r}") from None
    if not 1 <= low <= opt <= high:
        raise GrmpError(f"batch profile must satisfy 1 <= min <= opt <= max, got {low}, {opt}, {high}")
    return {"min": low, "opt": opt, "max": high}


def parse_tegra_release(text: str) -> str | None:
    """The L4T release named in ``/etc/nv_tegra_release``.

    ``"# R36 (release), REVISION: 3.0, ..."`` -> ``"L4T R36.3.0"``; None when the text has no release.
    """
    match = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"L4T R{match.group(1)}.{match.group(2)}" if match else None


def jetpack_version(tegra_release: str | os.PathLike = "/etc/nv_tegra_release") -> str | None:
    """JetPack version from dpkg (``nvidia-jetpack``), else the L4T release; None off Jetson."""
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"],
            capture_output=True, text=True, timeout=10, check=False,
        )
        if result.returncode == 0 and result.stdout.strip():
            return f"JetPack {result.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass  # no dpkg: not a Debian-based Jetson image; fall back to the release file
    try:
        return parse_tegra_release(Path(tegra_release).read_text(errors="replace"))
    except OSError:
        return None


def load_sidecar(plan_path: str | os.PathLike) -> dict:
    """Read a plan's sidecar JSON; GrmpError naming the rebuild command when it is missing."""
    path = sidecar_path(plan_path)
    if not path.is_file():
        raise GrmpError(f"{Path(plan_path).name} has no sidecar {path.name}; {REBUILD_HINT}")
    return read_json(path, "plan sidecar")


# ---------------------------------------------------------------------------------------------
# Device information (lazy tensorrt / cuda-python / pycuda)


def current_device_info() -> dict:
    """``{tensorrt_version, gpu_name, compute_capability, jetpack}`` of this machine, as a sidecar records it."""
    from grmp_edge.runtime.tensorrt_backend import device_facts

    return {**device_facts(), "jetpack": jetpack_version()}


def default_timing_cache(info: dict) -> Path:
    """Per TensorRT version and GPU timing cache under :func:`grmp_edge.artifacts.cache_root`."""
    root = cache_root()
    gpu = re.sub(r"[^A-Za-z0-9.]+", "-", info["gpu_name"]).strip("-")
    return root / f"tensorrt-{info['tensorrt_version']}-{gpu}-sm{info['compute_capability']}.timing"


# ---------------------------------------------------------------------------------------------
# Build


def _progress_monitor(trt, progress):
    """An IProgressMonitor drawing TensorRT's build phases as rich progress bars."""

    class RichProgressMonitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._tasks: dict[str, tuple[int, int]] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = self._tasks[parent_phase][1] + 1 if parent_phase in self._tasks else 0
            task = progress.add_task("  " * depth + phase_name, total=max(int(num_steps), 1))
            self._tasks[phase_name] = (task, depth)

        def step_complete(self, phase_name, step):
            if phase_name in self._tasks:
                progress.update(self._tasks[phase_name][0], completed=int(step) + 1)
            return True  # keep building

        def phase_finish(self, phase_name):
            task = self._tasks.pop(phase_name, None)
            if task is not None:
                progress.remove_task(task[0])

    return RichProgressMonitor()


def _parse(trt, network, logger, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        if error.node() >= 0:
            lines.append(f"node {error.node()} {error.node_name()!r} ({error.node_operator()}): {error.desc()}")
        else:
            lines.append(f"graph: {error.desc()}")
    raise GrmpError(f"TensorRT's ONNX parser rejects {onnx_path.name}: " + "; ".join(lines or logger.errors))


def build_engine(
    onnx_path: str | os.PathLike,
    plan_path: str | os.PathLike,
    precision: str,
    batch: Sequence[int] = (1, 1, 8),
    workspace_gib: float = 1.0,
    timing_cache: str | os.PathLike | None = None,
    strongly_typed: bool = True,
) -> Path:
    """Build a TensorRT plan from ``onnx_path`` and write it with its sidecar; return ``plan_path``.

    ``precision`` names the ONNX graph's precision ("fp32", "fp16" or "int8": the bundle's fp16 and
    QDQ graphs) and is recorded in the sidecar. The network is strongly typed, so the graph's own
    types decide. ``strongly_typed=False`` is the TensorRT 10 fallback for an FP32 graph built as
    ``precision="fp16"`` with ``BuilderFlag.FP16`` (TensorRT picks layer precisions; gone in 11).
    ``batch`` is the (min, opt, max) profile of ``image``'s batch axis; ``workspace_gib`` caps the
    builder's scratch memory; ``timing_cache`` (default: per version and GPU in the user cache)
    is loaded before and saved after the build.
    """
    trt = require("tensorrt", "tensorrt")
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if precision not in PRECISIONS:
        raise GrmpError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if not onnx_path.is_file():
        raise GrmpError(f"ONNX model not found: {onnx_path}")
    if not strongly_typed and precision != "fp16":
        raise GrmpError("the weakly typed build is only the FP16 fallback; INT8 needs the QDQ graph")
    if workspace_gib <= 0:
        raise GrmpError(f"workspace must be positive, got {workspace_gib} GiB")
    profile_batch = batch_profile(batch)
    info = current_device_info()

    logger = make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    typed_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed and typed_flag is not None:  # always on (and the flag deprecated) in TensorRT 11
        flags |= 1 << int(typed_flag)
    network = builder.create_network(flags)
    _parse(trt, network, logger, onnx_path)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if not strongly_typed:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise GrmpError(
                f"TensorRT {trt.__version__} builds strongly typed networks only: build the FP16 ONNX graph"
            )
        config.set_flag(trt.BuilderFlag.FP16)

    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if inputs != [INPUT_NAME]:
        raise GrmpError(f"{onnx_path.name}: expected one input named {INPUT_NAME!r}, found {inputs}")
    image = network.get_input(0)
    rest = tuple(image.shape)[1:]
    if any(d < 0 for d in rest):
        raise GrmpError(f"{onnx_path.name}: only the batch axis may be dynamic, input shape is {tuple(image.shape)}")
    profile = builder.create_optimization_profile()
    profile.set_shape(
        INPUT_NAME,
        (profile_batch["min"], *rest), (profile_batch["opt"], *rest), (profile_batch["max"], *rest),
    )
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else default_timing_cache(info)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        # A corrupt cache, or one from another TensorRT or GPU, is refused; start a fresh one instead.
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    serialized = _build_with_progress(trt, builder, network, config, plan_path.name)
    if serialized is None:
        raise GrmpError(
            f"TensorRT could not build {plan_path.name}: " + ("; ".join(logger.errors[-3:]) or "no error message")
            + f" (try a larger --workspace than {workspace_gib:g} GiB if it mentions memory)"
        )
    atomic_write(plan_path, lambda tmp: tmp.write_bytes(serialized))
    atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    atomic_write_json(sidecar_path(plan_path), {
        "plan": plan_path.name,
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "precision": precision,
        "strongly_typed": strongly_typed,
        "batch": profile_batch,
        "workspace_gib": workspace_gib,
        **info,
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    return plan_path


def _build_with_progress(trt, builder, network, config, name: str):
    """build_serialized_network with TensorRT's phases as progress bars (a spinner before TensorRT 10)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not hasattr(trt, "IProgressMonitor"):
        with console.status(f"Building {name} with TensorRT {trt.__version__} (minutes on a Jetson)"):
            return builder.build_serialized_network(network, config)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        progress.console.print(f"Building {name} with TensorRT {trt.__version__}")
        config.progress_monitor = _progress_monitor(trt, progress)
        return builder.build_serialized_network(network, config)
