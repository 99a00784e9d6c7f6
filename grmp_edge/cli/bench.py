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

    from grmp_edge.report.bench import bench_in_run_folder, require_a_measurement
    from grmp_edge.report.tables import print_report
    from grmp_edge.runtime.bundle import load_bundle

    batches = _batch_sizes(batch)
    _check_counts(warmup, iters, threads, max_images, crops)
    loaded = load_bundle(bundle)
    _check_memory(loaded, batches, crops, max_images)
    console = Console(stderr=True)
    report, out_dir = bench_in_run_folder(
        loaded, data, name, checkpoint, note=console.print, batches=(batches[0], batches[-1]), warmup=warmup,
        iters=iters, threads=threads, max_images=max_images, crops=crops,
        progress=lambda n: console.print(f"[cyan]measuring[/cyan] {n}"))
    print_report(report, out_dir, console.print)
    require_a_measurement(report, out_dir)


def _batch_sizes(batch: str) -> tuple[int, ...]:
    """--batch as integers, each in range."""
    from grmp_edge.errors import GrmpError
    from grmp_edge.limits import check_range

    try:
        batches = tuple(int(b) for b in batch.split(","))
    except ValueError:
        raise GrmpError(f"--batch takes comma-separated integers, got {batch!r}") from None
    for size in batches:
        check_range("--batch", size, 1, MAX_BATCH)
    return batches


def _check_counts(warmup: int, iters: int, threads: Optional[int], max_images: int, crops: Optional[int]) -> None:
    from grmp_edge.limits import check_range
    from grmp_edge.spec import MAX_CROPS

    check_range("--warmup", warmup, 0, MAX_ITERS)
    check_range("--iters", iters, 1, MAX_ITERS)
    check_range("--threads", threads, 1, 1024)
    check_range("--max-images", max_images, 3, MAX_IMAGES)
    check_range("--crops", crops, 1, MAX_CROPS)


def _check_memory(bundle, batches: tuple[int, ...], crops: Optional[int], max_images: int) -> None:
    """Refuse a batch or an image count whose inputs would not fit in memory, before any is cut."""
    from grmp_edge.limits import check_memory, image_bytes_per_input

    per_frame, _ = bundle.preprocess.crop_plan(crops)
    per_input = image_bytes_per_input(bundle.manifest.model)
    check_memory("--batch", max(max(batches), per_frame), per_input, "one batch")
    # Every image's crops are cut up front and held for all variants.
    check_memory("--max-images", max_images, per_frame * bundle.preprocess.size ** 2 * 3, "the preprocessed images")
