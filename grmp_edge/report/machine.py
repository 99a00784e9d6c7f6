"""The machine a benchmark ran on: CPU, GPU, library versions, Jetson power mode, measured GEMM peak."""
from __future__ import annotations

import importlib
import os
import platform
import time

import numpy as np

from grmp_edge.device import cpu_name, gpu_info, jetson_info, jetson_power


def _version(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:
        return None


def matmul_peak_gflops(n: int = 1024, repeats: int = 5) -> dict[str, float | str]:
    """Best FP32 GEMM throughput this process reaches (numpy, and torch when installed), in GFLOP/s."""
    results: dict[str, float | str] = {}
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    results["numpy"] = 2 * n ** 3 / best / 1e9
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        torch.mm(ta, tb)
        best = min(_timed(lambda: torch.mm(ta, tb)) for _ in range(repeats))
        results["torch"] = 2 * n ** 3 / best / 1e9
    except ImportError:
        pass
    results["peak"] = max(v for v in results.values() if isinstance(v, float))
    results["matrix"] = f"{n}x{n}x{n} fp32"
    return results


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def machine_context(threads: int) -> dict:
    """Everything a reader needs to compare benchmark numbers across machines."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": threads,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "gpu": gpu_info(),
        "jetson": jetson_info(),
        "jetson_power": jetson_power(),
        "versions": {m: _version(m) for m in ("numpy", "onnxruntime", "torch", "tensorrt", "open_clip", "cv2")},
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }
