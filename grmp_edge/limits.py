"""Bounds on what a command may be asked to do: numeric option ranges, and memory ceilings derived
from this machine, checked before any work starts so that a typo or a hostile value ends in one line
instead of a traceback or the kernel's OOM killer (which on a Jetson takes its neighbours down too)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

from grmp_edge.errors import GrmpError

# Share of the currently available memory one memory-heavy option may claim: the rest is for the
# model, the interpreter and whatever else runs on the device.
MEMORY_SHARE = 0.5
GIB = 1 << 30


def check_range(option: str, value, low=None, high=None):
    """Return ``value`` if it is None or a finite number in ``[low, high]``, else raise GrmpError
    naming ``option`` and the accepted range (either bound may be None for unbounded)."""
    if value is None:
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise GrmpError(f"{option} must be a finite number, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            wanted = f"between {low:g} and {high:g}"
        elif low is not None:
            wanted = f">= {low:g}"
        else:
            wanted = f"<= {high:g}"
        raise GrmpError(f"{option} must be {wanted}, got {value:g}")
    return value


def available_memory() -> Optional[int]:
    """Bytes this process can still allocate: the kernel's MemAvailable, capped by a cgroup (docker,
    systemd) limit when one is set; None where neither can be read."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(found)


def check_memory(option: str, count: int, bytes_each: float, what: str) -> None:
    """Refuse ``option`` = ``count`` when ``count`` units of ``bytes_each`` would take more than
    :data:`MEMORY_SHARE` of the available memory; the message says the largest value that fits."""
    available = available_memory()
    if available is None or count <= 0 or bytes_each <= 0:
        return
    budget = available * MEMORY_SHARE
    if count * bytes_each > budget:
        fits = max(0, int(budget // bytes_each))
        raise GrmpError(
            f"{option} {count} needs about {count * bytes_each / GIB:.1f} GiB for {what}, more than "
            f"{MEMORY_SHARE:.0%} of the {available / GIB:.1f} GiB available here; use at most {fits}"
        )


def image_bytes_per_input(spec, training: bool = False) -> float:
    """Rough peak bytes to score (or, with ``training``, to back-propagate) one model input of a
    :class:`~grmp_edge.spec.ModelSpec`: the uint8 and float inputs plus one ViT block's activations
    (tokens x width for the residual stream, 4x width in the MLP, tokens^2 per attention head), and
    every block's when training keeps them for the backward pass. An estimate for refusing absurd
    values, not a budget: it errs low so that a value that fits is never refused."""
    size = spec.preprocess.size
    vision = (spec.backbone_config or {}).get("vision_cfg", {}) if isinstance(spec.backbone_config, dict) else {}
    patch = int(vision.get("patch_size", 16) or 16)
    width = int(vision.get("width", 768) or 768)
    layers = int(vision.get("layers", 12) or 12)
    heads = max(1, width // int(vision.get("head_width", 64) or 64))
    tokens = (size // max(1, patch)) ** 2 + 1 + int(spec.vpt_tokens or 0)
    block = 4.0 * tokens * (6 * width + heads * tokens)
    inputs = size * size * 3 * 5.0
    return inputs + block * (layers if training else 1)
