"""``grmp-edge bench``: accuracy-vs-latency report across backends and precisions."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


MAX_BATCH = 4096
MAX_ITERS = 1_000_000
MAX_IMAGES = 1_000_000


def bench(
    data: Path = typer.Option(..., "--data", help="Manifest CSV with labels to score (accuracy and agreement)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Bundle folder [default: latest runs/export/*]."),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="Checkpoint for the PyTorch reference [default: the bundle's source checkpoint]."),
    batch: str = typer.Option("1,8", "--batch", help="Batch sizes: latency at the first, throughput at the last."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed iterations before timing."),
    iters: int = typer.Option(50, "--iters", help="Timed iterations per measurement."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads [default: physical cores, as grmp-edge run]."),
    max_images: int = typer.Option(256, "--max-images", help="Score at most this many manifest images."),
    crops: Optional[int] = typer.Option(None, "--crops", help="Score each image as N crops averaged, as `run --crops N` scores a frame, and time a frame at N crops beside 1. Default: the bundle's crop plan."),
    name: Optional[str] = typer.Option(None, "--name", help="Folder name under runs/bench/ [default: exp, exp2, ...]."),
) -> None:
    """Score and time every variant this machine can run; write report.json/.md/.csv and the plot."""
    from rich.console import Console

    from grmp_edge.errors import GrmpError
    from grmp_edge.limits import check_memory, check_range, image_bytes_per_input
    from grmp_edge.report.bench import run_bench
    from grmp_edge.report.plots import accuracy_vs_latency
    from grmp_edge.report.tables import print_table, write_tables
    from grmp_edge.runs import command_line, discard_on_failure, new_run_dir
    from grmp_edge.runtime.bundle import load_bundle
    from grmp_edge.spec import MAX_CROPS

    try:
        batches = tuple(int(b) for b in batch.split(","))
    except ValueError:
        raise GrmpError(f"--batch takes comma-separated integers, got {batch!r}") from None
    for size in batches:
        check_range("--batch", size, 1, MAX_BATCH)
    check_range("--warmup", warmup, 0, MAX_ITERS)
    check_range("--iters", iters, 1, MAX_ITERS)
    check_range("--threads", threads, 1, 1024)
    check_range("--max-images", max_images, 3, MAX_IMAGES)
    check_range("--crops", crops, 1, MAX_CROPS)
    loaded = load_bundle(bundle)
    per_frame, crops_from = loaded.preprocess.crop_plan(crops)
    per_input = image_bytes_per_input(loaded.manifest.model)
    check_memory("--batch", max(max(batches), per_frame), per_input, "one batch")
    # Every image's crops are cut up front and held for all variants.
    check_memory("--max-images", max_images, per_frame * loaded.preprocess.size ** 2 * 3, "the preprocessed images")
    checkpoint = checkpoint or source_checkpoint(loaded)
    out_dir = new_run_dir("bench", name)
    console = Console(stderr=True)
    console.print(f"crops per frame: {per_frame} ({crops_from})")
    with discard_on_failure(out_dir):
        report = run_bench(loaded, data, checkpoint, out_dir, batches=(batches[0], batches[-1]), warmup=warmup,
                           iters=iters, threads=threads, max_images=max_images, crops=crops,
                           command=command_line(),
                           progress=lambda n: console.print(f"[cyan]measuring[/cyan] {n}"))
        write_tables(report, out_dir)
        accuracy_vs_latency(report, out_dir / "accuracy_vs_latency.png")
    print_table(report)
    console.print(f"report: {out_dir}/report.md, report.json, report.csv, accuracy_vs_latency.png")
    if not any(v["status"] == "ok" for v in report["variants"]):
        # The report (with every reason) is kept, but nothing was measured: not a success.
        raise GrmpError(f"every variant failed or was skipped; the reasons are in {out_dir / 'report.md'}")


def source_checkpoint(bundle) -> Optional[Path]:
    """The checkpoint the bundle was exported from, when it is still on this machine."""
    recorded = bundle.manifest.source.get("checkpoint")
    if recorded and (Path(recorded) / "spec.json").exists():
        return Path(recorded)
    return None
