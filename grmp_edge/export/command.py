"""``grmp-edge export``."""
from __future__ import annotations

from grmp_edge.errors import GrmpError


def export() -> None:
    """Compile a checkpoint into a bundle of ONNX graphs and TensorRT plans (not built yet)."""
    raise GrmpError("`grmp-edge export` is not built yet")
