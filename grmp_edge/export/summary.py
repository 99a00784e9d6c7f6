"""What an export tells its user: the files of the bundle, its gates, what each plan computes, and
the exact ``grmp-edge run`` commands that serve what was written (all read from the manifest)."""
from __future__ import annotations

from pathlib import Path

from grmp_edge.export.formats import EXPORT_FORMATS
from grmp_edge.export.gates import GateResult, print_gates
from grmp_edge.export.onnx_export import ParityReport
from grmp_edge.spec import BundleManifest


def run_command(bundle: Path, precision: str, backend: str | None = None) -> str:
    """The ``grmp-edge run`` command line that serves ``bundle`` at ``precision`` (on ``backend``)."""
    return f"grmp-edge run --bundle {bundle}" + (f" --backend {backend}" if backend else "") + f" --precision {precision}"


def accuracy_gates(manifest: BundleManifest) -> list[GateResult]:
    """The accuracy gates of the bundle's FP16 / INT8 graphs, in the order they were built."""
    return [GateResult.from_dict(gate) for key, gate in manifest.gates.items() if key in EXPORT_FORMATS]


def print_summary(console, folder: Path, manifest: BundleManifest) -> None:
    """Print the bundle's files, its gates, the commands that run it and what each plan computes."""
    from rich.table import Table

    table = Table(title=f"Bundle {folder}")
    for column in ("file", "precision", "format", "MB", "targets"):
        table.add_column(column)
    for f in manifest.files:
        size = (folder / f.path).stat().st_size / 1e6
        table.add_row(f.path, f.precision, f.format, f"{size:.2f}", ", ".join(f.targets) or "-")
    console.print(table)
    parity = ParityReport.from_dict(manifest.gates["parity_fp32"])
    console.print(f"FP32 parity vs PyTorch on {parity.n} images: max |delta score| {parity.max_abs:.2e} "
                  f"(<= {parity.tolerance:g}); TensorRT check: "
                  + ", ".join(f"{file} {how}" for file, how in manifest.gates["tensorrt_support"].items()))
    gates = accuracy_gates(manifest)
    if gates:
        print_gates(gates, console)
    _print_run_commands(console, folder, manifest)
    _print_plan_layers(console, manifest)


def _print_run_commands(console, folder: Path, manifest: BundleManifest) -> None:
    graphs = {f.precision for f in manifest.files if f.format == "onnx"}
    console.print("Run it with:")
    # The precision a user most likely wants first: FP16 on a GPU, INT8 on a CPU, FP32 as the reference.
    for precision in (p for p in ("fp16", "int8", "fp32") if p in graphs):
        console.print(f"  {run_command(folder, precision)}", soft_wrap=True, highlight=False)
    for f in manifest.files:
        if f.format == "plan":
            console.print(f"  {run_command(folder, f.precision, f.targets[0])}", soft_wrap=True, highlight=False)


def _print_plan_layers(console, manifest: BundleManifest) -> None:
    from rich.table import Table

    from grmp_edge.export.trt_layers import SUMMARY_COUNTS, precision_cell

    plans = [f for f in manifest.files if f.format == "plan"]
    if not plans:
        return
    layers = Table(title="What each plan computes (engine layers per precision)")
    for column in ("plan", "targets", "layers", "GEMMs", "LayerNorms", "Softmaxes"):
        layers.add_column(column)
    for f in plans:
        info = f.info.get("layers", {})
        layers.add_row(f.path, ", ".join(f.info.get("compute_capabilities", [])),
                       *(precision_cell(info.get(k)) for k in SUMMARY_COUNTS))
    console.print(layers)
