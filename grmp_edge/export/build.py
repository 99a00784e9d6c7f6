"""The Python API of export: a checkpoint in, a checked bundle out (what ``grmp-edge export`` runs).

:func:`build_bundle` reads as the algorithm: load the checkpoint and the calibration / eval images,
export the folded FP32 graph and gate it against PyTorch and TensorRT's parser, build and gate each
FP16 / INT8 variant against FP32, build the TensorRT plans, and publish the bundle with its
manifest. Every file is staged and the bundle appears whole or not at all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from grmp_edge.errors import GrmpError
from grmp_edge.export.formats import EXPORT_FORMATS, PLAN_SOURCES, VARIANTS, plan_name
from grmp_edge.export.gates import GateResult
from grmp_edge.export.options import ExportOptions
from grmp_edge.spec import PRECISIONS, BundleManifest

if TYPE_CHECKING:  # torch and the image stack load only when an export runs
    import numpy as np

    from grmp_edge.export.bundle import BundleWriter
    from grmp_edge.export.calibration import CalibrationData
    from grmp_edge.export.fold import FoldedQualityModel

EVAL_BATCH = 16
CALIB_BATCH = 8


class ExportedBundle(NamedTuple):
    """A published bundle: its folder and its manifest."""

    folder: Path
    manifest: BundleManifest


@dataclass
class _Export:
    """What the steps of one export share: the request, the staged bundle and what each step found."""

    checkpoint: Path
    options: ExportOptions
    bundle: BundleWriter
    progress: _StepProgress
    files: dict[str, Path] = field(default_factory=dict)
    data: CalibrationData | None = None
    folded: FoldedQualityModel | None = None
    reference: np.ndarray | None = None  # the FP32 graph's scores of the eval images
    checker: str | None = None  # which TensorRT parser checks the graphs (None: any that imports)
    tensorrt_checks: dict[str, str] = field(default_factory=dict)
    gates: list[GateResult] = field(default_factory=list)
    infos: dict[str, dict | None] = field(default_factory=dict)

    @property
    def variants(self) -> tuple[str, ...]:
        """The ONNX graphs this export writes (keys of EXPORT_FORMATS), FP32 first."""
        return VARIANTS[self.options.precision]

    @property
    def plans(self) -> list[str]:
        """The precisions whose plans this export builds."""
        if self.options.fmt != "engine":
            return []
        return [p for p in PRECISIONS if PLAN_SOURCES[p] in self.variants
                and self.options.precision in ("all", p)]


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """The checkpoint folder to export: ``checkpoint``, or the latest ``runs/train/*/best``."""
    from grmp_edge.runs import latest_run

    if checkpoint is None:
        return latest_run("train", "best/spec.json") / "best"
    checkpoint = Path(checkpoint)
    if not (checkpoint / "spec.json").is_file():
        raise GrmpError(f"--checkpoint {checkpoint} is not a checkpoint folder (no spec.json)")
    return checkpoint


def build_bundle(checkpoint: str | Path | None = None, options: ExportOptions | None = None, *,
                 console=None, **overrides) -> ExportedBundle:
    """Fold, export, check, quantise and bundle a checkpoint into ``runs/export/<name>/``.

    ``checkpoint`` defaults to the latest training run's best; ``options`` (or keyword ``overrides``
    of its fields, e.g. ``precision="int8", allow_drift=True``) say what to build. Raises GrmpError on
    bad input, a failed parity gate or TensorRT check, and GateFailed on accuracy drift unless
    ``allow_drift``. ``force`` replaces an existing bundle ``name`` only once the new one is complete.
    Progress goes to ``console`` (a rich Console; stdout by default); print the result with
    :func:`grmp_edge.export.summary.print_summary`.
    """
    from rich.console import Console

    from grmp_edge.errors import require

    options = (options or ExportOptions()).with_overrides(overrides)
    options.check(options.fmt)
    if options.fmt == "triton":
        raise GrmpError("a Triton repository is made from an exported bundle: "
                        "grmp_edge.export.triton.export_repository (grmp-edge export --format triton)")
    console = console or Console()
    plan_flavour, _ = options.plan_target()
    if options.fmt == "engine":
        require(plan_flavour.module, plan_flavour.extra)  # fail before minutes of work, not after
    checkpoint = resolve_checkpoint(checkpoint)
    replacing = _check_name(options)
    with _StepProgress(console, 4 + 2 * (len(VARIANTS[options.precision]) - 1)) as progress:
        folder, manifest = _build(checkpoint, options, replacing, progress)
    return ExportedBundle(folder, manifest)


def _check_name(options: ExportOptions) -> bool:
    """Whether the export replaces the bundle ``options.name``; GrmpError if it may not."""
    from grmp_edge.runs import name_taken, runs_root

    replacing = bool(options.name) and name_taken("export", options.name)
    if replacing and not options.force:
        raise GrmpError(f"bundle {runs_root() / 'export' / options.name} already exists; pick another --name, "
                        "or pass --force to replace it")
    return replacing


class _StepProgress:
    """A rich progress bar over the export's steps."""

    def __init__(self, console, steps: int):
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
        self.console = console
        self.progress = Progress(*columns, console=console)
        self.task = self.progress.add_task("loading checkpoint", total=steps)

    def __enter__(self) -> "_StepProgress":
        self.progress.start()
        return self

    def advance(self, description: str) -> None:
        """Move the bar on to the step ``description``."""
        self.progress.advance(self.task)
        self.progress.update(self.task, description=description)

    def stop(self) -> None:
        """Stop drawing: the TensorRT builder draws its own bars, and rich allows one live display."""
        self.progress.stop()

    def __exit__(self, *exc) -> None:
        self.progress.update(self.task, description="done")
        self.progress.stop()


def _build(checkpoint: Path, options: ExportOptions, replacing: bool,
           progress: _StepProgress) -> tuple[Path, BundleManifest]:
    """Every step of the export, into a staged bundle published at the end."""
    from grmp_edge.artifacts import replace_folder
    from grmp_edge.export.bundle import BundleWriter
    from grmp_edge.runs import new_run_dir, runs_root
    from grmp_edge.train.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint)
    # A replacement is built under a hidden name, so the old bundle serves until the new one is whole.
    folder = new_run_dir("export", f".{options.name}.new-{os.getpid()}" if replacing else options.name)
    with BundleWriter(folder, model.spec) as bundle:
        state = _Export(checkpoint, options, bundle, progress)
        bundle.source = {"checkpoint": str(Path(checkpoint).resolve())}
        _read_images(state)
        _export_fp32(state, model)
        _gate_fp32(state)
        for key in state.variants[1:]:
            _build_variant(state, key)
        _record_gates(state)
        _build_plans(state)
        progress.advance("writing bundle")
        manifest = bundle.commit()
    if replacing:
        folder = replace_folder(folder, runs_root() / "export" / options.name)
    return folder, manifest


def _read_images(state: _Export) -> None:
    """The calibration and eval crops (from ``calib``, else the training run's manifest, else the
    bundled photos), recorded in the manifest."""
    from grmp_edge.export.calibration import load_calibration, training_manifest

    state.progress.advance("reading calibration / eval images")
    options = state.options
    calib = options.calib if options.calib is not None else training_manifest(state.checkpoint)
    state.data = load_calibration(calib, state.bundle.model.preprocess, options.num_calib, options.num_eval,
                                  options.seed)
    method = options.calib_method if "int8_qdq" in state.variants else None
    state.bundle.calibration = {**state.data.summary(), "method": method}


def _export_fp32(state: _Export, model) -> None:
    """Fold the prompts into constants and export the FP32 graph, the reference of every gate."""
    from grmp_edge.export.fold import fold_prompts
    from grmp_edge.export.onnx_export import export_onnx

    state.progress.advance("exporting FP32 ONNX")
    state.folded = fold_prompts(model, embedding=state.options.embedding)
    state.files = {key: state.bundle.path(EXPORT_FORMATS[key].file) for key in state.variants}
    export_onnx(state.folded, state.files["fp32"], opset=state.options.opset, simplify=state.options.simplify,
                metadata={"grmp_edge.checkpoint": str(state.checkpoint)})


def _gate_fp32(state: _Export) -> None:
    """The FP32 graph against PyTorch on the eval images, and against TensorRT's parser."""
    from grmp_edge.export.gates import run_onnx
    from grmp_edge.export.onnx_export import parity_gate

    state.progress.advance("FP32 parity gate + TensorRT check")
    fp32 = state.files["fp32"]
    state.reference = run_onnx(fp32, state.data.eval.batches(EVAL_BATCH))
    parity = parity_gate(state.folded, fp32, state.data.eval.images, onnx_scores=state.reference)
    state.bundle.gates["parity_fp32"] = parity.to_dict()
    # The plans' own parser when building them, else any TensorRT here, else the operator table.
    state.checker = state.options.plan_target()[0].name if state.options.fmt == "engine" else None
    _check_tensorrt(state, "fp32")


def _check_tensorrt(state: _Export, key: str) -> None:
    from grmp_edge.export.trt_support import gate_tensorrt_support

    path = state.files[key]
    state.tensorrt_checks[path.name] = gate_tensorrt_support(path, EXPORT_FORMATS[key].file, state.checker)


def _build_variant(state: _Export, key: str) -> None:
    """Write the FP16 or INT8 variant ``key`` from the FP32 graph and gate it against FP32."""
    from grmp_edge.export.gates import GATE_DEFAULTS, agreement_gate, run_onnx

    spec = EXPORT_FORMATS[key]
    state.progress.advance(f"building {spec.title}")
    state.infos[key] = _write_variant(state, key)
    state.progress.advance(f"gating {spec.title}")
    if "tensorrt" in spec.targets:
        _check_tensorrt(state, key)
    scores = run_onnx(state.files[key], state.data.eval.batches(EVAL_BATCH))
    state.gates.append(agreement_gate(key, state.reference, scores, labels=state.data.eval.labels,
                                      min_srcc=GATE_DEFAULTS[spec.precision]))


def _write_variant(state: _Export, key: str) -> dict | None:
    """Write variant ``key``; returns its manifest info (or None)."""
    files, data = state.files, state.data
    if key == "fp16":
        from grmp_edge.export.fp16 import to_fp16

        to_fp16(files["fp32"], files[key])
        return None
    from grmp_edge.export.int8 import quantize_int8_cpu, quantize_int8_qdq

    calib_batches = data.calib.batches(CALIB_BATCH)
    if key == "int8_qdq":
        quantize_int8_qdq(files["fp32"], files[key], calib_batches, method=state.options.calib_method)
        return {"calibration_method": state.options.calib_method}
    # The export's own gate decides below; here the fastest form within the gate (or the closest) is kept.
    _, report = quantize_int8_cpu(files["fp32"], files[key], calib_batches, data.eval.batches(EVAL_BATCH),
                                  labels=data.eval.labels, allow_drift=True)
    return report.to_dict()


def _record_gates(state: _Export) -> None:
    """Record every gate and graph in the manifest; GateFailed on drift unless ``allow_drift``."""
    from grmp_edge.export.gates import enforce_gates, print_gates

    bundle = state.bundle
    for result in state.gates:
        bundle.gates[result.name] = result.to_dict()
    bundle.gates["tensorrt_support"] = {file: f"ok ({how})" for file, how in state.tensorrt_checks.items()}
    if not state.options.allow_drift and not all(r.passed for r in state.gates):
        print_gates(state.gates, state.progress.console)
    enforce_gates(state.gates, allow_drift=state.options.allow_drift)
    for key in state.variants:
        spec = EXPORT_FORMATS[key]
        bundle.add(spec.file, spec.precision, spec.targets, info=state.infos.get(key))


def _build_plans(state: _Export) -> None:
    """Build the TensorRT plan of each precision from the graph of that precision."""
    from grmp_edge.export.plans import build_plan

    plan_flavour, _ = state.options.plan_target()
    console = state.progress.console
    if state.plans:
        state.progress.stop()
    for precision in state.plans:
        source = state.files[PLAN_SOURCES[precision]]
        console.print(f"building the {plan_flavour.label} {precision} plan from {source.name}")
        plan = state.bundle.path(plan_name(precision, plan_flavour.name))
        for entry in build_plan(source, plan, precision, state.options, state.bundle.model.preprocess.crops):
            state.bundle.add(entry.path, entry.precision, entry.targets, fmt=entry.format, info=entry.info)
