"""TensorRT plans from the bundle's ONNX graphs, for both TensorRT flavours through one code path.

* ``tensorrt`` (JetPack / data-centre TensorRT 10 and 11): built on the device that will run it, for
  its GPU; a timing cache per version and GPU makes rebuilds fast.
* ``tensorrt-rtx`` (TensorRT for RTX): built ahead of time on any machine, GPU or not, for the
  compute capabilities asked for (``config.set_compute_capability``; one plan may cover several);
  kernels are compiled just in time on the first load. Its timing-cache calls are no-ops that log
  CUDA errors without a GPU, so no timing cache is used.

Written against the TensorRT 10 Python API and kept ready for 11: networks are explicit-batch
(the only kind since 10), strongly typed (the FP16 graph carries its own Casts and the INT8 graph its
Q/DQ nodes, so TensorRT must not re-pick precisions), the workspace is a memory-pool limit, one
optimisation profile covers the batch axis of ``image``, and a timing cache file makes rebuilds fast.
``BuilderFlag.FP16`` is used only for the weakly typed fallback (an FP32 graph built as FP16), which
TensorRT 11 removed (TensorRT-RTX never had it).

One build is a chain of small steps, each usable alone (Polygraphy's loaders): :func:`parse_network`
-> :func:`builder_config` + :func:`add_batch_profile` (+ :func:`use_timing_cache`) ->
:func:`serialize_plan` -> :func:`gate_plan` -> the plan and its sidecar written atomically
(:func:`build_engine` runs them in that order for either flavour).

A plan only runs on the flavour, version and GPUs it was built for, so each ``.plan`` gets a sidecar
JSON saying which (with the ONNX sha256 and what the plan computes, see
:mod:`grmp_edge.export.trt_layers`); the runtime's
:func:`grmp_edge.runtime.plan_compat.check_plan_compatible` compares it with the current device and
tells the user the rebuild command otherwise. A plan that does not compute what its graph asked
(an INT8 plan without INT8 GEMMs, FP32 LayerNorms of the FP16 graph left in FP16) fails its gate.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from grmp_edge.artifacts import atomic_write, atomic_write_bytes, atomic_write_json, cache_root, sha256_file
from grmp_edge.device import jetpack_version
from grmp_edge.errors import GrmpError
from grmp_edge.export import trt_layers
from grmp_edge.runtime.plan_compat import Flavour, flavour, parse_compute_capability, sm_name
from grmp_edge.runtime.tensorrt_backend import import_tensorrt, make_logger
from grmp_edge.spec import INPUT_NAME, PRECISIONS, read_json, sidecar_name

REBUILD_HINT = "rebuild it on this device with `grmp-edge export --engine`"
# Ampere, Ada and Blackwell consumer GPUs: the RTX targets a plan covers unless --sm says otherwise.
DEFAULT_RTX_TARGETS = ("8.6", "8.9", "12.0")


# ---------------------------------------------------------------------------------------------
# Sidecar (pure: no TensorRT needed)


def sidecar_path(plan_path: str | os.PathLike) -> Path:
    """The sidecar JSON next to a plan: ``model_fp16.plan`` -> ``model_fp16.plan.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(sidecar_name(plan_path.name))


def batch_profile(batch: Sequence[int]) -> dict:
    """``(min, opt, max)`` batch sizes as ``{"min", "opt", "max"}``; GrmpError unless 1 <= min <= opt <= max."""
    try:
        low, opt, high = (int(b) for b in batch)
    except (TypeError, ValueError):
        raise GrmpError(f"batch profile must be three integers (min, opt, max), got {batch!r}") from None
    if not 1 <= low <= opt <= high:
        raise GrmpError(f"batch profile must satisfy 1 <= min <= opt <= max, got {low}, {opt}, {high}")
    return {"min": low, "opt": opt, "max": high}


def load_sidecar(plan_path: str | os.PathLike) -> dict:
    """Read a plan's sidecar JSON; GrmpError naming the rebuild command when it is missing."""
    path = sidecar_path(plan_path)
    if not path.is_file():
        raise GrmpError(f"{Path(plan_path).name} has no sidecar {path.name}; {REBUILD_HINT}")
    return read_json(path, "plan sidecar")


# ---------------------------------------------------------------------------------------------
# Device information (lazy tensorrt / cuda-python / pycuda)


