"""The report's one-row-per-variant table, as Markdown, CSV and a rich terminal table."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from grmp_edge.artifacts import atomic_write_text
from grmp_edge.export.trt_layers import precision_cell
from grmp_edge.report.results import BenchReport, Measurement, Variant

# p50_ms / p99_ms / e2e_p50_ms: one frame scored as 1 crop; frame_p50_ms / frame_e2e_p50_ms: one frame
# scored as the report's crops per frame (the crop plan). layers / gemm / layernorm / softmax: a
# TensorRT plan's engine layers per precision (its sidecar's).
COLUMNS = ["variant", "format", "precision", "backend", "status", "size_mb", "srcc", "plcc", "plcc_logistic",
           "agree_srcc", "max_abs_delta", "p50_ms", "p99_ms", "e2e_p50_ms", "frame_p50_ms", "frame_e2e_p50_ms",
           "fps_batch", "gflops_per_s",
           "peak_fraction", "peak_rss_mb", "layers", "gemm", "layernorm", "softmax", "reason"]
PLAN_COLUMNS = ("layers", "gemm", "layernorm", "softmax")


# The columns a measurement fills; a variant that was not measured has None in each.
MEASURED = ("srcc", "plcc", "plcc_logistic", "agree_srcc", "max_abs_delta", "p50_ms", "p99_ms", "e2e_p50_ms",
            "frame_p50_ms", "frame_e2e_p50_ms", "fps_batch", "gflops_per_s", "peak_fraction", "peak_rss_mb")


def _measured(m: Measurement) -> dict[str, Any]:
    """The columns of :data:`MEASURED` from one measurement (a comparison not made is None)."""
    accuracy, agreement, efficiency = m.accuracy, m.agreement, m.efficiency
    return {
        "srcc": accuracy.srcc if accuracy else None, "plcc": accuracy.plcc if accuracy else None,
        "plcc_logistic": accuracy.plcc_logistic if accuracy else None,
        "agree_srcc": agreement.srcc if agreement else None,
        "max_abs_delta": agreement.max_abs if agreement else None,
        "p50_ms": m.latency("infer", "p50"), "p99_ms": m.latency("infer", "p99"),
        "e2e_p50_ms": m.latency("e2e", "p50"),
        "frame_p50_ms": m.latency("frame", "infer", "p50"), "frame_e2e_p50_ms": m.latency("frame", "e2e", "p50"),
        "fps_batch": m.throughput.get("images_per_s"),
        "gflops_per_s": efficiency.gflops_per_s if efficiency else None,
        "peak_fraction": efficiency.fraction_of_peak if efficiency else None,
        "peak_rss_mb": m.peak_rss_mb,
    }


def _row(v: Variant) -> dict[str, Any]:
    """One variant as a table row keyed by :data:`COLUMNS`."""
    return {
        "variant": v.name, "format": v.format, "precision": v.precision, "backend": v.backend,
        "status": v.status, "size_mb": v.size_mb,
        **(_measured(v.result) if v.result else dict.fromkeys(MEASURED)),
        **{c: precision_cell(v.layers[c]) if v.layers.get(c) else None for c in PLAN_COLUMNS},
        "reason": v.reason,
    }


def rows(report: BenchReport) -> list[dict[str, Any]]:
    """The report's variants as table rows, one per variant, keyed by :data:`COLUMNS`."""
    return [_row(v) for v in report.variants]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def to_markdown(report: BenchReport) -> str:
    """A Markdown page: the settings, the machine, and the table."""
    m = report.machine
    settings = report.settings
    crops = settings.crops
    gpu = m["gpu"].get("name") if isinstance(m.get("gpu"), dict) else None
    lines = [
        "# grmp-edge bench", "",
        f"Command: `{report.command}`", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads; GPU: {_fmt(gpu)}; "
        f"GEMM peak {m['gemm_peak_gflops']['peak']:.1f} GFLOP/s ({m['gemm_peak_gflops']['matrix']}).",
        f"Data: {report.data} ({report.images} images); model: "
        f"{report.model_cost.get('params', 0) / 1e6:.2f} M parameters, "
        f"{_fmt(report.model_cost.get('gflops_per_image'))} GFLOP/image.",
        f"Settings: batches {settings.batches}, warm-up {settings.warmup}, {settings.iters} iterations.",
        f"Crops per frame: {crops} ({settings.crops_from}); accuracy scores each image as {crops} "
        f"crop(s) averaged. Latency per frame: p50_ms, p99_ms and e2e_p50_ms (decoded frame to score) at 1 crop; "
        f"frame_p50_ms and frame_e2e_p50_ms at {crops} crop(s), one engine call.", "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows(report):
        lines.append("| " + " | ".join(_fmt(row[c]).replace("|", "/") for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def to_csv(report: BenchReport) -> str:
    """One CSV row per variant."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows(report):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def write_tables(report: BenchReport, out_dir: Path) -> None:
    """report.md and report.csv beside report.json."""
    atomic_write_text(out_dir / "report.md", to_markdown(report))
    atomic_write_text(out_dir / "report.csv", to_csv(report))


def print_report(report: BenchReport, out_dir: Path, note) -> None:
    """The table on the terminal (stdout), then ``note`` is told where the report's files are."""
    print_table(report)
    note(f"report: {out_dir}/report.md, report.json, report.csv, accuracy_vs_latency.png")


def print_table(report: BenchReport) -> None:
    """The table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    shown = ["variant", "status", "size_mb", "srcc", "agree_srcc", "max_abs_delta", "p50_ms", "p99_ms",
             "e2e_p50_ms", "frame_p50_ms", "frame_e2e_p50_ms", "fps_batch", "peak_fraction"]
    if any(row["gemm"] for row in rows(report)):  # plans: what each computes, skipped or not
        shown += ["gemm", "layernorm", "softmax"]
    table = Table(title="grmp-edge bench", header_style="bold")
    for c in shown:
        table.add_column(c, justify="left" if c in ("variant", "status") else "right")
    for row in rows(report):
        cells = [_fmt(row[c]) for c in shown]
        if row["status"] != "ok":
            cells[1] = f"{row['status']}: {row['reason'][:60]}"
        table.add_row(*cells)
    console = Console()
    if not console.is_terminal:  # a log file gets the whole table, not 80 columns of ellipses
        console = Console(width=200)
    console.print(table)
