"""``grmp-edge train`` and ``grmp-edge eval``."""
from __future__ import annotations

from grmp_edge.errors import GrmpError


def train() -> None:
    """Meta-prompt pre-train and QGR fine-tune a GRMP quality model (not built yet)."""
    raise GrmpError("`grmp-edge train` is not built yet")


def evaluate() -> None:
    """Score a manifest with a checkpoint and print the metrics (not built yet)."""
    raise GrmpError("`grmp-edge eval` is not built yet")
