"""``grmp-edge quickstart``: the whole pipeline offline on an embedded default."""
from __future__ import annotations

from grmp_edge.errors import GrmpError


def quickstart() -> None:
    """Build a corpus, train, export, benchmark and run the small model offline (not built yet)."""
    raise GrmpError("`grmp-edge quickstart` is not built yet")
