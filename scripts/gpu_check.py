"""Check grmp-edge's CUDA paths on one GPU and time PyTorch FP16 inference against FP32, in one run.

What it checks (each part is independent; a failure is recorded and the next part still runs):

* ``train``: ``grmp-edge train`` end to end on ``--device cuda`` in fp32, bf16 and fp16 (fp16 goes
  through the GradScaler path), ViT-B/16 with deep prompts on a small synthetic graded corpus:
  wall time per precision, and that every reported metric is finite.
* ``nccl``: the NCCL backend of this torch build joins a process group and runs the collectives the
  trainers use (``Runtime``: all-reduce of a flat tensor, tensor broadcast, object broadcast), called
  on ``torch.distributed`` directly because ``Runtime`` skips them on one process. A single GPU can
  host only one NCCL rank, so this is world size 1: multi-rank lockstep is checked by the gloo test
  on CPU.
* ``latency``: the quality model as it runs in PyTorch on the GPU, batch 1, 8 and 32: eager
  ``GRMPModel.quality`` (FP32), the folded image tower (uint8 frames in, as exported) in FP32 and
  under FP16 autocast; CUDA-event timing summarised as ``grmp-edge bench`` does
  (:func:`grmp_edge.timing.latency_stats`), plus the FP16 scores' SRCC and largest
  difference against FP32 on the same inputs. These are the PyTorch baselines a TensorRT engine has
  to beat on the same card.
* ``runtime``: the exported bundle (same backbone, random weights, FP32 + FP16 graphs) as
  ``grmp-edge run`` serves it on this GPU: ONNX Runtime's CUDA provider on the FP32 and FP16 graphs,
  and each TensorRT flavour that imports here (``tensorrt``: plans built on this GPU;
  ``tensorrt-rtx``: plans built for this GPU's compute capability, kernels compiled on the first
  load, then reloaded from the runtime cache). Per backend: load seconds, latency per batch size
  (wall clock around ``infer``, host copies included, as ``grmp-edge bench`` measures), and
  agreement (SRCC, largest |difference|) with ONNX Runtime's CPU scores of the FP32 graph on the
  same frames. The CUDA provider needs ``onnxruntime-gpu`` in place of ``onnxruntime``; TensorRT-RTX
  needs ``grmp-edge[tensorrt-rtx]`` (x86-64), TensorRT ``grmp-edge[tensorrt]``.

    python scripts/gpu_check.py --out benchmarks/gpu_check.json
    python scripts/gpu_check.py --parts runtime --reps 50   # the runtime part alone (a few minutes)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PARTS = ("train", "nccl", "latency", "runtime")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="ViT-B-16")
    p.add_argument("--vpt-tokens", type=int, default=100)
    p.add_argument("--device", default="cuda", help="cuda (cpu only to smoke-test this script)")
    p.add_argument("--precisions", default="fp32,bf16,fp16", help="training precisions to run")
    p.add_argument("--batches", default="1,8,32", help="inference batch sizes to time")
    p.add_argument("--reps", type=int, default=100, help="timed calls per engine and batch")
    p.add_argument("--out", type=Path, default=Path("benchmarks/gpu_check.json"))
    p.add_argument("--parts", default=",".join(PARTS), help=f"which checks to run, of {', '.join(PARTS)}")
    return p.parse_args(argv)


def check_train(args, work: Path) -> dict:
    """``grmp-edge train`` on the GPU once per precision; wall time and the finite test metrics."""
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from graded_corpus import make_graded_corpus

    from grmp_edge.cli import main as cli

    target = make_graded_corpus(work / "target", refs=6, levels=6, size=224, kinds=("noise", "blur"), seed=1)
    source = make_graded_corpus(work / "source", refs=3, levels=4, size=224, kinds=("noise", "blur", "pixelate"))
    os.environ["GRMP_EDGE_RUNS"] = str(work / "runs")
    out = {}
    for precision in args.precisions.split(","):
        start = time.perf_counter()
        code = cli(["train", "--data", str(target), "--meta-data", str(source), "--backbone", args.backbone,
                    "--pretrained", "none", "--vpt-tokens", str(args.vpt_tokens), "--meta-epochs", "2",
                    "--support-batch", "16", "--query-batch", "8", "--shots", "32", "--val-size", "16",
                    "--splits", "1", "--epochs", "5", "--patience", "2", "--device", args.device,
                    "--precision", precision, "--name", precision])
        seconds = time.perf_counter() - start
        results = json.loads((work / "runs" / "train" / precision / "results.json").read_text())
        summary = {k: v["mean"] for k, v in results["summary"].items()}
        out[precision] = {"exit_code": code, "seconds": round(seconds, 2), "test_metrics": summary,
                          "finite": all(math.isfinite(v) for v in summary.values())}
    return out


def check_nccl(device: str) -> dict:
    """Join a one-rank NCCL group (gloo on CPU) and run the collectives ``Runtime`` uses."""
    import torch
    import torch.distributed as dist

    cuda = device.startswith("cuda")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517")
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    try:
        flat = torch.arange(6, dtype=torch.float32, device=device)
        dist.all_reduce(flat)
        weights = torch.ones(3, device=device)
        dist.broadcast(weights, src=0)
        box = [{"best_epoch": 3, "stop": False}]
        dist.broadcast_object_list(box, src=0)
        version = ".".join(map(str, torch.cuda.nccl.version())) if cuda else None
        return {"backend": dist.get_backend(), "nccl_version": version,
                "all_reduce": flat.tolist(), "broadcast": weights.tolist(), "broadcast_object_list": box[0]}
    finally:
        dist.destroy_process_group()


def _time_ms(fn, reps: int, device: str) -> list[float]:
    """Milliseconds of ``reps`` calls after 10 warm-up calls: CUDA events on a GPU, perf_counter on CPU."""
    import torch

    for _ in range(10):
        fn()
    if device == "cpu":
        times = []
        for _ in range(reps):
            s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - s) * 1e3)
        return times
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in events]


def check_latency(args) -> dict:
    """Latency statistics of each PyTorch engine per batch size, and FP16's agreement with FP32."""
    import torch
    from scipy.stats import spearmanr

    from grmp_edge.export.fold import fold_prompts
    from grmp_edge.timing import latency_stats
    from grmp_edge.train.backbones import model_spec
    from grmp_edge.train.model import build_model

    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32
    torch.backends.cudnn.allow_tf32 = False
    model = build_model(model_spec(args.backbone, None, vpt_tokens=args.vpt_tokens)).eval().to(args.device)
    folded = fold_prompts(model).to(args.device)  # its buffers (prompts, direction, mean/std) too
    size = model.spec.preprocess.size
    kind = "cpu" if args.device == "cpu" else "cuda"
    generator = torch.Generator(args.device).manual_seed(0)

    def frames(n):
        return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, device=args.device, generator=generator)

    def fp16(x):
        with torch.autocast(kind, dtype=torch.float16):
            return folded(x)

    out = {}
    with torch.inference_mode():
        for batch in (int(b) for b in args.batches.split(",")):
            x, u8 = torch.randn(batch, 3, size, size, device=args.device), frames(batch)
            engines = {
                "eager_fp32_quality": lambda: model.quality(x),
                "folded_fp32": lambda: folded(u8),
                "folded_fp16_autocast": lambda: fp16(u8),
            }
            rows = {}
            for name, fn in engines.items():
                stats = latency_stats(_time_ms(fn, args.reps, args.device))
                rows[name] = {k: v if k == "n" else round(float(v), 3) for k, v in stats.items()}
            base = rows["eager_fp32_quality"]["p50"]
            for row in rows.values():
                row["speedup_vs_eager_fp32"] = round(base / row["p50"], 2)
            out[f"batch{batch}"] = rows
        # Agreement on 64 random frames (random weights: scores differ little, so compare ranks and max error).
        u8 = frames(64)
        ref, got = folded(u8).float().cpu().numpy(), fp16(u8).float().cpu().numpy()
        out["fp16_vs_fp32"] = {"srcc": round(float(spearmanr(ref, got)[0]), 5),
                               "max_abs_diff": float(np.abs(ref - got).max()), "score_std": float(ref.std())}
    return out


