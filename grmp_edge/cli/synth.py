"""``grmp-edge data synth``: the synthetic distortion corpus from the command line."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def synth_command(
    src: List[Path] = typer.Option(..., "--src", help="Pristine image file or folder (repeat for several)."),
    out: Path = typer.Option(..., "--out", help="Output folder (ref/, dist/, manifest.csv); reruns resume."),
    levels: int = typer.Option(5, help="Levels per type, 1..5 (fewer pick evenly among the five strengths)."),
    size: int = typer.Option(256, help="Shorter side of the references in pixels (aspect kept)."),
    seed: int = typer.Option(0, help="Random seed of the distortions."),
    types: Optional[str] = typer.Option(None, help="Comma-separated distortion types (default: all 25)."),
    workers: Optional[int] = typer.Option(None, help="Worker processes (default: min(CPU count, 4))."),
) -> None:
    """Distort pristine photos with KADID-10k's 25 types at graded levels, scored by a full-reference pseudo-MOS."""
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.data.synth import synthesize

    names = [t.strip() for t in types.split(",") if t.strip()] if types else None
    manifest = synthesize(src, out, levels=levels, size=size, seed=seed, types=names, workers=workers)
    records = load_manifest(manifest)
    n_refs = len({r.ref for r in records})
    n_types = len({r.group for r in records})
    typer.echo(f"wrote {manifest}: {len(records)} distorted images from {n_refs} references, "
               f"{n_types} types x {len({r.level for r in records})} levels")
