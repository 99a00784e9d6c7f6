"""Spin or sleep: what ONNX Runtime's idle-thread spin-waiting costs a paced run, and what it buys an unpaced one.

    python benchmarks/ort_spin.py --bundle runs/export/quickstart [--threads 2] [--fps 25] [--calls 300]

ONNX Runtime's intra-op threads spin-wait after each call by default, so the next call starts at
once. A camera delivers a frame every 40 ms; between frames the spinning threads burn CPU a Jetson
would rather keep (``grmp-edge run`` now lets them sleep when every frame comes at its source's own
rate: cameras, streams, ``--realtime`` files). Both settings run side by side in this process
through the runtime's own backend (``open_backend(..., spin=...)``) on one frame's crops of the
bundle's crop plan, alternating ``--repeats`` times:

* **back to back**: ``--calls`` calls in a row; wall ms per call and the process's CPU ms per call;
* **paced**: ``--calls`` calls at ``--fps``; the process's CPU ms per frame and the call latency.

Reports the median and the range over repeats. Writes ``benchmarks/ort_spin.{json,md}`` (``--out``).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from result_files import command_line, write_result  # benchmarks/ is on the path


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None, help="bundle (default: runs/export/quickstart)")
    parser.add_argument("--precision", default="fp32", help="bundle file for ONNX Runtime's CPU provider")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--fps", type=float, default=25.0, help="rate of the paced calls")
    parser.add_argument("--calls", type=int, default=300, help="calls per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds of both settings")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/ort_spin.json"))
    return parser.parse_args(argv)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(backend, batch: np.ndarray, calls: int, fps: float) -> dict[str, float]:
    """Back-to-back and paced numbers of one backend (see the module doc)."""
    for _ in range(5):
        backend.infer(batch)
    wall, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(calls):
        backend.infer(batch)
    out = {"ms_per_call": 1e3 * (time.perf_counter() - wall) / calls,
           "cpu_ms_per_call": 1e3 * (cpu_seconds() - cpu) / calls}
    latencies, start, cpu = [], time.perf_counter(), cpu_seconds()
    for i in range(calls):
        began = time.perf_counter()
        backend.infer(batch)
        latencies.append(time.perf_counter() - began)
        time.sleep(max(0.0, start + (i + 1) / fps - time.perf_counter()))
    out["paced_cpu_ms_per_frame"] = 1e3 * (cpu_seconds() - cpu) / calls
    out["paced_latency_ms_median"] = 1e3 * float(np.median(latencies))
    out["paced_latency_ms_p90"] = 1e3 * float(np.percentile(latencies, 90))
    return out


def markdown(result: dict) -> str:
    """The medians (and ranges) as a Markdown table, one row per setting."""
    keys = ("ms_per_call", "cpu_ms_per_call", "paced_cpu_ms_per_frame", "paced_latency_ms_median",
            "paced_latency_ms_p90")
    lines = ["### ONNX Runtime: spin-wait vs sleep", "",
             f"`{result['command']}` on {result['date']}; {result['description']}, one frame = "
             f"{result['crops']} crops per call, paced at {result['fps']:g} fps, {result['calls']} calls per "
             f"measurement, median (min-max) of {result['repeats']} alternating rounds; machine "
             f"{result['machine']['cpu']}.", "",
             "| idle threads | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
             "|---|" + "---:|" * len(keys)]
    for name, row in result["settings"].items():
        cells = [f"{row[k]['median']:.1f} ({row[k]['min']:.1f}-{row[k]['max']:.1f})" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from grmp_edge.errors import GrmpError
    from grmp_edge.report.machine import machine_context
    from grmp_edge.runs import runs_root
    from grmp_edge.runtime.backends import open_backend
    from grmp_edge.runtime.bundle import load_bundle

    if min(args.threads, args.calls, args.repeats) < 1 or args.fps <= 0:
        raise GrmpError("--threads, --calls and --repeats must be at least 1 and --fps positive")
    bundle = load_bundle(args.bundle or runs_root() / "export" / "quickstart")
    crops, _ = bundle.preprocess.crop_plan(None)
    size = bundle.preprocess.size
    batch = np.random.default_rng(0).integers(0, 256, (crops, size, size, 3), dtype=np.uint8)
    settings = {"spin-wait (ORT default)": True, "sleep (paced runs now)": False}
    rounds: dict[str, list[dict]] = {name: [] for name in settings}
    description = ""
    for repeat in range(args.repeats):
        for name, spin in settings.items():
            with open_backend(bundle, "onnxruntime", args.precision, providers=["CPUExecutionProvider"],
                              threads=args.threads, spin=spin) as backend:
                rounds[name].append(measure(backend, batch, args.calls, args.fps))
                description = backend.describe().replace(" that sleep between calls", "")
            print(f"round {repeat + 1}, {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in rounds[name][-1].items()),
                  flush=True)
    result = {
        "command": command_line("ort_spin.py", argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "bundle": str(bundle.folder), "description": description, "crops": crops, "fps": args.fps,
        "calls": args.calls, "repeats": args.repeats, "machine": machine_context(args.threads),
        "settings": {name: {k: {"median": statistics.median(r[k] for r in runs), "min": min(r[k] for r in runs),
                                "max": max(r[k] for r in runs)} for k in runs[0]}
                     for name, runs in rounds.items()},
        "rounds": rounds,
    }
    print(markdown(result))
    write_result(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    from grmp_edge.errors import run_script

    run_script(main)
