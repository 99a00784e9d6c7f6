"""User-facing errors and lazy imports of optional heavy dependencies.

Every failure a user can cause (bad input, missing file, missing extra) is raised as
:class:`GrmpError`; the CLI prints its message as one line and exits non-zero.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Callable

# Which extra installs which optional module (the error message names it).
EXTRA_FOR_MODULE = {
    "torch": "train",
    "torchvision": "train",
    "open_clip": "train",
    "safetensors": "train",
    "skimage": "train",
    "onnx": "export",
    "onnxslim": "export",
    "onnxruntime": "runtime",
    "cv2": "runtime",
    "tensorrt": "tensorrt",
    "tensorrt_rtx_bindings": "tensorrt-rtx",
    "cuda": "tensorrt",
    "pycuda": "tensorrt",
    "matplotlib": "report",
    "psutil": "report",
}


class GrmpError(Exception):
    """An error whose message is shown to the user as a single line (no traceback)."""


def run_script(main: Callable[[list[str]], int]) -> None:
    """Exit with ``main(sys.argv[1:])``, as the repository's scripts and benchmarks run: a GrmpError
    is its one-line message and exit status 1, never a traceback (the CLI's own handler exits 2)."""
    try:
        sys.exit(main(sys.argv[1:]))
    except GrmpError as exc:
        sys.exit(f"error: {exc}")


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import an optional dependency, or raise GrmpError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = extra or EXTRA_FOR_MODULE.get(top, "all")
        raise GrmpError(
            f"{top} is not installed ({exc}); install it with: pip install 'grmp-edge[{extra}]'"
        ) from None


def opencv() -> ModuleType:
    """OpenCV (``cv2``), or a GrmpError naming the ``runtime`` extra: decoding, resizing and capture use it."""
    return require("cv2", "runtime")
