"""Measure one benchmark variant in its own process: ``python -m grmp_edge.report.measure VARIANT.json OUT.json``.

A child process per variant gives each its own peak resident memory (``ru_maxrss``) and keeps a
variant that crashes or hangs from ending the whole report: the parent records it as a failed row.
"""
from __future__ import annotations

import json
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np

from grmp_edge.artifacts import atomic_write_json
from grmp_edge.runtime.preprocess import preprocess
from grmp_edge.spec import PreprocessSpec

Infer = Callable[[np.ndarray], np.ndarray]


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's ``ru_maxrss`` carries the parent's peak across
    fork + exec, so the per-address-space high-water mark (VmHWM) is read where it exists."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def latency_stats(samples_ms: list[float]) -> dict[str, float]:
    """Median, percentiles and spread of a list of timings in milliseconds."""
    a = np.asarray(samples_ms, dtype=np.float64)
    p10, p25, p50, p75, p90, p99 = np.percentile(a, [10, 25, 50, 75, 90, 99])
    return {"p50": p50, "p90": p90, "p99": p99, "p10": p10, "iqr": p75 - p25,
            "mean": float(a.mean()), "std": float(a.std()), "n": int(a.size)}


def _open_pytorch(v: dict) -> tuple[Infer, Callable[[], float | None]]:
    """PyTorch eager on the folded model: the same image-only math as the graphs (text side constant),
    so the comparison is engine against engine, not a text tower recomputed per call against none."""
    import torch

    from grmp_edge.export.fold import fold_prompts
    from grmp_edge.train.model import load_checkpoint

    torch.set_num_threads(v["threads"])
    model = fold_prompts(load_checkpoint(v["path"]))

    def infer(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(batch))).float().numpy()

    return infer, lambda: None


def _bundle_file(v: dict):
    from grmp_edge.runtime.bundle import load_bundle

    bundle = load_bundle(v["bundle"])
    file = next(f for f in bundle.manifest.files if f.path == v["path"])
    return bundle, file


def _open_onnxruntime(v: dict) -> tuple[Infer, Callable[[], float | None]]:
    from grmp_edge.runtime.backends import OnnxRuntimeBackend

    bundle, file = _bundle_file(v)
    backend = OnnxRuntimeBackend(bundle.verify(file), file, bundle.preprocess.size,
                                 providers=[v["provider"]], threads=v["threads"])
    return backend.infer, lambda: None


def _open_tensorrt(v: dict) -> tuple[Infer, Callable[[], float | None]]:
    from grmp_edge.runtime.tensorrt_backend import open_tensorrt

    bundle, file = _bundle_file(v)
    backend = open_tensorrt(bundle, file.precision, v["backend"])
    return backend.infer, lambda: backend.last_gpu_ms


OPENERS = {"pytorch": _open_pytorch, "onnxruntime": _open_onnxruntime, "tensorrt": _open_tensorrt}


def measure(v: dict) -> dict:
    """Load a variant, score every crop, and time it at batch 1 (inference, end-to-end) and the large batch."""
    inputs = np.load(v["inputs"])
    crops = inputs["crops"]
    frames = [inputs[k] for k in sorted(k for k in inputs.files if k.startswith("frame_"))]
    spec = PreprocessSpec.from_dict(v["spec"])
    start = time.perf_counter()
    infer, gpu_ms = OPENERS[v["kind"]](v)
    load_s = time.perf_counter() - start

    scores = np.concatenate([infer(crops[i:i + 8]) for i in range(0, len(crops), 8)]).astype(np.float64)

    one = crops[:1]
    for _ in range(v["warmup"]):
        infer(one)
    infer_ms, gpu = [], []
    for _ in range(v["iters"]):
        t0 = time.perf_counter()
        infer(one)
        infer_ms.append((time.perf_counter() - t0) * 1e3)
        g = gpu_ms()
        if g is not None:
            gpu.append(g)
    e2e_ms, pre_ms = [], []
    for i in range(v["iters"]):
        frame = frames[i % len(frames)]
        t0 = time.perf_counter()
        x = preprocess(frame, spec)[None]
        t1 = time.perf_counter()
        infer(x)
        e2e_ms.append((time.perf_counter() - t0) * 1e3)
        pre_ms.append((t1 - t0) * 1e3)

    big = int(v["large_batch"])
    batch = np.resize(crops, (big,) + crops.shape[1:])
    infer(batch)
    rates = []
    for _ in range(max(3, v["iters"] // 10)):
        t0 = time.perf_counter()
        infer(batch)
        rates.append(big / (time.perf_counter() - t0))
    return {
        "status": "ok",
        "scores": scores.tolist(),
        "load_s": load_s,
        "latency_ms": {"infer": latency_stats(infer_ms), "e2e": latency_stats(e2e_ms),
                       "preprocess": latency_stats(pre_ms)},
        "gpu_ms": latency_stats(gpu) if gpu else None,
        "throughput": {"batch": big, "images_per_s": float(np.median(rates)),
                       "min": float(np.min(rates)), "max": float(np.max(rates)), "n": len(rates)},
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv: list[str]) -> int:
    variant_path, out_path = argv
    variant = json.loads(Path(variant_path).read_text())
    try:
        result = measure(variant)
    except Exception as exc:  # any failure of a variant becomes its row's reason
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        result = {"status": "failed", "reason": reason, "traceback": traceback.format_exc()[-2000:]}
    atomic_write_json(out_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