def current_device_info() -> dict:
    """``{flavour, tensorrt_version, gpu_name, compute_capability, jetpack}`` of this machine (needs
    TensorRT and a GPU), as a sidecar of a plan built here records it."""
    from grmp_edge.runtime.tensorrt_backend import device_facts

    return {**device_facts("tensorrt"), "jetpack": jetpack_version()}


def build_targets(trt, flavour_: Flavour, compute_capabilities: Sequence | None) -> dict:
    """What a plan is built for, as its sidecar records it: ``{flavour, tensorrt_version,
    compute_capabilities, gpu_name, compute_capability, jetpack}``.

    ``tensorrt`` builds for this machine's GPU (GrmpError without one; ``compute_capabilities``
    must be None or name it); ``tensorrt-rtx`` for ``compute_capabilities`` (default
    :data:`DEFAULT_RTX_TARGETS`), each one its builder knows, with no GPU needed.
    """
    if not flavour_.aot:
        info = current_device_info()
        here = parse_compute_capability(info["compute_capability"])
        if compute_capabilities and {parse_compute_capability(c) for c in compute_capabilities} != {here}:
            raise GrmpError(f"{flavour_.label} builds for the GPU it runs on ({sm_name(here)}); "
                            "--sm picks the targets of --trt rtx plans only")
        return {**info, "compute_capabilities": [info["compute_capability"]]}
    wanted = [f"{m}.{n}" for m, n in (parse_compute_capability(c) for c in compute_capabilities or DEFAULT_RTX_TARGETS)]
    known = {parse_compute_capability(name[2:]): name for name in trt.ComputeCapability.__members__
             if re.fullmatch(r"SM\d+", name)}
    missing = [c for c in wanted if parse_compute_capability(c) not in known]
    if missing:
        jetson = "; Jetson Orin (sm_87) plans are built on the Jetson with --trt tensorrt" \
            if (8, 7) in {parse_compute_capability(c) for c in missing} else ""
        raise GrmpError(f"{flavour_.label} {trt.__version__} cannot build for {', '.join(sm_name(c) for c in missing)}; "
                        f"it builds for {', '.join(sm_name(k) for k in sorted(known))}{jetson}")
    return {"flavour": flavour_.name, "tensorrt_version": trt.__version__, "compute_capabilities": wanted,
            "gpu_name": None, "compute_capability": None, "jetpack": None}


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
        # The API error says why; TensorRT-RTX appends CUDA errors of a machine without a GPU.
        desc = error.desc().strip().splitlines()
        why = next((line for line in desc if "Error Code" in line and "Cuda" not in line), desc[0] if desc else "")
        if why in ("", "false"):  # an op checker's bare verdict: its error code and function say what failed
            why = f"{getattr(error.code(), 'name', error.code())} in {error.func()}"
        if error.node() >= 0:
            lines.append(f"node {error.node_name()!r} ({error.node_operator()}): {why}")
        else:
            lines.append(f"graph: {why}")
    lines = lines or logger.errors
    more = f" (+{len(lines) - 6} more)" if len(lines) > 6 else ""
    raise GrmpError(f"TensorRT's ONNX parser rejects {onnx_path.name}: " + "; ".join(lines[:6]) + more)


@dataclass
class ParsedNetwork:
    """A TensorRT network parsed from an ONNX file, with the builder and logger that made it."""

    trt: Any
    logger: Any
    builder: Any
    network: Any
    onnx_path: Path


@dataclass
class SerializedPlan:
    """A built plan's bytes, how long the build took and the engine layers the builder reported."""

    data: bytes
    seconds: float
    layers: list


def parse_network(trt, onnx_path: Path, strongly_typed: bool = True) -> ParsedNetwork:
    """Parse ``onnx_path`` into an explicit-batch network (strongly typed unless told otherwise)."""
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    typed_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed and typed_flag is not None:  # always on (and the flag deprecated) in TensorRT 11 and -RTX
        flags |= 1 << int(typed_flag)
    network = builder.create_network(flags)
    _parse(trt, network, logger, onnx_path)
    return ParsedNetwork(trt, logger, builder, network, onnx_path)


def parse_onnx(onnx_path: str | os.PathLike, flavour_name: str = "tensorrt") -> str:
    """Parse ``onnx_path`` with a TensorRT flavour's own ONNX parser (no GPU needed); return what
    checked it (``"TensorRT-RTX 1.7.1.116 parser"``), or GrmpError naming each rejected node and op."""
    f = flavour(flavour_name)
    trt = import_tensorrt(f.name)
    parse_network(trt, Path(onnx_path))
    return f"{f.label} {trt.__version__} parser"


def builder_config(parsed: ParsedNetwork, flavour_: Flavour, targets: dict, workspace_gib: float,
                   strongly_typed: bool = True):
    """A builder config: workspace limit, detailed layer information, the plan's target GPUs (an
    ahead-of-time flavour) and, for the weakly typed fallback, ``BuilderFlag.FP16``."""
    trt = parsed.trt
    config = parsed.builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    # DETAILED keeps each engine layer's types: the builder logs them (TensorRT-RTX) and the engine
    # inspector reads them (TensorRT).
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if flavour_.aot:
        config.num_compute_capabilities = len(targets["compute_capabilities"])
        for i, cc in enumerate(targets["compute_capabilities"]):
            major, minor = parse_compute_capability(cc)
            config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{major}{minor}"), i)
    if not strongly_typed:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise GrmpError(
                f"TensorRT {trt.__version__} builds strongly typed networks only: build the FP16 ONNX graph"
            )
        config.set_flag(trt.BuilderFlag.FP16)
    return config


def add_batch_profile(parsed: ParsedNetwork, config, profile_batch: dict) -> None:
    """One optimisation profile over the batch axis of the network's only input, ``image``."""
    network, name = parsed.network, parsed.onnx_path.name
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if inputs != [INPUT_NAME]:
        raise GrmpError(f"{name}: expected one input named {INPUT_NAME!r}, found {inputs}")
    shape = tuple(network.get_input(0).shape)
    rest = shape[1:]
    if any(d < 0 for d in rest):
        raise GrmpError(f"{name}: only the batch axis may be dynamic, input shape is {shape}")
    profile = parsed.builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *((profile_batch[k], *rest) for k in ("min", "opt", "max")))
    config.add_optimization_profile(profile)


def use_timing_cache(config, cache_path: Path) -> Path:
    """Load ``cache_path`` into ``config`` (a fresh cache where it is missing, corrupt or from another
    TensorRT or GPU); returns the path to save it back to after the build."""
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return cache_path


def serialize_plan(parsed: ParsedNetwork, config, flavour_: Flavour, plan_name: str,
                   workspace_gib: float) -> SerializedPlan:
    """Build the plan (TensorRT's phases as progress bars) and read back its engine layers."""
    started = time.perf_counter()
    serialized = _build_with_progress(parsed.trt, flavour_, parsed.builder, parsed.network, config, plan_name)
    seconds = time.perf_counter() - started
    if serialized is None:
        raise GrmpError(
            f"{flavour_.label} could not build {plan_name}: " + ("; ".join(parsed.logger.errors[-3:]) or "no error message")
            + f" (try a larger --workspace than {workspace_gib:g} GiB if it mentions memory)"
        )
    data = bytes(memoryview(serialized))
    return SerializedPlan(data, seconds, _engine_layers(parsed.trt, flavour_, parsed.logger, data))


def gate_plan(parsed: ParsedNetwork, plan: SerializedPlan, precision: str, plan_name: str,
              allow_drift: bool) -> tuple[list[str], trt_layers.LayerSummary]:
    """The plan gate's problems and the layer summary; GateFailed on problems unless ``allow_drift``."""
    from grmp_edge.export.gates import GateFailed

    kinds, asked = trt_layers.network_kinds(parsed.network)
    problems = trt_layers.plan_gate_problems(precision, plan.layers, kinds, asked)
    if problems and not allow_drift:
        raise GateFailed(f"the {precision} plan {plan_name} does not compute what {parsed.onnx_path.name} asks: "
                         f"{'; '.join(problems)}; rerun with --allow-drift to keep it anyway")
    return problems, trt_layers.summarize(plan.layers, kinds)


def _check_request(onnx_path: Path, precision: str, strongly_typed: bool, workspace_gib: float) -> None:
    """One-line GrmpErrors for a build that cannot start."""
    if precision not in PRECISIONS:
        raise GrmpError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if not onnx_path.is_file():
        raise GrmpError(f"ONNX model not found: {onnx_path}")
    if not strongly_typed and precision != "fp16":
        raise GrmpError("the weakly typed build is only the FP16 fallback; INT8 needs the QDQ graph")
    if workspace_gib <= 0:
        raise GrmpError(f"workspace must be positive, got {workspace_gib} GiB")


