"""Two real RTSP cameras on 127.0.0.1 (GStreamer's RTSP server, looping the frames of a sample video)
scored by one ``grmp-edge run``: one camera is killed mid-stream and started again; the run reports
the loss, reconnects with backoff and goes on, and the other camera never stalls meanwhile.

CI installs: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
(Debian packages; the server runs under the system Python, the only one python3-gi imports in).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest
from loopback import free_port

from grmp_edge.data.pristine import sample_video

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).resolve().parents[1] / "support" / "rtsp_server.py"
APT = "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly"
WAIT_S = 60  # generous bounds on each wait below, so that a broken run fails instead of hanging


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> str:
    """The sample video's frames as small JPEGs (the server loops them): a ``%04d`` pattern."""
    check = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.fail(f"the RTSP test needs Debian's {APT}: {check.stderr.strip().splitlines()[-1:]}")
    folder = tmp_path_factory.mktemp("rtsp-frames")
    cap = cv2.VideoCapture(str(sample_video()))
    count = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        cv2.imwrite(str(folder / f"{count:04d}.jpg"), cv2.resize(bgr, (320, 180), interpolation=cv2.INTER_AREA))
        count += 1
    cap.release()
    assert count > 50
    return str(folder / "%04d.jpg")


class Camera:
    """One RTSP server process at rtsp://127.0.0.1:PORT/cam; ``kill()`` drops it like a power cut."""

    def __init__(self, pattern: str):
        self.pattern, self.port = pattern, free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), str(self.port), "cam", self.pattern],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.process.stdout.readline()
        assert line.strip() == "ready", line + self.process.stdout.read()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Run:
    """``grmp-edge run`` in a subprocess, its JSON lines and log lines collected as they come."""

    def __init__(self, args: list[str], env: dict):
        self.records: list[dict] = []
        self.log: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen([sys.executable, "-m", "grmp_edge.cli", "run", *args], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for stream, out, parse in ((self.process.stdout, self.records, json.loads), (self.process.stderr, self.log, str)):
            threading.Thread(target=self._read, args=(stream, out, parse), daemon=True).start()

    def _read(self, stream, out: list, parse) -> None:
        for line in stream:
            with self._changed:
                out.append(parse(line))
                self._changed.notify_all()

    def wait_for(self, what: str, predicate) -> None:
        deadline = time.monotonic() + WAIT_S
        with self._changed:
            while not predicate():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gave up waiting for {what}; log:\n" + "".join(self.log[-30:]))
                self._changed.wait(0.5)

    def of(self, url: str) -> list[dict]:
        return [r for r in self.records if r["source"] == url]


def test_a_camera_lost_mid_stream_reconnects_and_the_other_never_stalls(frames, bundle, tmp_path):
    flaky, steady = Camera(frames), Camera(frames)
    flaky.start()
    steady.start()
    env = dict(os.environ, GRMP_EDGE_RUNS=str(tmp_path / "runs"), OMP_NUM_THREADS="1")
    run = Run(["--bundle", str(bundle), "--source", flaky.url, "--source", steady.url, "--name", "rtsp"], env)
    try:
        run.wait_for("frames from both cameras", lambda: len(run.of(flaky.url)) >= 15 and len(run.of(steady.url)) >= 15)
        flaky.kill()
        steady_at_loss = len(run.of(steady.url))
        run.wait_for("the loss to be reported", lambda: any(f"{flaky.url} stopped delivering" in line for line in run.log))
        # While the flaky camera is down the steady one goes on scoring (25 fps: about a second more).
        run.wait_for("the steady camera to go on", lambda: len(run.of(steady.url)) >= steady_at_loss + 25)
        flaky.start()
        run.wait_for("the reconnect", lambda: any(f"{flaky.url} is back after" in line for line in run.log))
        run.wait_for("frames after the reconnect",
                     lambda: len([r for r in run.of(flaky.url) if r["ts"] > flaky_last_before(run, flaky)]) >= 10)
        run.process.send_signal(signal.SIGINT)
        assert run.process.wait(timeout=WAIT_S) == 130, "".join(run.log[-20:])  # the CLI's status after SIGINT
    finally:
        if run.process.poll() is None:
            run.process.kill()
        flaky.kill()
        steady.kill()
    first_back = next(r for r in run.of(flaky.url) if r.get("gap_s") is not None)
    before = [r for r in run.of(flaky.url) if r["ts"] < first_back["ts"]]
    assert first_back["gap_s"] > 0 and len(before) >= 15
    # The steady camera kept its pace through the outage: frames scored between the flaky one's last
    # frame before the loss and its first after the reconnect.
    during = [r for r in run.of(steady.url) if before[-1]["ts"] < r["ts"] < first_back["ts"]]
    assert len(during) >= 25
    frames_of_steady = [r["frame"] for r in run.of(steady.url)]
    assert frames_of_steady == sorted(frames_of_steady)
    summary = json.loads((tmp_path / "runs" / "run" / "rtsp" / "summary.json").read_text())
    parts = {s["source"]: s for s in summary["sources"]}
    assert parts[flaky.url]["gaps"] == 1 and parts[steady.url]["gaps"] == 0
    assert summary["stopped_by"] == "SIGINT"


def flaky_last_before(run: Run, camera: Camera) -> float:
    """The timestamp of the flaky camera's last frame before its first gap (inf until it is back)."""
    records = run.of(camera.url)
    back = next((i for i, r in enumerate(records) if r.get("gap_s") is not None), None)
    return float("inf") if back is None or back == 0 else records[back - 1]["ts"]
