"""``grmp-edge export``: compile a checkpoint into a bundle of ONNX graphs (and TensorRT plans).

One table, :data:`EXPORT_FORMATS`, says what each format/precision writes, for which backends, and
which arguments apply; it is printed in ``--help`` and the README. Heavy imports stay inside the
functions so that ``grmp-edge --help`` is instant.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer

from grmp_edge.errors import GrmpError

PRECISIONS = ("fp32", "fp16", "int8", "all")
FORMATS = ("onnx", "engine", "triton")
MIN_NUM_CALIB = 16
MIN_NUM_EVAL = 64  # the parity gate's floor
EVAL_BATCH = 16
CALIB_BATCH = 8

# What each output is, for which backends, and which arguments shape it beyond the common ones
# (COMMON_ARGUMENTS). ``file`` is the name inside the bundle.
EXPORT_FORMATS: dict[str, dict[str, Any]] = {
    "fp32": dict(title="ONNX FP32", format="onnx", precision="fp32", file="model_fp32.onnx",
                 targets=("onnxruntime", "tensorrt"), arguments=()),
    "fp16": dict(title="ONNX FP16", format="onnx", precision="fp16", file="model_fp16.onnx",
                 targets=("onnxruntime-gpu", "tensorrt"), arguments=("allow_drift",)),
    "int8_qdq": dict(title="ONNX INT8 QDQ", format="onnx", precision="int8", file="model_int8_qdq.onnx",
                     targets=("tensorrt", "onnxruntime-gpu"),
                     arguments=("calib", "calib_method", "num_calib", "allow_drift")),
    "int8_cpu": dict(title="ONNX INT8 CPU", format="onnx", precision="int8", file="model_int8_cpu.onnx",
                     targets=("onnxruntime-cpu",), arguments=("calib", "num_calib", "allow_drift")),
    "plan": dict(title="TensorRT plan", format="engine", precision="any", file="model_<precision>.plan",
                 targets=("tensorrt",), arguments=("batch_opt", "batch_max", "workspace_gib")),
    "rtx_plan": dict(title="TensorRT-RTX plan", format="engine", precision="any", file="model_<precision>_rtx.plan",
                     targets=("tensorrt-rtx",), arguments=("trt", "sm", "batch_opt", "batch_max", "workspace_gib")),
    "triton": dict(title="Triton model repository", format="triton", precision="any",
                   file="runs/triton/<name>/grmp_iqa[_trt]/", targets=("triton",),
                   arguments=("bundle", "device", "batch_max")),
}
COMMON_ARGUMENTS = ("checkpoint", "name", "force", "opset", "simplify", "embedding", "num_eval", "seed")
# --precision -> the ONNX variants it builds (FP32 is always built: it is the reference).
VARIANTS = {"fp32": ("fp32",), "fp16": ("fp32", "fp16"), "int8": ("fp32", "int8_qdq", "int8_cpu"),
            "all": ("fp32", "fp16", "int8_qdq", "int8_cpu")}
# Plans are built from the graph of their precision that targets TensorRT.
PLAN_SOURCES = {"fp32": "fp32", "fp16": "fp16", "int8": "int8_qdq"}


def formats_table() -> str:
    """:data:`EXPORT_FORMATS` as a plain-text table (for --help and the README)."""
    rows = [("File", "--format", "--precision", "Targets", "Arguments")]
    for key, spec in EXPORT_FORMATS.items():
        precision = spec["precision"] + ("*" if key == "fp32" else "")
        rows.append((spec["file"], spec["format"], precision, ", ".join(spec["targets"]),
                     ", ".join(a.replace("_", "-") for a in spec["arguments"]) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("* FP32 is always built: it is the reference of every gate. Plans are built from the")
    lines.append("  FP32, FP16 or INT8 QDQ graph of their precision.")
    lines.append("All outputs: " + ", ".join(a.replace("_", "-") for a in COMMON_ARGUMENTS) + ".")
    return "\n".join(lines)


MAX_GATE_IMAGES = 100_000
MAX_PROFILE_BATCH = 4096
MAX_WORKSPACE_GIB = 1024


def _check_options(precision: str, fmt: str, calib_method: str, num_calib: int, num_eval: int, opset: int,
                   batch_opt: int, batch_max: int, workspace_gib: float) -> None:
    """One-line GrmpErrors for option values no export can use."""
    from grmp_edge.export.int8 import CALIBRATION_METHODS
    from grmp_edge.export.onnx_export import check_opset
    from grmp_edge.limits import check_range

    if precision not in PRECISIONS:
        raise GrmpError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if fmt not in FORMATS:
        raise GrmpError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if calib_method not in CALIBRATION_METHODS:
        raise GrmpError(f"--calib-method must be one of {', '.join(CALIBRATION_METHODS)}, got {calib_method!r}")
    if num_calib < MIN_NUM_CALIB:
        raise GrmpError(f"--num-calib must be >= {MIN_NUM_CALIB}, got {num_calib}")
    if num_eval < MIN_NUM_EVAL:
        raise GrmpError(f"--num-eval must be >= {MIN_NUM_EVAL} (the parity gate's floor), got {num_eval}")
    # Calibration and eval crops are held in memory together; more than this adds nothing to a gate.
    check_range("--num-calib", num_calib, high=MAX_GATE_IMAGES)
    check_range("--num-eval", num_eval, high=MAX_GATE_IMAGES)
    check_opset(opset)
    if not 1 <= batch_opt <= batch_max:
        raise GrmpError(f"need 1 <= --batch-opt <= --batch-max, got {batch_opt} and {batch_max}")
    check_range("--batch-max", batch_max, high=MAX_PROFILE_BATCH)
    check_range("--workspace-gib", workspace_gib, high=MAX_WORKSPACE_GIB)
    if workspace_gib <= 0:
        raise GrmpError(f"--workspace-gib must be > 0, got {workspace_gib}")


def _resolve_checkpoint(checkpoint: Path | None) -> Path:
    from grmp_edge.runs import latest_run

    if checkpoint is None:
        return latest_run("train", "best/spec.json") / "best"
    checkpoint = Path(checkpoint)  # the Python API accepts str paths too
    if not (checkpoint / "spec.json").is_file():
        raise GrmpError(f"--checkpoint {checkpoint} is not a checkpoint folder (no spec.json)")
    return checkpoint


def run_command(bundle: Path, precision: str, backend: str | None = None) -> str:
    """The ``grmp-edge run`` command line that serves ``bundle`` at ``precision`` (on ``backend``)."""
    return f"grmp-edge run --bundle {bundle}" + (f" --backend {backend}" if backend else "") + f" --precision {precision}"


def export_bundle(checkpoint: Path | None = None, precision: str = "fp16", fmt: str = "onnx",
                  calib: Path | None = None, calib_method: str = "minmax", num_calib: int = 64,
                  num_eval: int = 64, opset: int = 17, embedding: bool = False, simplify: bool = True,
                  allow_drift: bool = False, batch_opt: int = 1, batch_max: int = 8,
                  workspace_gib: float = 1.0, name: str | None = None, seed: int = 0, console=None,
                  force: bool = False, trt: str = "tensorrt", sm: str | None = None):
    """Fold, export, check, quantise and bundle a checkpoint; returns ``(bundle folder, manifest)``.

    The Python API behind ``grmp-edge export`` (same arguments). Raises GrmpError on bad input, a
    failed parity gate or TensorRT check, and GateFailed on accuracy drift unless ``allow_drift``.
    ``force`` replaces an existing bundle ``name``, only once the new one is complete. ``trt``
    (``tensorrt`` or ``rtx``) picks the TensorRT flavour of the plans and ``sm`` (``"86,89,120"``)
    the GPUs a TensorRT-RTX plan is built for.
    """
    _check_options(precision, fmt, calib_method, num_calib, num_eval, opset, batch_opt, batch_max, workspace_gib)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from grmp_edge.errors import require

    console = console or Console()
    plan_flavour, targets = _plan_target(trt, sm)
    if fmt == "engine":
        require(plan_flavour.module, plan_flavour.extra)  # fail before minutes of work, not after
    from grmp_edge.export import gates as gate_lib
    from grmp_edge.export.bundle import BundleWriter
    from grmp_edge.export.calibration import load_calibration, training_manifest
    from grmp_edge.export.fold import fold_prompts
    from grmp_edge.export.onnx_export import export_onnx, parity_gate
    from grmp_edge.export.trt_support import gate_tensorrt_support
    from grmp_edge.artifacts import replace_folder
    from grmp_edge.runs import name_taken, new_run_dir, runs_root
    from grmp_edge.train.model import load_checkpoint

    checkpoint = _resolve_checkpoint(checkpoint)
    if calib is None:
        calib = training_manifest(checkpoint)
    variants = VARIANTS[precision]
    plans = [p for p in ("fp32", "fp16", "int8") if fmt == "engine" and PLAN_SOURCES[p] in variants
             and (precision == "all" or p == precision)]
    replacing = bool(name) and name_taken("export", name)
    if replacing and not force:
        raise GrmpError(f"bundle {runs_root() / 'export' / name} already exists; pick another --name, "
                        "or pass --force to replace it")
    steps = 4 + 2 * (len(variants) - 1)
    gate_results: list[dict] = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("loading checkpoint", total=steps)

        def step(description: str) -> None:
            progress.advance(task)
            progress.update(task, description=description)

        model = load_checkpoint(checkpoint)
        # A replacement is built under a hidden name, so the old bundle serves until the new one is whole.
        out_dir = new_run_dir("export", f".{name}.new-{os.getpid()}" if replacing else name)
        with BundleWriter(out_dir, model.spec) as bundle:
            bundle.source = {"checkpoint": str(Path(checkpoint).resolve())}
            step("reading calibration / eval images")
            data = load_calibration(calib, model.spec.preprocess, num_calib, num_eval, seed)
            bundle.calibration = {**data.summary(), "method": calib_method if "int8_qdq" in variants else None}
            eval_batches = data.eval.batches(EVAL_BATCH)

            step("exporting FP32 ONNX")
            folded = fold_prompts(model, embedding=embedding)
            files = {key: bundle.path(EXPORT_FORMATS[key]["file"]) for key in variants}
            export_onnx(folded, files["fp32"], opset=opset, simplify=simplify,
                        metadata={"grmp_edge.checkpoint": str(checkpoint)})
            step("FP32 parity gate + TensorRT check")
            reference = gate_lib.run_onnx(files["fp32"], eval_batches)
            bundle.gates["parity_fp32"] = parity_gate(folded, files["fp32"], data.eval.images, onnx_scores=reference)
            # The plans' own parser when building them, else any TensorRT here, else the operator table.
            checker = plan_flavour.name if fmt == "engine" else None
            trt_checks = {files["fp32"].name: gate_tensorrt_support(files["fp32"], EXPORT_FORMATS["fp32"]["file"], checker)}
            infos: dict[str, dict | None] = {}
            for key in variants[1:]:
                spec = EXPORT_FORMATS[key]
                step(f"building {spec['title']}")
                infos[key] = _build_variant(key, files, data, calib_method)
                step(f"gating {spec['title']}")
                if "tensorrt" in spec["targets"]:
                    trt_checks[files[key].name] = gate_tensorrt_support(files[key], spec["file"], checker)
                scores = gate_lib.run_onnx(files[key], eval_batches)
                gate_results.append(gate_lib.agreement_gate(key, reference, scores, labels=data.eval.labels,
                                                            min_srcc=gate_lib.GATE_DEFAULTS[spec["precision"]]))
            for result in gate_results:
                bundle.gates[result["name"]] = result
            bundle.gates["tensorrt_support"] = {file: f"ok ({how})" for file, how in trt_checks.items()}
            if not allow_drift and not all(r["passed"] for r in gate_results):
                gate_lib.print_gates(gate_results, progress.console)
            gate_lib.enforce_gates(gate_results, allow_drift=allow_drift)
            for key in variants:
                spec = EXPORT_FORMATS[key]
                bundle.add(spec["file"], spec["precision"], spec["targets"], info=infos.get(key))
            if plans:
                progress.stop()  # the TensorRT builder draws its own bars; rich allows one live display
            for plan_precision in plans:
                source = files[PLAN_SOURCES[plan_precision]]
                console.print(f"building the {plan_flavour.label} {plan_precision} plan from {source.name}")
                for entry in _build_plan(source, bundle.path(plan_name(plan_precision, plan_flavour.name)),
                                         plan_precision, batch_opt, batch_max, workspace_gib, plan_flavour.name,
                                         targets, allow_drift):
                    bundle.add(entry.path, entry.precision, entry.targets, fmt=entry.format, info=entry.info)
            step("writing bundle")
            manifest = bundle.commit()
        if replacing:
            out_dir = replace_folder(out_dir, runs_root() / "export" / name)
        progress.update(task, description="done")
    _print_summary(console, out_dir, manifest, gate_results, variants)
    return out_dir, manifest


def _build_variant(key: str, files: dict[str, Path], data, calib_method: str) -> dict | None:
    """Write the FP16 / INT8 variant ``key`` from the FP32 graph; returns its manifest info (or None)."""
    if key == "fp16":
        from grmp_edge.export.fp16 import to_fp16

        to_fp16(files["fp32"], files[key])
        return None
    from grmp_edge.export.int8 import quantize_int8_cpu, quantize_int8_qdq

    calib_batches = data.calib.batches(CALIB_BATCH)
    if key == "int8_qdq":
        quantize_int8_qdq(files["fp32"], files[key], calib_batches, method=calib_method)
        return {"calibration_method": calib_method}
    # The export's own gate decides below; here the fastest form within the gate (or the closest) is kept.
    _, info = quantize_int8_cpu(files["fp32"], files[key], calib_batches, data.eval.batches(EVAL_BATCH),
                                labels=data.eval.labels, allow_drift=True)
    return info


def _plan_target(trt: str, sm: str | None):
    """(flavour, compute capabilities or None) of ``--trt`` and ``--sm``; one-line GrmpErrors."""
    from grmp_edge.runtime.plan_compat import flavour, parse_sm_list

    plan_flavour = flavour(trt)
    if sm is not None and not plan_flavour.aot:
        raise GrmpError(f"--sm picks the GPUs of a TensorRT-RTX plan (--trt rtx); {plan_flavour.label} "
                        "builds for the GPU it runs on")
    return plan_flavour, (parse_sm_list(sm) if sm is not None else None)


def _build_plan(onnx_path: Path, plan_path: Path, precision: str, batch_opt: int, batch_max: int,
                workspace_gib: float, flavour_name: str = "tensorrt", targets: list[str] | None = None,
                allow_drift: bool = False) -> list:
    """Build one TensorRT plan (and its sidecar) from ``onnx_path``; returns their bundle entries.

    TensorRT's builder reuses its timing cache (per version and GPU) across builds; a TensorRT-RTX
    plan is built for ``targets`` (compute capabilities). The plan's bundle entry lists its flavour,
    version, targets and layer precisions."""
    from grmp_edge.artifacts import sha256_file
    from grmp_edge.export.tensorrt_build import build_engine, load_sidecar, sidecar_path
    from grmp_edge.spec import BundleFile

    plan = build_engine(onnx_path, plan_path, precision, batch=(1, batch_opt, batch_max), workspace_gib=workspace_gib,
                        flavour_name=flavour_name, compute_capabilities=targets, allow_drift=allow_drift)
    sidecar = sidecar_path(plan)
    facts = load_sidecar(plan)
    return [
        BundleFile(path=sidecar.name, sha256=sha256_file(sidecar), precision=precision, format="json"),
        BundleFile(path=plan.name, sha256=sha256_file(plan), precision=precision, format="plan",
                   targets=[facts["flavour"]],
                   info={"sidecar": sidecar.name, "source": onnx_path.name, "tensorrt_version": facts["tensorrt_version"],
                         "compute_capabilities": facts["compute_capabilities"],
                         "layers": {k: facts["layers"][k] for k in ("layers", "gemm", "layernorm", "softmax")}}),
    ]


def plan_name(precision: str, flavour_name: str = "tensorrt") -> str:
    """The bundle file name of the plan of ``precision`` for a TensorRT flavour."""
    key = "rtx_plan" if flavour_name == "tensorrt-rtx" else "plan"
    return EXPORT_FORMATS[key]["file"].replace("<precision>", precision)


def build_plans_from_onnx(onnx_path: Path, precision: str | None = None, batch_opt: int = 1, batch_max: int = 8,
                          workspace_gib: float = 1.0, console=None, trt: str = "tensorrt", sm: str | None = None,
                          allow_drift: bool = False) -> Path:
    """Build a TensorRT plan from an ONNX file on this device, without torch (``--engine --onnx``;
    ``trt`` and ``sm`` as in :func:`export_bundle`).

    When the file belongs to a bundle (its folder holds a ``manifest.json`` listing it), its sha256 is
    checked, the precision is the manifest's, and the plan and sidecar are added to that bundle;
    otherwise ``precision`` is required and the plan is written beside the file. Returns the plan path.
    """
    from rich.console import Console

    from grmp_edge.errors import require
    from grmp_edge.export.bundle import add_to_bundle
    from grmp_edge.runtime.bundle import MANIFEST_NAME, load_bundle

    console = console or Console()
    plan_flavour, targets = _plan_target(trt, sm)
    require(plan_flavour.module, plan_flavour.extra)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise GrmpError(f"--onnx file not found: {onnx_path}")
    listed = None
    if (onnx_path.parent / MANIFEST_NAME).is_file():
        bundle = load_bundle(onnx_path.parent)
        listed = next((f for f in bundle.manifest.files if f.path == onnx_path.name and f.format == "onnx"), None)
    if listed is not None:
        bundle.verify(listed)
        if precision not in (None, listed.precision):
            raise GrmpError(f"{onnx_path.name} is the bundle's {listed.precision} graph, not {precision}")
        precision = listed.precision
    elif precision not in PRECISIONS[:3]:
        raise GrmpError(f"{onnx_path} is not listed in a bundle: give its --precision (fp32, fp16 or int8)")
    console.print(f"building the {plan_flavour.label} {precision} plan from {onnx_path}")
    entries = _build_plan(onnx_path, onnx_path.with_name(plan_name(precision, plan_flavour.name)), precision,
                          batch_opt, batch_max, workspace_gib, plan_flavour.name, targets, allow_drift)
    plan = onnx_path.with_name(entries[-1].path)
    if listed is None:
        console.print(f"wrote {plan} and {entries[0].path} (not part of a bundle)")
        return plan
    add_to_bundle(onnx_path.parent, entries)
    console.print(f"added {plan.name} to the bundle; run it with:")
    console.print(f"  {run_command(onnx_path.parent, precision, plan_flavour.name)}", soft_wrap=True, highlight=False)
    return plan


def _print_summary(console, out_dir: Path, manifest, gate_results: list[dict], variants) -> None:
    from rich.table import Table

    from grmp_edge.export.gates import print_gates

    table = Table(title=f"Bundle {out_dir}")
    for column in ("file", "precision", "format", "MB", "targets"):
        table.add_column(column)
    for f in manifest.files:
        size = (out_dir / f.path).stat().st_size / 1e6
        table.add_row(f.path, f.precision, f.format, f"{size:.2f}", ", ".join(f.targets) or "-")
    console.print(table)
    parity = manifest.gates["parity_fp32"]
    console.print(f"FP32 parity vs PyTorch on {parity['n']} images: max |delta score| {parity['max_abs']:.2e} "
                  f"(<= {parity['tolerance']:g}); TensorRT check: "
                  + ", ".join(f"{file} {how}" for file, how in manifest.gates["tensorrt_support"].items()))
    if gate_results:
        print_gates(gate_results, console)
    precisions = [p for p in ("fp16", "int8", "fp32") if any(EXPORT_FORMATS[k]["precision"] == p for k in variants)]
    console.print("Run it with:")
    for p in precisions:
        console.print(f"  {run_command(out_dir, p)}", soft_wrap=True, highlight=False)
    plans = [f for f in manifest.files if f.format == "plan"]
    for f in plans:
        console.print(f"  {run_command(out_dir, f.precision, f.targets[0])}", soft_wrap=True, highlight=False)
    if plans:
        from grmp_edge.export.trt_layers import precision_cell

        layers = Table(title="What each plan computes (engine layers per precision)")
        for column in ("plan", "targets", "layers", "GEMMs", "LayerNorms", "Softmaxes"):
            layers.add_column(column)
        for f in plans:
            info = f.info.get("layers", {})
            layers.add_row(f.path, ", ".join(f.info.get("compute_capabilities", [])),
                           *(precision_cell(info.get(k)) for k in ("layers", "gemm", "layernorm", "softmax")))
        console.print(layers)


def export(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint folder (spec.json + model.safetensors). Default: the latest runs/train/*/best."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, fp16, int8 or all (default fp16). FP32 is always built as the reference. With --onnx: the file's precision (default: the bundle's)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx, engine to also build TensorRT plans (needs tensorrt, or tensorrt-rtx with --trt rtx), or triton: a Triton model repository from an exported bundle (runs/triton/<name>/)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="--format triton: the bundle to serve. Default: the newest runs/export/*."),
    device: str = typer.Option("cpu", "--device", help="--format triton: cpu or gpu, where the ONNX model's instances run (and so which ONNX file: fp32 on cpu, fp16 on gpu unless --precision)."),
    engine: bool = typer.Option(False, "--engine", help="Same as --format engine."),
    trt: str = typer.Option("tensorrt", "--trt", help="TensorRT flavour of the plans: tensorrt (JetPack / data-centre TensorRT 10-11, built on the GPU that runs it) or rtx (TensorRT for RTX: built here for the --sm GPUs, no GPU needed)."),
    sm: Optional[str] = typer.Option(None, "--sm", help="--trt rtx: compute capabilities the plans cover, e.g. 86,89,120 (RTX 30, 40, 50 series; the default). One plan serves them all."),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="With --engine: build the plan from this ONNX file of a bundle on this device (no checkpoint, no torch) and add it to that bundle."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration/eval images: a folder or a manifest .csv. Default: the training run's manifest, else the bundled sample photos."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="INT8 QDQ calibration: minmax, entropy or percentile."),
    num_calib: int = typer.Option(64, "--num-calib", help=f"Calibration crops (>= {MIN_NUM_CALIB})."),
    num_eval: int = typer.Option(64, "--num-eval", help=f"Eval crops for the parity and accuracy gates (>= {MIN_NUM_EVAL})."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset, 13..20 (17: LayerNormalization as one node)."),
    embedding: bool = typer.Option(False, "--embedding", help="Also output the (N, D) image embedding."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Simplify the graph with onnxslim."),
    allow_drift: bool = typer.Option(False, "--allow-drift", help="Keep FP16/INT8 files that fail their accuracy gate."),
    batch_opt: int = typer.Option(1, "--batch-opt", help="TensorRT profile: optimal batch."),
    batch_max: int = typer.Option(8, "--batch-max", help="TensorRT profile: maximum batch."),
    workspace_gib: float = typer.Option(1.0, "--workspace-gib", help="TensorRT builder workspace limit in GiB."),
    name: Optional[str] = typer.Option(None, "--name", help="Bundle folder name under runs/export (default exp, exp2, ...)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the calibration/eval image sample."),
    force: bool = typer.Option(False, "--force", help="Replace the bundle --name if it exists (the old one stays until the new one is complete)."),
) -> None:
    """Compile a checkpoint into a bundle (runs/export/<name>/): ONNX graphs, gates, TensorRT plans."""
    fmt = "engine" if engine else fmt
    if (trt != "tensorrt" or sm is not None) and fmt != "engine":
        raise GrmpError("--trt and --sm choose the TensorRT plans: add --engine")
    if fmt == "triton":
        from grmp_edge.export.triton import export_repository

        export_repository(bundle, device, precision or "auto", batch_max, name)
        return
    if onnx is not None:
        if fmt != "engine":
            raise GrmpError("--onnx builds a TensorRT plan from an exported graph: add --engine")
        if checkpoint is not None:
            raise GrmpError("give either --onnx (build a plan from a bundle's graph) or --checkpoint, not both")
        _check_options(precision or "fp16", fmt, calib_method, num_calib, num_eval, opset, batch_opt, batch_max,
                       workspace_gib)
        build_plans_from_onnx(onnx, precision, batch_opt, batch_max, workspace_gib, trt=trt, sm=sm,
                              allow_drift=allow_drift)
        return
    export_bundle(checkpoint, precision or "fp16", fmt, calib, calib_method, num_calib, num_eval, opset, embedding,
                  simplify, allow_drift, batch_opt, batch_max, workspace_gib, name, seed, force=force, trt=trt, sm=sm)


export.__doc__ = f"""Compile a checkpoint into a bundle (runs/export/<name>/): ONNX graphs, gates, TensorRT plans.

Every export folds the prompts into an image-only FP32 graph, checks it against PyTorch on real
images (max |delta score| <= 1e-4) and against TensorRT's own ONNX parser where a TensorRT imports
(else TensorRT 10's operator table), then builds the variants of --precision and gates each
against FP32 (SRCC >= 0.999 for FP16, >= 0.99 for INT8). Plans are gated on what they compute: an
INT8 plan needs INT8 GEMMs, an FP16 plan FP32 LayerNorms.
On a Jetson (TensorRT, no torch), `--engine --onnx <bundle>/model_fp16.onnx` builds the plan of an
exported bundle there and adds it to that bundle. `--engine --trt rtx --sm 86,89,120` builds
TensorRT-RTX plans for RTX GPUs on any machine, this one included.

\b
{formats_table()}
"""
