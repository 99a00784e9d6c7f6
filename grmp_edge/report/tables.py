"""The report's one-row-per-variant table, as Markdown, CSV and a rich terminal table."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from grmp_edge.artifacts import atomic_write_text
from grmp_edge.export.trt_layers import precision_cell

# p50_ms / p99_ms / e2e_p50_ms: one frame scored as 1 crop; frame_p50_ms / frame_e2e_p50_ms: one frame
# scored as the report's crops per frame (the crop plan). layers / gemm / layernorm / softmax: a
# TensorRT plan's engine layers per precision (its sidecar's).
COLUMNS = ["variant", "format", "precision", "backend", "status", "size_mb", "srcc", "plcc", "plcc_logistic",
           "agree_srcc", "max_abs_delta", "p50_ms", "p99_ms", "e2e_p50_ms", "frame_p50_ms", "frame_e2e_p50_ms",
           "fps_batch", "gflops_per_s",
           "peak_fraction", "peak_rss_mb", "layers", "gemm", "layernorm", "softmax", "reason"]
PLAN_COLUMNS = ("layers", "gemm", "layernorm", "softmax")


def _get(d: dict | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def rows(report: dict) -> list[dict[str, Any]]:
    """Flatten the report's variants into table rows (missing values are None)."""
    out = []
    for v in report["variants"]:
        r = v.get("result") or {}
        out.append({
            "variant": v["name"], "format": v["format"], "precision": v["precision"], "backend": v["backend"],
            "status": v["status"], "size_mb": v.get("size_mb"),
            "srcc": _get(r, "accuracy", "srcc"), "plcc": _get(r, "accuracy", "plcc"),
            "plcc_logistic": _get(r, "accuracy", "plcc_logistic"),
            "agree_srcc": _get(r, "agreement", "srcc"), "max_abs_delta": _get(r, "agreement", "max_abs"),
            "p50_ms": _get(r, "latency_ms", "infer", "p50"), "p99_ms": _get(r, "latency_ms", "infer", "p99"),
            "e2e_p50_ms": _get(r, "latency_ms", "e2e", "p50"),
            "frame_p50_ms": _get(r, "latency_ms", "frame", "infer", "p50"),
            "frame_e2e_p50_ms": _get(r, "latency_ms", "frame", "e2e", "p50"),
            "fps_batch": _get(r, "throughput", "images_per_s"),
            "gflops_per_s": _get(r, "efficiency", "gflops_per_s"),
            "peak_fraction": _get(r, "efficiency", "fraction_of_peak"),
            "peak_rss_mb": r.get("peak_rss_mb"),
            **{c: precision_cell(_get(v, "layers", c)) if _get(v, "layers", c) else None for c in PLAN_COLUMNS},
            "reason": v.get("reason", ""),
        })
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def to_markdown(report: dict) -> str:
    """A Markdown page: the settings, the machine, and the table."""
    m = report["machine"]
    crops = report["settings"]["crops"]
    lines = [
        "# grmp-edge bench", "",
        f"Command: `{report['command']}`", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads; GPU: {_fmt(_get(m, 'gpu', 'name'))}; "
        f"GEMM peak {m['gemm_peak_gflops']['peak']:.1f} GFLOP/s ({m['gemm_peak_gflops']['matrix']}).",
        f"Data: {report['data']} ({report['images']} images); model: "
        f"{report['model_cost'].get('params', 0) / 1e6:.2f} M parameters, "
        f"{_fmt(report['model_cost'].get('gflops_per_image'))} GFLOP/image.",
        f"Settings: batches {report['settings']['batches']}, warm-up {report['settings']['warmup']}, "
        f"{report['settings']['iters']} iterations.",
        f"Crops per frame: {crops} ({report['settings']['crops_from']}); accuracy scores each image as {crops} "
        f"crop(s) averaged. Latency per frame: p50_ms, p99_ms and e2e_p50_ms (decoded frame to score) at 1 crop; "
        f"frame_p50_ms and frame_e2e_p50_ms at {crops} crop(s), one engine call.", "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows(report):
        lines.append("| " + " | ".join(_fmt(row[c]).replace("|", "/") for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def to_csv(report: dict) -> str:
    """One CSV row per variant."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows(report):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def write_tables(report: dict, out_dir: Path) -> None:
    """report.md and report.csv beside report.json."""
    atomic_write_text(out_dir / "report.md", to_markdown(report))
    atomic_write_text(out_dir / "report.csv", to_csv(report))


def print_table(report: dict) -> None:
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
