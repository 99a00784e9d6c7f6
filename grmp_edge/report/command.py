"""``grmp-edge bench``."""
from __future__ import annotations

from grmp_edge.errors import GrmpError


def bench() -> None:
    """Accuracy-vs-latency report across backends and precisions (not built yet)."""
    raise GrmpError("`grmp-edge bench` is not built yet")