def _agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    return {"srcc": round(float(spearmanr(ref, got)[0]), 5), "max_abs_diff": float(np.abs(ref - got).max())}


def _serve(open_fn, frames: np.ndarray, reference: np.ndarray, batches: list[int], reps: int) -> dict:
    """Open a backend, score ``frames`` and time ``infer`` per batch size; never raises."""
    from grmp_edge.timing import latency_stats

    try:
        start = time.perf_counter()
        backend = open_fn()
        row = {"load_seconds": round(time.perf_counter() - start, 2), "describe": backend.describe()}
        try:
            cap = backend.max_batch or len(frames)
            scores = np.concatenate([backend.infer(frames[i:i + cap]) for i in range(0, len(frames), cap)])
            row["vs_cpu_fp32"] = _agreement(reference, scores)
            for batch in (b for b in batches if b <= cap):
                x = frames[:batch]
                for _ in range(10):
                    backend.infer(x)
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    backend.infer(x)
                    times.append((time.perf_counter() - t0) * 1e3)
                stats = latency_stats(times)
                row[f"batch{batch}_ms"] = {k: v if k == "n" else round(float(v), 3) for k, v in stats.items()}
        finally:
            backend.close()
        return row
    except Exception as exc:  # one backend failing is a finding, not the end of the check
        return {"error": f"{type(exc).__name__}: {exc}"[:2000]}


