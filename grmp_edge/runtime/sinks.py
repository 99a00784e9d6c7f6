"""Where scored frames go: JSON lines, CSV, an annotated video, a window, a Prometheus endpoint.

Each sink receives ``write(record, frame, source)`` once per scored frame (``record`` is the JSON
object below, ``frame`` the :class:`~grmp_edge.runtime.sources.Frame` with its pixels, ``source``
the :class:`~grmp_edge.runtime.sources.FrameSource` for its counters) and ``close()`` once at the
end, always, whatever stopped the run. The record::

    {"frame": 12, "ts": 1767000000.123, "score": 0.61, "smoothed": 0.58, "event": null,
     "latency_ms": {"capture": 3.1, "preprocess": 0.6, "infer": 4.2, "total": 9.0},
     "path": "frames/0012.jpg",   # only for frames read from image files (folder, glob, image)
     "media_s": 0.48,             # only for video files: the frame's time in the video
     "gap_s": 2.4,                # only on the first frame after a live source came back
     "source": "rtsp://cam1/live"}  # only in runs of several sources: which one

``event`` is ``"degraded"``, ``"recovered"`` or null (see :mod:`grmp_edge.runtime.postprocess`).
Text files are line-buffered, so an interrupted run leaves every line but at most the one being
written; the video is written to a hidden temporary file and renamed into place when it is closed.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional, TextIO

import numpy as np

from grmp_edge.errors import GrmpError, opencv
from grmp_edge.runtime.postprocess import DEGRADED, RECOVERED
from grmp_edge.runtime.source_state import LATENCY_STAGES, SourceState, alarm_after
from grmp_edge.runtime.sources import Frame, FrameSource, SourceStats
CSV_COLUMNS = ("frame", "ts", "score", "smoothed", "event",
               *(f"{stage}_ms" for stage in LATENCY_STAGES), "path")
VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v"}
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text format 0.0.4


class Sink:
    """A consumer of scored frames."""

    def write(self, record: dict, frame: Frame, source: FrameSource) -> None:
        raise NotImplementedError

    def should_stop(self) -> bool:
        """True once this sink asks the run to end (the window was closed, stdout's reader went away)."""
        return False

    def close(self) -> None:
        """Flush and release; called exactly once."""


class JsonlSink(Sink):
    """One JSON object per line, to a file (line-buffered) or a text stream (flushed per line)."""

    def __init__(self, target):
        if isinstance(target, (str, os.PathLike)):
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream: TextIO = open(path, "w", buffering=1, encoding="utf-8")
            self._owned = True
        else:
            self._stream, self._owned = target, False
        self._broken = False

    def write(self, record: dict, frame: Frame, source: FrameSource) -> None:
        if self._broken:
            return
        try:
            self._stream.write(json.dumps(record) + "\n")
            if not self._owned:
                self._stream.flush()
        except BrokenPipeError:
            # The reader went away (`grmp-edge run ... | head`): stop the run instead of crashing, and
            # point stdout at /dev/null so the interpreter's final flush cannot raise again.
            self._broken = True
            if self._stream is sys.stdout:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)

    def should_stop(self) -> bool:
        return self._broken

    def close(self) -> None:
        if self._owned:
            self._stream.close()
        elif not self._broken:
            self._stream.flush()


class CsvSink(Sink):
    """The record flattened into :data:`CSV_COLUMNS` (empty cells for null), line-buffered;
    ``source_column`` appends a ``source`` column (runs of several sources)."""

    def __init__(self, path, source_column: bool = False):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", buffering=1, encoding="utf-8", newline="")
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._source_column = source_column
        self._writer.writerow(CSV_COLUMNS + (("source",) if source_column else ()))

    def write(self, record: dict, frame: Frame, source: FrameSource) -> None:
        latency = record["latency_ms"]
        row = [record["frame"], record["ts"], record["score"], record["smoothed"], record["event"],
               *(latency[stage] for stage in LATENCY_STAGES), record.get("path")]
        if self._source_column:
            row.append(record.get("source"))
        self._writer.writerow(["" if value is None else value for value in row])

    def close(self) -> None:
        self._file.close()


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def overlay_bgr(frame: Frame, record: dict, degraded: bool) -> np.ndarray:
    """A BGR copy of the frame with the score, smoothed score and alarm state drawn on a top banner."""
    cv2 = opencv()
    bgr = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)
    width = bgr.shape[1]
    scale = max(0.4, width / 1600.0)
    thickness = max(1, int(round(scale * 2)))
    pad = max(4, int(8 * scale))
    text = f"score {_fmt(record['score'])}  smoothed {_fmt(record['smoothed'])}"
    if degraded:
        text += "  DEGRADED"
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    cv2.rectangle(bgr, (0, 0), (min(width, tw + 2 * pad), th + base + 2 * pad), (0, 0, 0), -1)
    colour = (0, 0, 255) if degraded else (0, 220, 0)
    cv2.putText(bgr, text, (pad, pad + th), font, scale, colour, thickness, cv2.LINE_AA)
    return bgr


