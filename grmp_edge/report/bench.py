"""The bench report, what ``grmp-edge bench`` runs: every variant this machine can run, on the same
images, side by side. :func:`run_bench` measures into a folder and returns a
:class:`~grmp_edge.report.results.BenchReport`; :func:`bench_in_run_folder` does it in a new
``runs/bench/<name>``.

Variants: the PyTorch reference from the checkpoint (when torch is installed), each ONNX file of the
bundle on each ONNX Runtime execution provider present, and each TensorRT plan (when its flavour,
tensorrt or tensorrt-rtx, and a GPU are here; the row of a plan keeps the layer precisions its
sidecar records either way).
Each runs in its own process (:mod:`grmp_edge.report.measure`), so its peak memory is its own and a
broken variant becomes a failed row instead of ending the report.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from grmp_edge import metrics
from grmp_edge.artifacts import atomic_write_json
from grmp_edge.images import read_rgb
from grmp_edge.data.manifest import load_manifest
from grmp_edge.errors import GrmpError
from grmp_edge.device import physical_cores
from grmp_edge.report.machine import machine_context, matmul_peak_gflops
from grmp_edge.report.measure import MeasureJob
from grmp_edge.report.results import Accuracy, Agreement, BenchReport, BenchSettings, Efficiency, Measurement, Variant
from grmp_edge.runs import slug
from grmp_edge.runtime.onnxruntime_backend import BACKEND_OF_PROVIDER
from grmp_edge.runtime.pipeline import prepare_batch
from grmp_edge.spec import PreprocessSpec


def _size_mb(path: Path) -> float:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
    return path.stat().st_size / 2**20


def discover_variants(bundle, checkpoint: Path | None) -> list[Variant]:
    """The variants to try on this machine; ones that cannot run here get a skipped row with the reason."""
    variants: list[Variant] = []
    torch_ok = importlib.util.find_spec("torch") is not None
    if checkpoint is not None:
        v = Variant("pytorch eager fp32", "pytorch", str(checkpoint), "fp32", "pytorch-eager", "checkpoint",
                    size_mb=_size_mb(checkpoint))
        if not torch_ok:
            v.status, v.reason = "skipped", "torch is not installed (pip install 'grmp-edge[train]')"
        variants.append(v)
    try:
        import onnxruntime as ort

        available = [p for p in BACKEND_OF_PROVIDER if p in ort.get_available_providers()]
    except ImportError:
        available = []
    for f in bundle.manifest.files:
        size = _size_mb(bundle.path_of(f))
        if f.format == "onnx":
            if not available:
                variants.append(Variant(f"onnxruntime {f.precision} ({f.path})", "onnxruntime", f.path, f.precision,
                                        "onnxruntime", "onnx", size_mb=size, status="skipped",
                                        reason="onnxruntime is not installed"))
            for provider in available:
                label = BACKEND_OF_PROVIDER[provider]
                variants.append(Variant(f"{label} {Path(f.path).stem.replace('model_', '')}", "onnxruntime", f.path,
                                        f.precision, label, "onnx", provider=provider, size_mb=size))
        elif f.format == "plan":
            from grmp_edge.runtime.tensorrt_backend import tensorrt_unavailable

            flavour = f.targets[0] if f.targets else "tensorrt"
            v = Variant(f"{flavour} {f.precision}", "tensorrt", f.path, f.precision, flavour, "plan", size_mb=size,
                        layers=f.info.get("layers", {}))
            missing = tensorrt_unavailable(flavour)
            if missing:
                v.status, v.reason = "skipped", missing
            variants.append(v)
    return variants


def prepare_inputs(records, spec: PreprocessSpec, out: Path, max_images: int, crops: int = 1,
                   frames: int = 8) -> np.ndarray:
    """Cut the manifest's images into ``crops`` crops each, as ``run`` cuts a frame, once for every
    variant (an image's crops stay together, in order); return the labels."""
    records = records[:max_images]
    arrays: dict[str, np.ndarray] = {}
    batches = []
    for i, r in enumerate(records):
        rgb = read_rgb(r.image)
        batches.append(prepare_batch(rgb, spec, crops))
        if i < frames:
            arrays[f"frame_{i}"] = rgb  # decoded frames for the end-to-end timing
    arrays["crops"] = np.concatenate(batches)
    np.savez(out, **arrays)
    return np.array([r.score for r in records], dtype=np.float64)


def _run_variant(v: Variant, common: dict, workdir: Path, timeout: float) -> None:
    spec_path = workdir / f"variant_{slug(v.name)}.json"
    out_path = spec_path.with_suffix(".result.json")
    job = MeasureJob(kind=v.kind, path=v.path, backend=v.backend, provider=v.provider, **common)
    spec_path.write_text(json.dumps(job.to_dict()))
    try:
        proc = subprocess.run([sys.executable, "-m", "grmp_edge.report.measure", str(spec_path), str(out_path)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        v.status, v.reason = "failed", f"timed out after {timeout:.0f} s"
        return
    if not out_path.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        v.status, v.reason = "failed", f"crashed (exit {proc.returncode}): {tail[0][:200]}"
        return
    result = json.loads(out_path.read_text())
    v.status = result.pop("status")
    v.reason = result.pop("reason", "")
    if v.ok:
        v.result = Measurement.from_dict(result)


def _safe(fn, *args) -> float | None:
    try:
        return float(fn(*args))
    except metrics.MetricError:
        return None


def score_rows(variants: list[Variant], labels: np.ndarray, cost: dict, peak: float) -> None:
    """Fill accuracy (vs labels and vs the FP32 reference) and efficiency for every finished variant."""
    ok = [v for v in variants if v.ok]
    reference = next((v for v in ok if v.kind == "pytorch"), None) or \
        next((v for v in ok if v.precision == "fp32"), None)
    ref_scores = np.asarray(reference.result.scores) if reference else None
    ref_p50 = reference.result.latency("infer", "p50") if reference else None
    for v in ok:
        m = v.result
        s = np.asarray(m.scores)
        m.scores_head = s[:8].round(6).tolist()
        m.accuracy = Accuracy(srcc=_safe(metrics.srcc, s, labels), plcc=_safe(metrics.plcc, s, labels),
                              plcc_logistic=_safe(metrics.plcc_logistic, s, labels))
        if ref_scores is not None:
            delta = np.abs(s - ref_scores)
            m.agreement = Agreement(reference=reference.name, srcc=_safe(metrics.srcc, s, ref_scores),
                                    max_abs=float(delta.max()), p99_abs=float(np.percentile(delta, 99)))
        p50 = m.latency("infer", "p50")
        gflops = cost.get("gflops_per_image")
        if gflops:
            achieved = gflops / (p50 / 1e3)
            m.efficiency = Efficiency(gflops_per_s=achieved, fraction_of_peak=achieved / peak)
        m.speedup_vs_reference = ref_p50 / p50 if ref_p50 else None
    for v in ok:  # only the first eight scores stay in the report, once every row has compared them
        v.result.scores = None


def run_bench(bundle, data: Path, checkpoint: Path | None, out_dir: Path, batches: tuple[int, int] = (1, 8),
              warmup: int = 10, iters: int = 50, threads: int | None = None, max_images: int = 256,
              crops: int | None = None, timeout: float = 900.0, command: str = "",
              progress: Callable[[str], None] | None = None) -> BenchReport:
    """Run every variant, score and time it; write report.json, .md, .csv and accuracy_vs_latency.png.

    Each image is scored as ``run`` scores a frame: ``crops`` crops (None: the bundle's crop plan),
    averaged. Latency per frame is timed at 1 crop and at that many crops. ``progress`` is told the
    name of each variant as its measurement starts. The report is written even when no variant ran:
    :func:`require_a_measurement` says so afterwards."""
    from grmp_edge.report.flops import graph_cost
    from grmp_edge.report.plots import accuracy_vs_latency
    from grmp_edge.report.tables import write_tables

    threads = threads or physical_cores()  # the runtime's own default, so bench times what run does
    records = load_manifest(data, check_images=False)
    if len(records) < 3:
        raise GrmpError(f"{data} has {len(records)} images; the report needs at least 3 for correlations")
    spec = bundle.manifest.preprocess
    crops, crops_from = spec.crop_plan(crops)
    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    labels = prepare_inputs(records, spec, work / "inputs.npz", max_images, crops)
    fp32 = next((f for f in bundle.manifest.files if f.format == "onnx" and f.precision == "fp32"), None)
    cost = graph_cost(bundle.verify(fp32)) if fp32 else {}
    peak = matmul_peak_gflops()
    common = {"bundle": str(bundle.folder), "inputs": str(work / "inputs.npz"), "spec": spec.to_dict(), "threads": threads,
              "warmup": warmup, "iters": iters, "large_batch": batches[-1], "crops": crops}
    variants = discover_variants(bundle, checkpoint)
    for v in variants:
        if v.status == "pending":
            if progress:
                progress(v.name)
            _run_variant(v, common, work, timeout)
    score_rows(variants, labels, cost, peak["peak"])
    report = BenchReport(
        command=command, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), bundle=str(bundle.folder), data=str(data),
        images=int(len(labels)),
        settings=BenchSettings(batches=list(batches), warmup=warmup, iters=iters, threads=threads, crops=crops,
                               crops_from=crops_from),
        machine={**machine_context(threads), "gemm_peak_gflops": peak}, model_cost=cost, variants=variants)
    atomic_write_json(out_dir / "report.json", report.to_dict())
    write_tables(report, out_dir)
    accuracy_vs_latency(report, out_dir / "accuracy_vs_latency.png")
    return report


def bench_in_run_folder(bundle, data: Path, name: str | None, checkpoint: Path | None = None,
                        note: Callable[[str], None] = print, **options) -> tuple[BenchReport, Path]:
    """:func:`run_bench` into a new ``runs/bench/<name>`` (removed again if the bench fails), recording
    the command being run; ``note`` is told the crop plan. ``checkpoint`` defaults to the bundle's
    source checkpoint when it is still here; ``options`` are :func:`run_bench`'s. Returns the report
    and its folder."""
    from grmp_edge.runs import command_line, discard_on_failure, new_run_dir

    per_frame, crops_from = bundle.preprocess.crop_plan(options.get("crops"))
    checkpoint = checkpoint or source_checkpoint(bundle)
    out_dir = new_run_dir("bench", name)
    note(f"crops per frame: {per_frame} ({crops_from})")
    with discard_on_failure(out_dir):
        report = run_bench(bundle, data, checkpoint, out_dir, command=command_line(), **options)
    return report, out_dir


def require_a_measurement(report: BenchReport, out_dir: Path) -> None:
    """GrmpError when no variant was measured: the report (with every reason) is kept, but it is no success."""
    if not report.measured:
        raise GrmpError(f"every variant failed or was skipped; the reasons are in {out_dir / 'report.md'}")


def source_checkpoint(bundle) -> Path | None:
    """The checkpoint the bundle was exported from, when it is still on this machine."""
    recorded = bundle.manifest.source.get("checkpoint")
    if recorded and (Path(recorded) / "spec.json").exists():
        return Path(recorded)
    return None
