"""``grmp-edge data ...``: synthesise distortion corpora, import official label files, validate manifests."""
from __future__ import annotations

import typer

data_app = typer.Typer(help="Build and check datasets: synth, import, validate.", no_args_is_help=True)