class VideoSink(Sink):
    """Frames with a score overlay, encoded with cv2.VideoWriter (MJPG for .avi, mp4v for .mp4).

    The writer opens on the first frame (its size fixes the video's; later frames of another size are
    resized) at ``fps`` or else the source's nominal rate (25 when unknown). The video is encoded into
    a hidden temporary file beside ``path`` and renamed onto it when the sink closes, so ``path`` is
    either absent or a finished video.
    """

    def __init__(self, path, fps: Optional[float] = None):
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_CODECS:
            raise GrmpError(f"--save-video must end in one of {', '.join(VIDEO_CODECS)}, got {self.path.name}")
        self.fps = fps
        self._writer = None
        self._tmp: Optional[Path] = None
        self._size: Optional[tuple[int, int]] = None
        self._degraded = False

    def _open(self, width: int, height: int, fps: float) -> None:
        cv2 = opencv()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix, dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
        self._writer = cv2.VideoWriter(str(self._tmp), fourcc, float(fps), (width, height))
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise GrmpError(f"cannot write video {self.path}: OpenCV has no encoder for {self.path.suffix} here; try .avi")
        self._size = (width, height)

    def write(self, record: dict, frame: Frame, source: FrameSource) -> None:
        self._degraded = alarm_after(self._degraded, record)
        bgr = overlay_bgr(frame, record, self._degraded)
        if self._writer is None:
            self._open(bgr.shape[1], bgr.shape[0], self.fps or source.fps or 25.0)
        if (bgr.shape[1], bgr.shape[0]) != self._size:
            bgr = opencv().resize(bgr, self._size, interpolation=opencv().INTER_AREA)
        self._writer.write(bgr)

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.release()
        os.replace(self._tmp, self.path)
        self._writer = None


def screen_available() -> bool:
    """Whether a display server is reachable (X11 or Wayland on Linux; always on macOS/Windows)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class DisplaySink(Sink):
    """A window showing the annotated frames; ``q`` or Esc in the window ends the run."""

    WINDOW = "grmp-edge"

    def __init__(self):
        if not screen_available():
            raise GrmpError("--display needs a screen, and no DISPLAY or WAYLAND_DISPLAY is set "
                            "(over ssh use `ssh -X`, or record with --save-video FILE instead)")
        cv2 = opencv()
        try:
            cv2.namedWindow(self.WINDOW, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise GrmpError("--display needs an OpenCV with GUI support, and this one has none "
                            "(opencv-python-headless); use JetPack's OpenCV or pip install opencv-python, "
                            "or record with --save-video FILE") from None
        self._degraded = False
        self._stop = False

    def write(self, record: dict, frame: Frame, source: FrameSource) -> None:
        cv2 = opencv()
        self._degraded = alarm_after(self._degraded, record)
        cv2.imshow(self.WINDOW, overlay_bgr(frame, record, self._degraded))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self._stop = True

    def should_stop(self) -> bool:
        return self._stop

    def close(self) -> None:
        opencv().destroyWindow(self.WINDOW)


def serve_http(server_class, host: str, port: int, handler, what: str):
    """Bind ``server_class((host, port), handler)`` and serve it on a daemon thread; a port that cannot
    be bound is one line naming ``what``. Returns the server (``server_address`` has the real port)."""
    try:
        server = server_class((host, port), handler)
    except OSError as exc:
        raise GrmpError(f"cannot serve {what} on {host}:{port}: {exc.strerror or exc}") from None
    server.daemon_threads = True  # an open connection never holds the run's exit
    threading.Thread(target=server.serve_forever, name=what, daemon=True).start()
    return server


def send_body(handler: BaseHTTPRequestHandler, body: bytes, content_type: str) -> None:
    """Answer a GET with status 200 and ``body``; never cached, since every answer is the run's state now."""
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Cache-Control", "no-store")
    handler.end_headers()
    handler.wfile.write(body)


def _prom_number(value: float) -> str:
    """A sample value as the exposition format spells it (NaN, +Inf, -Inf, else Python's repr)."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _labels(source: Optional[str], labels: dict) -> str:
    """A sample's label set in exposition format: ``source`` first (when there is one), values escaped."""
    pairs = ([("source", source)] if source is not None else []) + list(labels.items())
    if not pairs:
        return ""
    escaped = (str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in pairs)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(pairs, escaped)) + "}"


def _latency_quantile(state: SourceState, stage: str, q: float) -> float:
    """A stage's latency quantile ``q`` (one of :attr:`MetricsSink.QUANTILES`) in seconds; NaN before any frame."""
    stats = state.latency.stats(stage)
    return math.nan if stats is None else stats[f"p{round(q * 100)}"] / 1e3


