"""``grmp-edge doctor``: what this machine has, what is missing, and which extra installs it."""
from __future__ import annotations

import importlib
import os
import platform
import sys
from typing import Callable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from grmp_edge.device import cpu_name, jetson_info
from grmp_edge.errors import EXTRA_FOR_MODULE


def _torch(mod) -> str:
    cuda = mod.cuda.is_available()
    gpu = f", GPU {mod.cuda.get_device_name(0)}" if cuda else ""
    return f"CUDA {mod.version.cuda} available={cuda}{gpu}"


def _ort(mod) -> str:
    return "providers: " + ", ".join(mod.get_available_providers())


def _cv2(mod) -> str:
    from grmp_edge.runtime.sources import opencv_has_gstreamer

    return "GStreamer: yes" if opencv_has_gstreamer() else "GStreamer: NO (CSI cameras need JetPack's OpenCV)"


def _trt(mod) -> str:
    return "TensorRT Python bindings"


def _trt_rtx(mod) -> str:
    targets = ", ".join(n for n in mod.ComputeCapability.__members__ if n.startswith("SM"))
    return f"builds plans without a GPU for {targets}"


CHECKS: list[tuple[str, str, Callable | None]] = [
    ("torch", "torch", _torch),
    ("torchvision", "torchvision", None),
    ("open_clip", "open_clip", None),
    ("safetensors", "safetensors", None),
    ("onnx", "onnx", None),
    ("onnxslim", "onnxslim", None),
    ("onnxruntime", "onnxruntime", _ort),
    ("tensorrt", "tensorrt", _trt),
    ("tensorrt-rtx", "tensorrt_rtx_bindings", _trt_rtx),
    ("cuda-python", "cuda", None),
    ("pycuda", "pycuda", None),
    ("opencv", "cv2", _cv2),
    ("matplotlib", "matplotlib", None),
]


def probe(module: str, detail: Callable | None) -> tuple[bool, str, str]:
    """(importable, version, detail) of one optional module; never raises."""
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # a broken install raises more than ImportError
        return False, "", f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
    version = str(getattr(mod, "__version__", "") or "")
    if not version and module == "cuda":
        try:
            from importlib.metadata import version as dist_version

            version = dist_version("cuda-python")
        except Exception:
            version = "?"
    try:
        extra = detail(mod) if detail else ""
    except Exception as exc:
        extra = f"(detail failed: {exc})"
    return True, version, extra


def doctor() -> None:
    """Print Python, OS, CPU and each optional component with its version, or the extra that installs it."""
    console = Console()
    console.print("[bold]grmp-edge doctor[/bold]")
    console.print(f"Python   {sys.version.split()[0]} ({sys.executable})")
    console.print(f"OS       {platform.system()} {platform.release()} / {platform.machine()}")
    console.print(f"CPU      {cpu_name()} ({os.cpu_count()} logical cores)")
    jetson = jetson_info()
    console.print(f"Jetson   {jetson or 'no'}")
    table = Table(show_header=True, header_style="bold")
    for col in ("component", "status", "version", "detail"):
        table.add_column(col)
    for name, module, detail in CHECKS:
        ok, version, info = probe(module, detail)
        if ok:
            table.add_row(name, "[green]ok[/green]", version, info)
        else:
            extra = EXTRA_FOR_MODULE.get(module, "all")
            hint = f"pip install 'grmp-edge[{extra}]'"
            if module == "cv2" and jetson:
                hint = "use JetPack's OpenCV (apt install python3-opencv), not pip's"
            table.add_row(name, "[red]missing[/red]", "", escape(hint))
    console.print(table)
