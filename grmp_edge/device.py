"""Facts about the machine this process runs on: CPU, cores, NVIDIA GPU, Jetson model and JetPack.

The one home for them: ``doctor`` prints them, export records them in plan sidecars, the runtime
sizes its thread pools and checks plans with them, and bench writes them beside every result.
Torch-free and import-light; every probe returns None (or a reason) instead of raising, since a
missing ``nvidia-smi`` or a non-Jetson board is the normal case, not an error.
"""
from __future__ import annotations

import importlib
import os
import platform
import re
import subprocess
from pathlib import Path

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def run_quietly(cmd: list[str], timeout: float = 10.0) -> str | None:
    """A command's stripped stdout, or None when it is missing, fails or hangs."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_name() -> str:
    """The CPU's model name (``Hardware`` on some Arm kernels), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    """Physical CPU cores this process may use (SMT siblings counted once); ONNX Runtime's default
    of one thread per logical core oversubscribes SMT machines."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return logical
    cores = set()
    physical = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            cores.add((physical, value.strip()))
    # Arm kernels (Jetson) print no core ids; their cores have no SMT siblings.
    return max(1, min(len(cores) or logical, logical))


def parse_tegra_release(text: str) -> str | None:
    """The L4T release named in ``/etc/nv_tegra_release``.

    ``"# R36 (release), REVISION: 3.0, ..."`` -> ``"L4T R36.3.0"``; None when the text has no release.
    """
    match = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"L4T R{match.group(1)}.{match.group(2)}" if match else None


def l4t_release(tegra_release: str | os.PathLike = TEGRA_RELEASE) -> str | None:
    """This board's L4T release (``"L4T R36.3.0"``); None off Jetson or when the file is unreadable."""
    try:
        return parse_tegra_release(Path(tegra_release).read_text(errors="replace"))
    except OSError:
        return None


def jetpack_version(tegra_release: str | os.PathLike = TEGRA_RELEASE) -> str | None:
    """JetPack version from dpkg (``nvidia-jetpack``), else the L4T release; None off Jetson."""
    version = run_quietly(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
    if version:
        return f"JetPack {version}"
    return l4t_release(tegra_release)  # no dpkg: not a Debian-based Jetson image


def jetson_info() -> str | None:
    """Jetson model and L4T release when running on one (``"NVIDIA Jetson Orin Nano (L4T R36.3.0)"``),
    else None."""
    if not DEVICE_TREE_MODEL.exists() and not TEGRA_RELEASE.exists():
        return None
    model = DEVICE_TREE_MODEL.read_text(errors="ignore").strip("\x00 \n") if DEVICE_TREE_MODEL.exists() \
        else "Jetson"
    release = l4t_release()
    return f"{model} ({release})" if release else model


def jetson_power() -> dict[str, str | None] | None:
    """Jetson power mode (nvpmodel) and whether jetson_clocks locked the clocks; None elsewhere."""
    if jetson_info() is None:
        return None
    mode = run_quietly(["nvpmodel", "-q"])
    clocks = run_quietly(["jetson_clocks", "--show"])
    locked = None
    if clocks is not None:
        # jetson_clocks pins MinFreq to MaxFreq on every CPU when it is active.
        lines = [l for l in clocks.splitlines() if "MinFreq" in l and "MaxFreq" in l]
        locked = str(bool(lines) and all(l.split("MinFreq=")[1].split()[0] == l.split("MaxFreq=")[1].split()[0]
                                         for l in lines))
    return {"power_mode": mode.splitlines()[0] if mode else None, "clocks_locked": locked}


def gpu_info() -> dict[str, str] | None:
    """GPU name and driver from nvidia-smi (None without an NVIDIA GPU, and on Jetson, which has none)."""
    out = run_quietly(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if not out:
        return None
    name, _, driver = out.splitlines()[0].partition(",")
    return {"name": name.strip(), "driver": driver.strip()}


def import_cudart():
    """cuda-python's runtime module under its 12.6+ name, else its older one; None if absent."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def gpu_facts(device: int = 0) -> tuple[dict[str, str] | None, str]:
    """(``{"gpu_name", "compute_capability"}``, "") of a visible CUDA GPU, else (None, why not).
    Asks the CUDA runtime (cuda-python, else pycuda): this is what TensorRT plans are bound to.
    Never raises."""
    cudart = import_cudart()
    try:
        if cudart is not None:
            err, count = cudart.cudaGetDeviceCount()
            if err != cudart.cudaError_t.cudaSuccess or count <= device:
                return None, f"no CUDA GPU is visible ({getattr(err, 'name', err)})"
            err, props = cudart.cudaGetDeviceProperties(device)
            if err != cudart.cudaError_t.cudaSuccess:
                return None, f"the GPU cannot be queried ({getattr(err, 'name', err)})"
            name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
            return {"gpu_name": name, "compute_capability": f"{props.major}.{props.minor}"}, ""
        driver = importlib.import_module("pycuda.driver")
        driver.init()
        if driver.Device.count() <= device:
            return None, "no CUDA GPU is visible"
        dev = driver.Device(device)
        major, minor = dev.compute_capability()
        return {"gpu_name": dev.name(), "compute_capability": f"{major}.{minor}"}, ""
    except ImportError:
        return None, "neither cuda-python nor pycuda is installed (pip install 'grmp-edge[tensorrt]')"
    except Exception as exc:  # a driver-less machine raises driver-specific errors
        return None, f"no usable CUDA GPU ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