class MetricsSink(Sink):
    """Prometheus text exposition at ``http://HOST:PORT/metrics``, served from a daemon thread.

    Gauges ``grmp_score``, ``grmp_score_smoothed``, ``grmp_fps`` (frames scored over the last
    ``fps_window`` seconds), ``grmp_degraded``; counters ``grmp_frames_total``,
    ``grmp_drops_total``, ``grmp_corrupt_total``, ``grmp_source_gaps_total``,
    ``grmp_events_total{event}``; summary ``grmp_latency_seconds{stage}`` with quantiles over the
    last ``window`` frames. In runs of several sources (records with a ``source`` field) every
    sample carries a ``source`` label and each source keeps its own values. Binds 127.0.0.1 unless told otherwise; port 0 picks a free port
    (``.port`` says which); port None serves nothing, for a server that serves :meth:`render`
    itself (``grmp-edge run --serve``).
    """

    QUANTILES = (0.5, 0.9, 0.99)

    def __init__(self, port: Optional[int], host: str = "127.0.0.1", window: int = 1024, fps_window: float = 5.0):
        self._lock = threading.Lock()
        self._window = window
        self._fps_window = fps_window
        # Source label (None in single-source runs: no label) -> that source's values and its source's
        # counters, first seen first.
        self._sources: dict[Optional[str], SourceState] = {}
        self._stats: dict[Optional[str], SourceStats] = {}
        self._server = None
        if port is None:
            return
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] not in ("/", "/metrics"):
                    self.send_error(404)
                    return
                send_body(self, sink.render().encode("utf-8"), METRICS_CONTENT_TYPE)

            def log_message(self, *args):  # scrapes every few seconds must not spam stderr
                pass

        self._server = serve_http(ThreadingHTTPServer, host, port, Handler, "metrics")
        self.host, self.port = host, self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def write(self, record: dict, frame: Frame, source: FrameSource) -> None:
        with self._lock:
            label = record.get("source")
            if label not in self._sources:
                self._sources[label] = SourceState(self._window)
            self._sources[label].update(record, time.monotonic())
            self._stats[label] = source.stats

    def render(self) -> str:
        """The current metrics in Prometheus text format 0.0.4."""
        with self._lock:
            now = time.monotonic()
            # Before the first frame there is one unlabelled set of values, all empty.
            sources = self._sources or {None: SourceState(self._window)}
            lines: list[str] = []

            def metric(name: str, kind: str, help_text: str, value, *extra: dict) -> None:
                """One metric: ``value(label, m)`` per source, or ``value(label, m, **labels)`` per source and label set."""
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                for label, m in sources.items():
                    for labels in extra or ({},):
                        lines.append(f"{name}{_labels(label, labels)} {_prom_number(value(label, m, **labels))}")

            def stat(name: str):
                return lambda label, m: getattr(self._stats[label], name) if label in self._stats else 0

            metric("grmp_score", "gauge", "Latest quality score in (0, 1), higher is better.", lambda _, m: m.score)
            metric("grmp_score_smoothed", "gauge", "Exponentially smoothed quality score.", lambda _, m: m.smoothed)
            metric("grmp_degraded", "gauge", "1 while the hysteresis alarm says degraded.",
                   lambda _, m: float(m.degraded))
            metric("grmp_fps", "gauge", f"Frames scored per second over the last {self._fps_window:g} s.",
                   lambda _, m: m.fps(now, self._fps_window))
            metric("grmp_frames_total", "counter", "Frames scored.", lambda _, m: m.frames)
            metric("grmp_drops_total", "counter", "Frames a live source dropped because scoring was behind.",
                   stat("drops"))
            metric("grmp_corrupt_total", "counter", "Frames or images skipped because they could not be decoded.",
                   stat("corrupt"))
            metric("grmp_source_gaps_total", "counter", "Times a live source was lost and came back.", stat("gaps"))
            metric("grmp_events_total", "counter", "Alarm events.", lambda _, m, event: m.events[event],
                   *({"event": event} for event in (DEGRADED, RECOVERED)))
            metric("grmp_latency_seconds", "summary", "Per-frame latency by stage (quantiles over recent frames).",
                   lambda _, m, stage, quantile: _latency_quantile(m, stage, quantile),
                   *({"stage": stage, "quantile": q} for stage in LATENCY_STAGES for q in self.QUANTILES))
            for label, m in sources.items():
                for stage in LATENCY_STAGES:
                    labels = _labels(label, {"stage": stage})
                    lines.append(f"grmp_latency_seconds_sum{labels} {_prom_number(m.latency.total[stage] / 1e3)}")
                    lines.append(f"grmp_latency_seconds_count{labels} {m.frames}")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