def build_engine(
    onnx_path: str | os.PathLike,
    plan_path: str | os.PathLike,
    precision: str,
    batch: Sequence[int] = (1, 1, 8),
    workspace_gib: float = 1.0,
    timing_cache: str | os.PathLike | None = None,
    strongly_typed: bool = True,
    flavour_name: str = "tensorrt",
    compute_capabilities: Sequence | None = None,
    allow_drift: bool = False,
) -> Path:
    """Build a TensorRT plan from ``onnx_path`` and write it with its sidecar; return ``plan_path``.

    ``precision`` names the ONNX graph's precision ("fp32", "fp16" or "int8": the bundle's fp16 and
    QDQ graphs) and is recorded in the sidecar. The network is strongly typed, so the graph's own
    types decide. ``strongly_typed=False`` is the TensorRT 10 fallback for an FP32 graph built as
    ``precision="fp16"`` with ``BuilderFlag.FP16`` (TensorRT picks layer precisions; gone in 11).
    ``batch`` is the (min, opt, max) profile of ``image``'s batch axis; ``workspace_gib`` caps the
    builder's scratch memory; ``timing_cache`` (default: per version and GPU in the user cache)
    is loaded before and saved after the build (``tensorrt`` only). ``flavour_name`` picks the
    TensorRT (``tensorrt`` or ``tensorrt-rtx``) and ``compute_capabilities`` the targets of a
    ``tensorrt-rtx`` plan (see :func:`build_targets`). The sidecar's ``layers`` say how many engine
    layers, GEMMs, LayerNorms and Softmaxes run in each precision; a plan that fails its gate (see
    :func:`grmp_edge.export.trt_layers.plan_gate_problems`) raises GateFailed unless ``allow_drift``.
    """
    f = flavour(flavour_name)
    trt = import_tensorrt(f.name)
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    _check_request(onnx_path, precision, strongly_typed, workspace_gib)
    profile_batch = batch_profile(batch)
    targets = build_targets(trt, f, compute_capabilities)
    parsed = parse_network(trt, onnx_path, strongly_typed)
    config = builder_config(parsed, f, targets, workspace_gib, strongly_typed)
    add_batch_profile(parsed, config, profile_batch)
    # TensorRT-RTX's timing-cache calls are no-ops that log CUDA errors without a GPU.
    cache_path = None if f.aot else use_timing_cache(
        config, Path(timing_cache) if timing_cache else default_timing_cache(targets))
    plan = serialize_plan(parsed, config, f, plan_path.name, workspace_gib)
    problems, summary = gate_plan(parsed, plan, precision, plan_path.name, allow_drift)
    atomic_write(plan_path, lambda tmp: tmp.write_bytes(plan.data))
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    atomic_write_json(sidecar_path(plan_path), {
        "plan": plan_path.name,
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "precision": precision,
        "strongly_typed": strongly_typed,
        "batch": profile_batch,
        "workspace_gib": workspace_gib,
        **targets,
        "build_seconds": round(plan.seconds, 2),
        "plan_bytes": len(plan.data),
        "layers": summary.to_dict(),
        "plan_gate": {"passed": not problems, "problems": problems},
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    return plan_path


def _engine_layers(trt, flavour_: Flavour, logger, plan: bytes) -> list:
    """The built plan's engine layers: from the builder's log where it reports them (TensorRT-RTX,
    no GPU needed), else from the engine inspector of the deserialised plan (TensorRT, on its GPU)."""
    layers = trt_layers.layers_from_log(logger.layer_messages)
    if layers or flavour_.aot:
        return layers
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise GrmpError(f"{flavour_.label} cannot load the plan it just built: " + "; ".join(logger.errors[-3:]))
    inspector = engine.create_engine_inspector()
    return trt_layers.layers_from_inspector_json(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def _build_with_progress(trt, flavour_: Flavour, builder, network, config, name: str):
    """build_serialized_network with TensorRT's phases as progress bars (a spinner before TensorRT 10)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not hasattr(trt, "IProgressMonitor"):
        with console.status(f"Building {name} with {flavour_.label} {trt.__version__} (minutes on a Jetson)"):
            return builder.build_serialized_network(network, config)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        progress.console.print(f"Building {name} with {flavour_.label} {trt.__version__}")
        config.progress_monitor = _progress_monitor(trt, progress)
        return builder.build_serialized_network(network, config)
