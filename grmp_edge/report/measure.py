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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np

from grmp_edge.timing import latency_stats
from grmp_edge.artifacts import atomic_write_json
from grmp_edge.report.results import Measurement
from grmp_edge.runtime.pipeline import prepare_batch
from grmp_edge.spec import PreprocessSpec

Infer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class MeasureJob:
    """One variant's measurement, as the parent process writes it for the child: what to load (a
    ``kind`` of engine on ``path``, a checkpoint or a file of ``bundle``, with ``backend`` and ONNX
    Runtime ``provider``), the prepared ``inputs`` (.npz of crops and frames, ``crops`` per image,
    cut with ``spec``) and how to time them."""

    kind: str  # pytorch | onnxruntime | tensorrt
    path: str
    backend: str
    provider: str | None
    bundle: str
    inputs: str
    spec: dict
    threads: int
    warmup: int
    iters: int
    large_batch: int
    crops: int

    @classmethod
    def from_dict(cls, d: dict) -> "MeasureJob":
        return cls(**{f.name: d[f.name] for f in fields(cls)})

    def to_dict(self) -> dict:
        return asdict(self)


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


def _open_pytorch(v: MeasureJob) -> tuple[Infer, Callable[[], float | None]]:
    """PyTorch eager on the folded model: the same image-only math as the graphs (text side constant),
    so the comparison is engine against engine, not a text tower recomputed per call against none."""
    import torch

    from grmp_edge.export.fold import fold_prompts
    from grmp_edge.train.checkpoint import load_checkpoint

    torch.set_num_threads(v.threads)
    model = fold_prompts(load_checkpoint(v.path))

    def infer(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(batch))).float().numpy()

    return infer, lambda: None


def _bundle_file(v: MeasureJob):
    from grmp_edge.runtime.bundle import load_bundle

    bundle = load_bundle(v.bundle)
    file = next(f for f in bundle.manifest.files if f.path == v.path)
    return bundle, file


def _open_onnxruntime(v: MeasureJob) -> tuple[Infer, Callable[[], float | None]]:
    from grmp_edge.runtime.onnxruntime_backend import OnnxRuntimeBackend

    bundle, file = _bundle_file(v)
    backend = OnnxRuntimeBackend(bundle.verify(file), file, bundle.preprocess.size,
                                 providers=[v.provider], threads=v.threads)
    return backend.infer, lambda: None


def _open_tensorrt(v: MeasureJob) -> tuple[Infer, Callable[[], float | None]]:
    from grmp_edge.runtime.tensorrt_backend import open_tensorrt

    bundle, file = _bundle_file(v)
    backend = open_tensorrt(bundle, file.precision, v.backend)
    return backend.infer, lambda: backend.last_gpu_ms


OPENERS = {"pytorch": _open_pytorch, "onnxruntime": _open_onnxruntime, "tensorrt": _open_tensorrt}


def frame_latencies(infer: Infer, gpu_ms: Callable[[], float | None], crops: np.ndarray, frames: list[np.ndarray],
                    spec: PreprocessSpec, counts: tuple[int, ...], v: MeasureJob) -> dict[int, dict]:
    """Per crop count, the time to score one frame cut into that many crops: the engine call on them
    (``infer``, and ``gpu`` where the engine times itself), and from the decoded frame to its score
    (``e2e``, of which ``preprocess`` cuts the crops as ``run`` does). The counts are timed in turn
    within each iteration, so a load change on a shared machine moves them alike and their ratio holds."""
    for n in counts:
        for _ in range(v.warmup):
            infer(crops[:n])
    samples = {n: {"infer": [], "gpu": [], "e2e": [], "preprocess": []} for n in counts}
    for _ in range(v.iters):
        for n in counts:
            t0 = time.perf_counter()
            infer(crops[:n])
            samples[n]["infer"].append((time.perf_counter() - t0) * 1e3)
            g = gpu_ms()
            if g is not None:
                samples[n]["gpu"].append(g)
    for i in range(v.iters):
        frame = frames[i % len(frames)]
        for n in counts:
            t0 = time.perf_counter()
            x = prepare_batch(frame, spec, n)
            t1 = time.perf_counter()
            infer(x)
            samples[n]["e2e"].append((time.perf_counter() - t0) * 1e3)
            samples[n]["preprocess"].append((t1 - t0) * 1e3)
    return {n: {"crops": n, **{k: latency_stats(ms) if ms else None for k, ms in s.items()}}
            for n, s in samples.items()}


def measure(v: MeasureJob) -> Measurement:
    """Load a variant, score every image (its ``crops`` crops averaged, as ``run`` scores a frame), and
    time it per frame at 1 crop and at ``crops`` crops, and at the large batch."""
    inputs = np.load(v.inputs)
    crops = inputs["crops"]
    per_image = int(v.crops)
    frames = [inputs[k] for k in sorted(k for k in inputs.files if k.startswith("frame_"))]
    spec = PreprocessSpec.from_dict(v.spec)
    start = time.perf_counter()
    infer, gpu_ms = OPENERS[v.kind](v)
    load_s = time.perf_counter() - start

    chunk = 8 * per_image  # 8 images per call, each image's crops in the same call
    scores = np.concatenate([infer(crops[i:i + chunk]) for i in range(0, len(crops), chunk)]).astype(np.float64)
    scores = scores.reshape(-1, per_image).mean(axis=1)

    latency = frame_latencies(infer, gpu_ms, crops, frames, spec, tuple(sorted({1, per_image})), v)
    single, plan = latency[1], latency[per_image]

    big = int(v.large_batch)
    batch = np.resize(crops, (big,) + crops.shape[1:])
    infer(batch)
    rates = []
    for _ in range(max(3, v.iters // 10)):
        t0 = time.perf_counter()
        infer(batch)
        rates.append(big / (time.perf_counter() - t0))
    return Measurement(
        load_s=load_s,
        # infer / e2e / preprocess: one frame as 1 crop; frame: one frame as the crop plan's crops.
        latency_ms={"infer": single["infer"], "e2e": single["e2e"], "preprocess": single["preprocess"],
                    "frame": plan},
        gpu_ms=single["gpu"],
        throughput={"batch": big, "images_per_s": float(np.median(rates)),
                    "min": float(np.min(rates)), "max": float(np.max(rates)), "n": len(rates)},
        peak_rss_mb=peak_rss_mb(),
        scores=scores.tolist(),
    )


def main(argv: list[str]) -> int:
    variant_path, out_path = argv
    job = MeasureJob.from_dict(json.loads(Path(variant_path).read_text()))
    try:
        result = {"status": "ok", **measure(job).to_dict()}
    except Exception as exc:  # any failure of a variant becomes its row's reason
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        result = {"status": "failed", "reason": reason, "traceback": traceback.format_exc()[-2000:]}
    atomic_write_json(out_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
