"""``grmp-edge run``."""
from __future__ import annotations

from grmp_edge.errors import GrmpError


def run() -> None:
    """Score live frames from a camera, video, folder or stdin (not built yet)."""
    raise GrmpError("`grmp-edge run` is not built yet")
