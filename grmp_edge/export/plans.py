"""TensorRT plans of a bundle's graphs, as bundle entries: built with an export, or later on the device.

:func:`build_plan` builds one plan and its sidecar beside an ONNX graph and returns their bundle
entries; :func:`build_plans_from_onnx` does that for a graph already in a bundle (on a Jetson, with
TensorRT and without torch) and adds the entries to that bundle's manifest.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from grmp_edge.errors import GrmpError
from grmp_edge.export.formats import plan_name
from grmp_edge.export.options import ExportOptions
from grmp_edge.spec import PRECISIONS, BundleFile


@dataclass(frozen=True)
class BuiltPlan:
    """A plan built from an ONNX graph: where it and its sidecar are, its precision and TensorRT
    flavour, and the bundle whose manifest now lists it (None for a graph outside a bundle)."""

    plan: Path
    sidecar: Path
    precision: str
    flavour: str
    bundle: Path | None


def build_plan(onnx_path: Path, plan_path: Path, precision: str, options: ExportOptions,
               crops: int = 1) -> list[BundleFile]:
    """Build one TensorRT plan (and its sidecar) from ``onnx_path``; returns their bundle entries,
    sidecar first.

    The flavour, targets, batch profile, workspace and ``allow_drift`` come from ``options``; the
    profile's defaults follow ``crops``, the model's crop plan (:meth:`ExportOptions.batch_profile`). The
    plan's entry lists its flavour, TensorRT version, targets and layer precisions."""
    from grmp_edge.artifacts import sha256_file
    from grmp_edge.export.tensorrt_build import build_engine, load_sidecar, sidecar_path
    from grmp_edge.export.trt_layers import SUMMARY_COUNTS

    plan_flavour, targets = options.plan_target()
    plan = build_engine(onnx_path, plan_path, precision, batch=options.batch_profile(crops),
                        workspace_gib=options.workspace_gib, flavour_name=plan_flavour.name,
                        compute_capabilities=targets, allow_drift=options.allow_drift)
    sidecar = sidecar_path(plan)
    facts = load_sidecar(plan)
    return [
        BundleFile(path=sidecar.name, sha256=sha256_file(sidecar), precision=precision, format="json"),
        BundleFile(path=plan.name, sha256=sha256_file(plan), precision=precision, format="plan",
                   targets=[facts["flavour"]],
                   info={"sidecar": sidecar.name, "source": onnx_path.name, "tensorrt_version": facts["tensorrt_version"],
                         "compute_capabilities": facts["compute_capabilities"],
                         "layers": {k: facts["layers"][k] for k in SUMMARY_COUNTS}}),
    ]


def _bundle_entry(onnx_path: Path):
    """(loaded bundle, its entry of ``onnx_path``) when the file's folder is a bundle listing it, else None."""
    from grmp_edge.runtime.bundle import MANIFEST_NAME, load_bundle

    if not (onnx_path.parent / MANIFEST_NAME).is_file():
        return None
    bundle = load_bundle(onnx_path.parent)
    listed = next((f for f in bundle.manifest.files if f.path == onnx_path.name and f.format == "onnx"), None)
    return (bundle, listed) if listed is not None else None


def _graph_precision(onnx_path: Path, listed: BundleFile | None, precision: str | None) -> str:
    """The precision of the graph: its bundle's, which ``precision`` may only confirm, else ``precision``."""
    if listed is not None:
        if precision not in (None, listed.precision):
            raise GrmpError(f"{onnx_path.name} is the bundle's {listed.precision} graph, not {precision}")
        return listed.precision
    if precision not in PRECISIONS:
        raise GrmpError(f"{onnx_path} is not listed in a bundle: give its --precision (fp32, fp16 or int8)")
    return precision


def build_plans_from_onnx(onnx_path: str | Path, precision: str | None = None, options: ExportOptions | None = None,
                          *, console=None, **overrides) -> BuiltPlan:
    """Build a TensorRT plan from an ONNX file on this device, without torch (``--engine --onnx``).

    ``options`` (or keyword ``overrides`` of its fields) gives the plan settings: ``trt``, ``sm``,
    ``batch_opt``, ``batch_max``, ``workspace_gib`` and ``allow_drift``; other fields do not apply.
    When the file belongs to a bundle (its folder holds a ``manifest.json`` listing it), its sha256 is
    checked, the precision is the manifest's, the profile follows the bundle's crop plan, and the plan
    and sidecar are added to that bundle; otherwise ``precision`` is required, the profile is for one
    crop per frame and the plan is written beside the file.
    """
    from rich.console import Console

    from grmp_edge.errors import require
    from grmp_edge.export.bundle import add_to_bundle

    console = console or Console()
    options = (options or ExportOptions()).with_overrides(overrides)
    options.check("engine --onnx")
    plan_flavour, _ = options.plan_target()
    require(plan_flavour.module, plan_flavour.extra)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise GrmpError(f"--onnx file not found: {onnx_path}")
    found = _bundle_entry(onnx_path)
    if found is not None:
        found[0].verify(found[1])
    precision = _graph_precision(onnx_path, found[1] if found else None, precision)
    console.print(f"building the {plan_flavour.label} {precision} plan from {onnx_path}")
    crops = found[0].preprocess.crops if found is not None else 1
    entries = build_plan(onnx_path, onnx_path.with_name(plan_name(precision, plan_flavour.name)), precision, options,
                         crops)
    if found is not None:
        add_to_bundle(onnx_path.parent, entries)
    return BuiltPlan(plan=onnx_path.with_name(entries[1].path), sidecar=onnx_path.with_name(entries[0].path),
                     precision=precision, flavour=plan_flavour.name,
                     bundle=onnx_path.parent if found is not None else None)
