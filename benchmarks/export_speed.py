"""CPU speed of the compiled quality model against PyTorch eager, measured side by side in one run.

The full-size model: CLIP ViT-B/16 at 224 px with 100 deep visual prompts per block (random weights;
speed does not depend on them), batch 1, the same intra-op thread count for every engine:

* PyTorch eager FP32, ``GRMPModel.quality`` (the trained model as it runs in training/eval: image tower
  with prompts + text tower for the two prompts + softmax);
* PyTorch eager FP32, the folded module (image tower only, text side as a constant) - what the ONNX
  graph computes, to separate "folding" from "runtime" gains;
* ONNX Runtime FP32 (the exported graph) and ONNX Runtime INT8 (the CPU form that
  ``quantize_int8_cpu`` picks: fastest within the SRCC gate).

Timing rotates over the engines and a large-matmul probe in rounds (one untimed call, then a block of
timed calls each), so the load of a shared machine falls on all of them alike; median, p10/p90 and
the best call are reported (the best call is the closest to an idle machine). FLOPs per
image are counted from the architecture's MatMul/Conv ops (torch's FLOP counter on the folded image
tower, checked against the closed-form ViT count; the text tower that ``GRMPModel.quality`` also runs
by the closed form) and set against this machine's measured FP32 GEMM throughput. Agreement of
INT8 with PyTorch is the SRCC over real photo crops (kodak24 + mcmaster, 2 crops each).

    .venv/bin/python benchmarks/export_speed.py            # writes benchmarks/export_speed.{json,md}
"""
from __future__ import annotations

import argparse
import os
import sys

THREADS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="ViT-B-16")
    p.add_argument("--vpt-tokens", type=int, default=100)
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of every engine")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per engine before timing")
    p.add_argument("--rounds", type=int, default=15, help="rotations over the engines")
    p.add_argument("--block", type=int, default=2, help="timed calls per engine per round")
    p.add_argument("--crops-per-image", type=int, default=2)
    p.add_argument("--num-calib", type=int, default=16)
    p.add_argument("--out", default="benchmarks/export_speed.json")
    p.add_argument("--work", default=None, help="folder for the ONNX files (default: a temp folder)")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    # BLAS pools read these at import: set them before numpy/torch load so the GEMM probe is fair.
    for name in THREADS_ENV:
        os.environ[name] = str(ARGS.threads)

import platform  # noqa: E402
import shlex  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from grmp_edge.device import cpu_name  # noqa: E402
from grmp_edge.timing import latency_stats  # noqa: E402


GEMM_N = 2048


def gemm_gflops(threads: int, n: int = GEMM_N, reps: int = 7) -> dict[str, float]:
    """Best FP32 GEMM throughput (GFLOP/s) of an n x n matmul in torch and numpy (fastest of ``reps``)."""
    import torch

    torch.set_num_threads(threads)
    flops = 2.0 * n ** 3
    out = {}
    a, b = torch.randn(n, n), torch.randn(n, n)
    an, bn = a.numpy(), b.numpy()
    for name, fn in (("torch", lambda: torch.matmul(a, b)), ("numpy", lambda: an @ bn)):
        fn()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = flops / min(times) / 1e9
    return out


def vit_flops(cfg: dict, vpt_tokens: int) -> dict[str, float]:
    """Closed-form MatMul/Conv FLOPs (2 per multiply-add) of the prompted image tower and the text tower."""
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    size, patch, d, layers = v["image_size"], v["patch_size"], v["width"], v["layers"]
    mlp = int(d * v.get("mlp_ratio", 4.0))
    patches = (size // patch) ** 2
    tokens = 1 + vpt_tokens + patches
    block = 2 * tokens * d * 3 * d + 2 * 2 * tokens * tokens * d + 2 * tokens * d * d + 2 * 2 * tokens * d * mlp
    image = 2 * patches * d * 3 * patch * patch + layers * block + 2 * d * cfg["embed_dim"] + 2 * cfg["embed_dim"]
    dt, lt, ctx = t["width"], t["layers"], t.get("context_length", 77)
    mlp_t = int(dt * t.get("mlp_ratio", 4.0))
    block_t = 2 * ctx * dt * 3 * dt + 2 * 2 * ctx * ctx * dt + 2 * ctx * dt * dt + 2 * 2 * ctx * dt * mlp_t
    text_per_prompt = lt * block_t + 2 * dt * cfg["embed_dim"]
    return {"image_tower": float(image), "text_tower_two_prompts": float(2 * text_per_prompt), "tokens": tokens}


def counted_flops(fn) -> float:
    """FLOPs of one call as torch's FLOP counter sees them (matmul, linear, conv, bmm)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def real_crops(spec, per_image: int) -> tuple[np.ndarray, list[str]]:
    """Native-resolution crops of the kodak24 and mcmaster photos (the centre crop first)."""
    from grmp_edge.images import list_images, read_rgb
    from grmp_edge.data.pristine import shared_pristine
    from grmp_edge.preprocess import native_crops, preprocess

    crops, names = [], []
    for dataset in ("kodak24", "mcmaster"):
        for path in list_images(shared_pristine(dataset)):
            rgb = read_rgb(path)
            for crop in [preprocess(rgb, spec)] + list(native_crops(rgb, spec, per_image - 1)):
                crops.append(crop)
                names.append(f"{dataset}/{path.name}")
    return np.stack(crops), names


def calib_crops(spec, n: int) -> np.ndarray:
    """Centre crops of the first ``n`` cbsd68 photos (disjoint from the agreement images)."""
    from grmp_edge.images import list_images, read_rgb
    from grmp_edge.data.pristine import shared_pristine
    from grmp_edge.preprocess import preprocess

    return np.stack([preprocess(read_rgb(p), spec) for p in list_images(shared_pristine("cbsd68"))[:n]])


def time_rotating(engines: dict, warmup: int, rounds: int, block: int) -> dict[str, list[float]]:
    """Per-call latencies (ms) of each engine after ``warmup`` calls, rotating over engines each round."""
    for fn in engines.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, fn in engines.items():
            fn()  # untimed: wakes the engine's thread pool after the others ran
            for _ in range(block):
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def _stats(ms: list[float], flops: float, peak: float) -> dict[str, float]:
    stats = latency_stats(ms)
    median, best = stats["p50"], float(min(ms))
    return {
        "median_ms": median, "p10_ms": stats["p10"], "p90_ms": stats["p90"],
        "min_ms": best, "mean_ms": stats["mean"], "iterations": stats["n"], "flops": flops,
        "gflops_per_s": flops / median / 1e6, "fraction_of_fp32_gemm_peak": flops / median / 1e6 / peak,
        "fraction_of_fp32_gemm_peak_best_call": flops / best / 1e6 / peak,
    }


def main(args: argparse.Namespace) -> dict:
    import torch

    from grmp_edge.export.bundle import producing_versions
    from grmp_edge.export.fold import fold_prompts
    from grmp_edge.export.gates import onnx_session, run_onnx
    from grmp_edge.export.int8 import quantize_int8_cpu
    from grmp_edge.export.onnx_export import export_onnx
    from grmp_edge.metrics import srcc
    from grmp_edge.preprocess import normalize
    from grmp_edge.train.backbones import model_spec
    from grmp_edge.train.model import build_model

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    load_before = os.getloadavg()
    print(f"[1/6] FP32 GEMM probe ({args.threads} threads)", flush=True)
    gemm = gemm_gflops(args.threads)

    print(f"[2/6] building {args.backbone} with {args.vpt_tokens} deep prompts (random weights)", flush=True)
    torch.manual_seed(0)
    model = build_model(model_spec(args.backbone, None, vpt_tokens=args.vpt_tokens)).eval()
    spec = model.spec.preprocess
    folded = fold_prompts(model)
    crops, names = real_crops(spec, args.crops_per_image)
    calib = calib_crops(spec, args.num_calib)

    work = Path(args.work or tempfile.mkdtemp(prefix="grmp-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"[3/6] exporting ONNX FP32 and INT8 CPU into {work}", flush=True)
    fp32_path = export_onnx(folded, work / "model_fp32.onnx")
    evals = [crops[i:i + 8] for i in range(0, len(crops), 8)]
    int8_path, int8_report = quantize_int8_cpu(fp32_path, work / "model_int8_cpu.onnx",
                                             [calib[i:i + 4] for i in range(0, len(calib), 4)], evals,
                                             allow_drift=True, threads=args.threads)

    print(f"[4/6] agreement on {len(crops)} real crops", flush=True)
    with torch.inference_mode():
        x_all = torch.from_numpy(normalize(crops, spec))
        pytorch_scores = torch.cat([model.quality(x_all[i:i + 8]) for i in range(0, len(x_all), 8)]).double().numpy()
    fp32_scores = run_onnx(fp32_path, evals, threads=args.threads).astype(np.float64)
    int8_scores = run_onnx(int8_path, evals, threads=args.threads).astype(np.float64)

    print(f"[5/6] timing: {args.rounds} rounds x {args.block} calls per engine, batch 1", flush=True)
    image = crops[:1]
    x1 = torch.from_numpy(normalize(image, spec))
    sessions = {name: onnx_session(path, threads=args.threads) for name, path in
                (("ort_fp32", fp32_path), ("ort_int8_cpu", int8_path))}

    def eager(fn):
        def call():
            with torch.inference_mode():
                fn()
        return call

    a, b = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
    engines = {
        "fp32_gemm_probe": lambda: torch.matmul(a, b),
        "pytorch_eager_quality": eager(lambda: model.quality(x1)),
        "pytorch_eager_folded": eager(lambda: folded(torch.from_numpy(image))),
        "ort_fp32": lambda: sessions["ort_fp32"].run(["score"], {"image": image}),
        "ort_int8_cpu": lambda: sessions["ort_int8_cpu"].run(["score"], {"image": image}),
    }
    times = time_rotating(engines, args.warmup, args.rounds, args.block)

    print("[6/6] counting FLOPs", flush=True)
    closed = vit_flops(model.spec.backbone_config, args.vpt_tokens)
    image_flops = counted_flops(lambda: folded(torch.from_numpy(image)))
    # The counter misses the fused attention kernel the eager text tower uses: its part is the closed form.
    quality_flops = image_flops + closed["text_tower_two_prompts"]
    flops = {"pytorch_eager_quality": quality_flops, "pytorch_eager_folded": image_flops,
             "ort_fp32": image_flops, "ort_int8_cpu": image_flops}
    # The machine's FP32 GEMM peak: the fastest large matmul seen, before or during the rotation.
    probe_ms = times.pop("fp32_gemm_probe")
    gemm["torch_in_rotation_best"] = 2.0 * GEMM_N ** 3 / min(probe_ms) / 1e6
    gemm["torch_in_rotation_median"] = 2.0 * GEMM_N ** 3 / float(np.median(probe_ms)) / 1e6
    gemm["peak"] = max(gemm["torch"], gemm["numpy"], gemm["torch_in_rotation_best"])
    results = {name: _stats(ms, flops[name], gemm["peak"]) for name, ms in times.items()}

    eager_ms = results["pytorch_eager_quality"]["median_ms"]
    folded_ms = results["pytorch_eager_folded"]["median_ms"]
    best = {name: r["min_ms"] for name, r in results.items()}
    ratios = {
        "best_call_ort_int8_cpu_speedup_vs_eager_quality": best["pytorch_eager_quality"] / best["ort_int8_cpu"],
        "best_call_ort_fp32_speedup_vs_eager_quality": best["pytorch_eager_quality"] / best["ort_fp32"],
        "best_call_ort_fp32_speedup_vs_eager_folded": best["pytorch_eager_folded"] / best["ort_fp32"],
        "ort_int8_cpu_speedup_vs_eager_quality": eager_ms / results["ort_int8_cpu"]["median_ms"],
        "ort_fp32_speedup_vs_eager_quality": eager_ms / results["ort_fp32"]["median_ms"],
        "ort_int8_cpu_speedup_vs_eager_folded": folded_ms / results["ort_int8_cpu"]["median_ms"],
        "ort_fp32_speedup_vs_eager_folded": folded_ms / results["ort_fp32"]["median_ms"],
        "ort_int8_cpu_speedup_vs_ort_fp32": results["ort_fp32"]["median_ms"] / results["ort_int8_cpu"]["median_ms"],
    }
    agreement = {
        "n": int(len(crops)), "images": sorted(set(names)), "crops_per_image": args.crops_per_image,
        "pytorch_score_std": float(pytorch_scores.std()),
        "srcc_int8_cpu_vs_pytorch": srcc(int8_scores, pytorch_scores),
        "srcc_ort_fp32_vs_pytorch": srcc(fp32_scores, pytorch_scores),
        "max_abs_int8_cpu_vs_pytorch": float(np.abs(int8_scores - pytorch_scores).max()),
        "max_abs_ort_fp32_vs_pytorch": float(np.abs(fp32_scores - pytorch_scores).max()),
    }
    targets = {
        "ort_int8_cpu_speedup_vs_eager_quality": {"target": ">= 2.5",
                                                  "value": ratios["ort_int8_cpu_speedup_vs_eager_quality"],
                                                  "met": ratios["ort_int8_cpu_speedup_vs_eager_quality"] >= 2.5},
        "srcc_int8_cpu_vs_pytorch": {"target": ">= 0.99", "value": agreement["srcc_int8_cpu_vs_pytorch"],
                                     "met": agreement["srcc_int8_cpu_vs_pytorch"] >= 0.99},
        "ort_fp32_speedup_vs_eager_quality": {"target": ">= 1.0", "value": ratios["ort_fp32_speedup_vs_eager_quality"],
                                              "met": ratios["ort_fp32_speedup_vs_eager_quality"] >= 1.0},
    }
    return {
        "command": shlex.join([".venv/bin/python", "benchmarks/export_speed.py", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_name(), "cpus_visible": os.cpu_count(), "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "note": "shared machine: other jobs ran during the measurement; compare the ratios, not the absolute ms",
        },
        "threads": {
            "torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads(),
            "onnxruntime_intra_op": args.threads, "onnxruntime_inter_op": 1,
            "blas_env": {name: os.environ.get(name) for name in THREADS_ENV},
        },
        "versions": producing_versions(),
        "model": {
            "backbone": args.backbone, "weights": "random (torch seed 0)", "vpt_tokens": args.vpt_tokens,
            "image_size": spec.size, "sequence_length": closed["tokens"], "batch": 1,
            "onnx_fp32_mb": fp32_path.stat().st_size / 1e6, "onnx_int8_cpu_mb": int8_path.stat().st_size / 1e6,
        },
        "timing": {"warmup": args.warmup, "rounds": args.rounds, "block": args.block, "untimed_calls_per_block": 1,
                   "eager_input": "normalised float NCHW (preprocessing outside the timer)",
                   "onnx_input": "uint8 NHWC crop (cast/normalise inside the graph)"},
        "flops_per_call": {
            "image_tower_counted": image_flops, "image_tower_closed_form": closed["image_tower"],
            "quality_forward": quality_flops,
            "text_tower_two_prompts_closed_form": closed["text_tower_two_prompts"],
        },
        "fp32_gemm_gflops": gemm,
        "engines": results,
        "ratios": ratios,
        "agreement": agreement,
        "int8_cpu": int8_report.to_dict(),
        "targets": targets,
    }


def markdown(result: dict) -> str:
    """The result as a Markdown table (committed beside the JSON)."""
    names = {"pytorch_eager_quality": "PyTorch eager FP32, GRMPModel.quality",
             "pytorch_eager_folded": "PyTorch eager FP32, folded image tower",
             "ort_fp32": "ONNX Runtime FP32", "ort_int8_cpu": f"ONNX Runtime INT8 ({result['int8_cpu']['chosen']})"}
    eager = result["engines"]["pytorch_eager_quality"]["median_ms"]
    m = result["model"]
    lines = [
        f"# Export speed: {m['backbone']} + {m['vpt_tokens']} deep prompts, batch 1, "
        f"{result['threads']['onnxruntime_intra_op']} threads",
        "",
        f"`{result['command']}` on {result['machine']['cpu']} ({result['date']}); "
        f"load average {result['machine']['load_average_before']} -> {result['machine']['load_average_after']} "
        "(shared machine).",
        "",
        "| engine | median ms | p10-p90 ms | best ms | n | speedup vs eager (median / best) | GFLOP/s "
        "(median) | of FP32 GEMM peak (median / best) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    eager_best = result["engines"]["pytorch_eager_quality"]["min_ms"]
    for key, r in result["engines"].items():
        lines.append(f"| {names[key]} | {r['median_ms']:.0f} | {r['p10_ms']:.0f}-{r['p90_ms']:.0f} | "
                     f"{r['min_ms']:.0f} | {r['iterations']} | {eager / r['median_ms']:.2f}x / "
                     f"{eager_best / r['min_ms']:.2f}x | {r['gflops_per_s']:.1f} | "
                     f"{100 * r['fraction_of_fp32_gemm_peak']:.0f}% / "
                     f"{100 * r['fraction_of_fp32_gemm_peak_best_call']:.0f}% |")
    f = result["flops_per_call"]
    a = result["agreement"]
    lines += [
        "",
        f"FLOPs per image (MatMul/Conv): image tower {f['image_tower_counted'] / 1e9:.2f} G counted "
        f"({f['image_tower_closed_form'] / 1e9:.2f} G closed form); GRMPModel.quality also runs the text tower "
        f"({f['quality_forward'] / 1e9:.2f} G in all). FP32 GEMM peak measured here (fastest "
        f"{GEMM_N}x{GEMM_N} matmul, {result['threads']['torch_intra_op']} threads): "
        f"{result['fp32_gemm_gflops']['peak']:.1f} GFLOP/s (median during the rotation "
        f"{result['fp32_gemm_gflops']['torch_in_rotation_median']:.1f}).",
        "",
        f"Agreement on {a['n']} real crops ({len(a['images'])} kodak24/mcmaster photos): SRCC INT8 vs PyTorch "
        f"{a['srcc_int8_cpu_vs_pytorch']:.4f}, ONNX FP32 vs PyTorch {a['srcc_ort_fp32_vs_pytorch']:.5f} "
        f"(PyTorch score std {a['pytorch_score_std']:.4f}).",
        "",
        "| target | value | met |",
        "|---|---:|:---:|",
    ]
    for key, t in result["targets"].items():
        lines.append(f"| {key} {t['target']} | {t['value']:.3f} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from grmp_edge.artifacts import atomic_write_json, atomic_write_text

    result = main(ARGS)
    out = Path(ARGS.out)
    atomic_write_json(out, result)
    atomic_write_text(out.with_suffix(".md"), markdown(result))
    print(markdown(result))