def check_runtime(args, work: Path) -> dict:
    """The exported bundle served on this GPU by every backend present, against ONNX Runtime's CPU scores."""
    import importlib.util

    import onnxruntime as ort

    from grmp_edge.device import gpu_facts
    from grmp_edge.export.build import build_bundle
    from grmp_edge.export.plans import build_plans_from_onnx
    from grmp_edge.runtime.backends import open_backend
    from grmp_edge.runtime.bundle import load_bundle
    from grmp_edge.runtime.onnxruntime_backend import CPU_EP, CUDA_EP
    from grmp_edge.runtime.plan_compat import FLAVOURS, sm_name
    from grmp_edge.train.backbones import model_spec
    from grmp_edge.train.checkpoint import save_checkpoint
    from grmp_edge.train.model import build_model

    os.environ["GRMP_EDGE_RUNS"] = str(work / "runs")
    os.environ["GRMP_EDGE_CACHE"] = str(work / "cache")  # a cold runtime cache: the first load compiles
    model = build_model(model_spec(args.backbone, None, vpt_tokens=args.vpt_tokens)).eval()
    save_checkpoint(model, work / "ckpt")
    start = time.perf_counter()
    folder, _ = build_bundle(work / "ckpt", precision="fp16", name="gpu", allow_drift=True)
    out = {"export_seconds": round(time.perf_counter() - start, 1), "providers": ort.get_available_providers()}
    bundle = load_bundle(folder)
    size = bundle.preprocess.size
    frames = np.random.default_rng(0).integers(0, 256, (64, size, size, 3), dtype=np.uint8)
    batches = [int(b) for b in args.batches.split(",")]
    with open_backend(bundle, "onnxruntime", "fp32", providers=[CPU_EP]) as cpu:
        reference = np.concatenate([cpu.infer(frames[i:i + 16]) for i in range(0, len(frames), 16)])
    out["cpu_fp32_score_std"] = float(reference.std())
    for precision in ("fp32", "fp16"):
        out[f"onnxruntime-cuda {precision}"] = _serve(
            lambda: open_backend(bundle, "onnxruntime", precision, providers=[CUDA_EP, CPU_EP]),
            frames, reference, batches, args.reps)
    facts, why = gpu_facts()
    out["gpu"] = facts or why
    for flavour in FLAVOURS.values():
        if importlib.util.find_spec(flavour.module) is None:
            out[flavour.name] = {"skipped": f"{flavour.module} is not installed"}
            continue
        for precision in ("fp32", "fp16"):
            key = f"{flavour.name} {precision}"
            try:
                start = time.perf_counter()
                sm = sm_name(facts["compute_capability"])[3:] if flavour.aot and facts else None
                build_plans_from_onnx(folder / f"model_{precision}.onnx", trt=flavour.name, sm=sm, allow_drift=True)
                built = {"build_seconds": round(time.perf_counter() - start, 1)}
            except Exception as exc:
                out[key] = {"error": f"build: {type(exc).__name__}: {exc}"[:2000]}
                continue
            bundle = load_bundle(folder)
            opened = lambda: open_backend(bundle, flavour.name, precision)  # noqa: E731
            out[key] = {**built, **_serve(opened, frames, reference, batches, args.reps)}
            if flavour.aot:  # the second load reuses the kernels the first one compiled
                out[key]["second_load"] = _serve(opened, frames[:8], reference[:8], [1], 10)
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import torch

    result = {
        "command": "python scripts/gpu_check.py " + shlex.join(argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "backbone": args.backbone, "vpt_tokens": args.vpt_tokens,
    }
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"error: unknown --parts {', '.join(unknown)}; expected some of {', '.join(PARTS)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        checks = {"train": lambda: check_train(args, Path(tmp)), "nccl": lambda: check_nccl(args.device),
                  "latency": lambda: check_latency(args), "runtime": lambda: check_runtime(args, Path(tmp) / "rt")}
        for name, fn in ((n, checks[n]) for n in parts):
            start = time.perf_counter()
            try:
                result[name] = fn()
                result[name + "_ok"] = True
            except Exception as exc:  # a report of what broke, not a crash: the next part still runs
                result[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
                result[name + "_ok"] = False
            result[name + "_seconds"] = round(time.perf_counter() - start, 1)
            print(json.dumps({name: result[name]}, indent=1)[:4000], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(result[k + "_ok"] for k in parts) else 1


if __name__ == "__main__":
    from grmp_edge.errors import run_script

    run_script(main)
