"""``grmp-edge export``: compile a checkpoint into a bundle of ONNX graphs (and TensorRT plans).

The options map onto :class:`grmp_edge.export.options.ExportOptions` (whose defaults they show);
the work is :func:`grmp_edge.export.build.build_bundle`, :func:`grmp_edge.export.plans.build_plans_from_onnx`
or :func:`grmp_edge.export.triton.export_repository`. Which options apply to which ``--format`` is
the table of :mod:`grmp_edge.export.formats`, printed in ``--help`` and checked here. Heavy imports
stay inside the command so that ``grmp-edge --help`` is instant.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from grmp_edge.errors import GrmpError
from grmp_edge.export.formats import check_arguments, formats_table
from grmp_edge.export.options import MIN_NUM_CALIB, MIN_NUM_EVAL, ExportOptions

DEFAULTS = ExportOptions()
# Options that pick the mode rather than shape its outputs.
_MODE_SELECTORS = ("fmt", "engine")


def _given(ctx: typer.Context) -> list[str]:
    """The options the user typed (not left at their defaults), by parameter name."""
    # By the source's name: typer ships its own copy of click's ParameterSource enum.
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params if name not in _MODE_SELECTORS}
    return [name for name, source in sources.items()
            if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")]


def export(
    ctx: typer.Context,
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint folder (spec.json + model.safetensors). Default: the latest runs/train/*/best."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, fp16, int8 or all (default fp16). FP32 is always built as the reference. With --onnx: the file's precision (default: the bundle's)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx, engine to also build TensorRT plans (needs tensorrt, or tensorrt-rtx with --trt rtx), or triton: a Triton model repository from an exported bundle (runs/triton/<name>/)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="--format triton: the bundle to serve. Default: the newest runs/export/*."),
    device: str = typer.Option("cpu", "--device", help="--format triton: cpu or gpu, where the ONNX model's instances run (and so which ONNX file: fp32 on cpu, fp16 on gpu unless --precision)."),
    engine: bool = typer.Option(False, "--engine", help="Same as --format engine."),
    trt: str = typer.Option(DEFAULTS.trt, "--trt", help="TensorRT flavour of the plans: tensorrt (JetPack / data-centre TensorRT 10-11, built on the GPU that runs it) or rtx (TensorRT for RTX: built here for the --sm GPUs, no GPU needed)."),
    sm: Optional[str] = typer.Option(None, "--sm", help="--trt rtx: compute capabilities the plans cover, e.g. 86,89,120 (RTX 30, 40, 50 series; the default). One plan serves them all."),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="With --engine: build the plan from this ONNX file of a bundle on this device (no checkpoint, no torch) and add it to that bundle."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration/eval images: a folder or a manifest .csv. Default: the training run's manifest, else the bundled sample photos."),
    calib_method: str = typer.Option(DEFAULTS.calib_method, "--calib-method", help="INT8 QDQ calibration: minmax, entropy or percentile."),
    num_calib: int = typer.Option(DEFAULTS.num_calib, "--num-calib", help=f"Calibration crops (>= {MIN_NUM_CALIB})."),
    num_eval: int = typer.Option(DEFAULTS.num_eval, "--num-eval", help=f"Eval crops for the parity and accuracy gates (>= {MIN_NUM_EVAL})."),
    opset: int = typer.Option(DEFAULTS.opset, "--opset", help="ONNX opset, 13..20 (17: LayerNormalization as one node)."),
    embedding: bool = typer.Option(DEFAULTS.embedding, "--embedding", help="Also output the (N, D) image embedding."),
    simplify: bool = typer.Option(DEFAULTS.simplify, "--simplify/--no-simplify", help="Simplify the graph with onnxslim."),
    allow_drift: bool = typer.Option(DEFAULTS.allow_drift, "--allow-drift", help="Keep FP16/INT8 files that fail their accuracy gate."),
    batch_opt: Optional[int] = typer.Option(None, "--batch-opt", help="TensorRT profile: optimal batch (default: one frame's crops, the model's crop plan)."),
    batch_max: Optional[int] = typer.Option(None, "--batch-max", help="TensorRT profile / Triton max_batch_size: maximum batch (default: 4 frames' crops, at least 8)."),
    workspace_gib: float = typer.Option(DEFAULTS.workspace_gib, "--workspace-gib", help="TensorRT builder workspace limit in GiB."),
    name: Optional[str] = typer.Option(None, "--name", help="Bundle folder name under runs/export (default exp, exp2, ...)."),
    seed: int = typer.Option(DEFAULTS.seed, "--seed", help="Seed of the calibration/eval image sample."),
    force: bool = typer.Option(DEFAULTS.force, "--force", help="Replace the bundle --name if it exists (the old one stays until the new one is complete)."),
) -> None:
    """Compile a checkpoint into a bundle (runs/export/<name>/): ONNX graphs, gates, TensorRT plans."""
    fmt = "engine" if engine else fmt
    if (trt != DEFAULTS.trt or sm is not None) and fmt != "engine":
        raise GrmpError("--trt and --sm choose the TensorRT plans: add --engine")
    if fmt == "triton":
        from grmp_edge.export.triton import export_repository

        check_arguments("triton", _given(ctx))
        export_repository(bundle, device, precision or "auto", batch_max, name)
        return
    if onnx is not None:
        if fmt != "engine":
            raise GrmpError("--onnx builds a TensorRT plan from an exported graph: add --engine")
        if checkpoint is not None:
            raise GrmpError("give either --onnx (build a plan from a bundle's graph) or --checkpoint, not both")
    # With --onnx, --precision names the graph's precision (build_plans_from_onnx takes it), not what to build.
    options = ExportOptions(
        precision=precision if onnx is None and precision is not None else DEFAULTS.precision, fmt=fmt,
        calib=calib, calib_method=calib_method, num_calib=num_calib, num_eval=num_eval, opset=opset,
        embedding=embedding, simplify=simplify, allow_drift=allow_drift, batch_opt=batch_opt, batch_max=batch_max,
        workspace_gib=workspace_gib, name=name, seed=seed, force=force, trt=trt, sm=sm)
    mode = "engine --onnx" if onnx is not None else fmt
    options.check(mode)
    check_arguments(mode, _given(ctx))
    if onnx is not None:
        _plan_from_onnx(onnx, precision, options)
    else:
        _bundle_from_checkpoint(checkpoint, options)


def _bundle_from_checkpoint(checkpoint: Optional[Path], options: ExportOptions) -> None:
    from rich.console import Console

    from grmp_edge.export.build import build_bundle
    from grmp_edge.export.summary import print_summary

    console = Console()
    exported = build_bundle(checkpoint, options, console=console)
    print_summary(console, exported.folder, exported.manifest)


def _plan_from_onnx(onnx: Path, precision: Optional[str], options: ExportOptions) -> None:
    from rich.console import Console

    from grmp_edge.export.plans import build_plans_from_onnx
    from grmp_edge.export.summary import run_command

    console = Console()
    built = build_plans_from_onnx(onnx, precision, options, console=console)
    if built.bundle is None:
        console.print(f"wrote {built.plan} and {built.sidecar.name} (not part of a bundle)")
        return
    console.print(f"added {built.plan.name} to the bundle; run it with:")
    console.print(f"  {run_command(built.bundle, built.precision, built.flavour)}", soft_wrap=True, highlight=False)


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
