"""``grmp-edge run --serve``: a live web page with every source, its score and its events.

A :class:`WebSink` is one more sink of the run, so the pipeline needs no change to be watched. It
serves from the run's own process with the standard library's ``ThreadingHTTPServer``: nothing to
install beside the runtime on a Jetson, and a thread per connection is ample for the handful of
people who watch a camera at once. Routes:

======================  =======================================================================
``/``                   the page (``static/``: plain HTML, JS and CSS; no build step, no CDN)
``/api/state``          JSON: per source the score, smoothed score, alarm state, fps, latency,
                        latest events and the score history of the last ``history_s`` seconds
``/api/stream``         Server-Sent Events: that state, pushed when it changes (at most
                        ``push_hz`` times a second); a viewer gets the history once, then only
                        the new points
``/frame/ID.jpg``       source ID's latest frame with the score overlay, as JPEG
``/metrics``            Prometheus text, when a :class:`~grmp_edge.runtime.sinks.MetricsSink`
                        is handed in
======================  =======================================================================

Cost on the device: ``write()`` updates a few numbers and keeps a reference to the latest frame,
nothing more. A frame is encoded only when a viewer asks for it, after downscaling to ``max_width``,
and a source's pictures are encoded at most ``push_hz`` times a second however many viewers ask
(they share the latest one). The page asks for the next picture only once the previous one has
arrived, so a slow viewer gets fewer pictures rather than a backlog. A viewer that goes away ends
its connection's thread at the next write.

Sources are told apart by the record's ``source`` field when it has one (runs of several sources),
else by the source's name; each gets a tile, in the order they first deliver a frame.
"""
from __future__ import annotations

import collections
import dataclasses
import ipaddress
import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

from grmp_edge.errors import GrmpError, opencv
from grmp_edge.runtime.sinks import METRICS_CONTENT_TYPE, MetricsSink, Sink, overlay_bgr, send_body, serve_http
from grmp_edge.runtime.source_state import SourceState
from grmp_edge.runtime.sources import Frame, FrameSource

STATIC = Path(__file__).with_name("static")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
FRAME_PATH = re.compile(r"/frame/(\d+)\.jpg")
FPS_WINDOW_S = 5.0  # fps counts the frames of the last few seconds, so a stalled source drops to 0
HISTORY_STEP_S = 0.5  # one chart point per half second (and one per event): 600 points for 5 minutes
KEEPALIVE_S = 15.0  # an idle stream writes a comment this often, so a viewer that left is noticed


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"8080"`` or ``"HOST:8080"`` as ``(host, port)``; without a host only this machine can connect."""
    host, _, port = text.strip().rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise GrmpError(f"--serve takes [HOST:]PORT, such as 8080 or 0.0.0.0:8080, got {text!r}")
    return host or default_host, int(port)


def encode_jpeg(frame: Frame, record: dict, degraded: bool, max_width: int = 960, quality: int = 80) -> bytes:
    """The frame with the run's score overlay as JPEG bytes, downscaled first when wider than ``max_width``."""
    cv2 = opencv()
    rgb = frame.rgb
    if rgb.shape[1] > max_width:
        height = max(1, round(rgb.shape[0] * max_width / rgb.shape[1]))
        rgb = cv2.resize(rgb, (max_width, height), interpolation=cv2.INTER_AREA)
    bgr = overlay_bgr(dataclasses.replace(frame, rgb=rgb), record, degraded)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise GrmpError(f"OpenCV could not encode frame {frame.index} as JPEG")
    return data.tobytes()


class _Tile:
    """What the page shows of one source: its :class:`SourceState`, the chart's points, the latest
    events and frame, and the latest picture; guarded by the sink's lock (``encoding`` guards ``jpeg``)."""

    def __init__(self, tile_id: str, name: str, history_s: float, events: int):
        self.id, self.name = tile_id, name
        self.history_s = history_s
        self.state = SourceState(latency_window=None)  # the page shows each record's own latencies
        self.frame: Optional[Frame] = None
        # (n, ts, score, smoothed); n numbers the points so that a viewer can be sent only newer ones
        self.points: collections.deque = collections.deque(maxlen=int(history_s / HISTORY_STEP_S) + events)
        self.points_total = 0
        self.events: collections.deque = collections.deque(maxlen=events)
        self.jpeg: tuple[int, float, bytes] = (0, -math.inf, b"")  # (frames when encoded, monotonic time, bytes)
        self.encoding = threading.Lock()

    def update(self, record: dict, frame: Frame, now: float) -> None:
        self.state.update(record, now)
        self.frame = frame
        ts = record["ts"]
        if record["event"]:
            self.events.append({"ts": ts, "frame": record["frame"], "event": record["event"],
                                "smoothed": record["smoothed"]})
        if record.get("gap_s") is not None:
            self.events.append({"ts": ts, "frame": record["frame"], "event": "back", "gap_s": record["gap_s"],
                                "smoothed": record["smoothed"]})
        # Event frames always get a point, so the chart's line crosses the threshold where the marker is.
        if not self.points or ts - self.points[-1][1] >= HISTORY_STEP_S or record["event"]:
            self.points_total += 1
            self.points.append((self.points_total, ts, record["score"], record["smoothed"]))
            while self.points[0][1] < ts - self.history_s:
                self.points.popleft()

    def to_dict(self, now: float, since: int) -> dict:
        record = self.state.record
        return {
            "id": self.id,
            "name": self.name,
            "frames": self.state.frames,
            "frame": record["frame"],
            "ts": record["ts"],
            "media_s": record.get("media_s"),
            "score": record["score"],
            "smoothed": record["smoothed"],
            "degraded": self.state.degraded,
            "fps": round(self.state.fps(now, FPS_WINDOW_S), 2),
            "latency_ms": record["latency_ms"],
            "events": list(self.events),
            "points_total": self.points_total,
            "history": [[ts, score, smoothed] for n, ts, score, smoothed in self.points if n > since],
        }


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    timeout = 60  # a viewer that stops reading (or never asks) gives its thread back after a minute

    def do_GET(self):  # noqa: N802 (http.server's naming)
        try:
            self.server.sink.respond(self, self.path.split("?", 1)[0])
        except OSError:
            pass  # the viewer went away or stalled; this connection's thread ends here

    def log_message(self, *args):  # a picture request per frame per viewer must not flood stderr
        pass


class _Server(ThreadingHTTPServer):
    sink: "WebSink"


class WebSink(Sink):
    """Serve the live page at ``http://HOST:PORT/`` while the run goes on (routes in the module doc).

    ``metrics``: the MetricsSink whose text ``/metrics`` serves (None: no ``/metrics`` here);
    ``low``, ``high``: the alarm thresholds, drawn on the charts; ``title``: the page's heading;
    ``history_s``: seconds of score history per chart; ``events``: events kept per source;
    ``max_width``: pictures are downscaled to this width before encoding; ``jpeg_quality``: 1-100;
    ``push_hz``: the most state updates a second one viewer is sent, and the most pictures a second
    one source is encoded for all viewers together. Binds 127.0.0.1 unless told otherwise; port 0
    picks a free port (``.port`` says which). A port in use is a GrmpError.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", *, metrics: Optional[MetricsSink] = None,
                 low: Optional[float] = None, high: Optional[float] = None, title: str = "grmp-edge",
                 history_s: float = 300.0, events: int = 20, max_width: int = 960, jpeg_quality: int = 80,
                 push_hz: float = 10.0):
        self.metrics = metrics
        self.low, self.high, self.title = low, high, title
        self.history_s, self.events = history_s, events
        self.max_width, self.jpeg_quality = max_width, jpeg_quality
        self._push_interval = 1.0 / push_hz
        self._changed = threading.Condition()  # its lock guards the tiles and the version
        self._version = 0
        self._tiles: dict[str, _Tile] = {}  # by source name
        self._ids: dict[str, _Tile] = {}  # by the id in URLs
        self._closed = threading.Event()
        # Read once: the page is a few kilobytes, and a run must not depend on files changing under it.
        self._static = {f"/static/{path.name}": (path.read_bytes(), CONTENT_TYPES[path.suffix])
                        for path in STATIC.iterdir() if path.suffix in CONTENT_TYPES}
        self._static["/"] = self._static.pop("/static/index.html")
        self._server = serve_http(_Server, host, port, _Handler, "the live page")
        self._server.sink = self
        self.host, self.port = host, self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect (the bound address is a loopback one)."""
        return ipaddress.ip_address(self._server.server_address[0]).is_loopback

    def write(self, record: dict, frame: Frame, source: FrameSource) -> None:
        name = record.get("source") or source.name
        now = time.monotonic()
        with self._changed:
            tile = self._tiles.get(name)
            if tile is None:
                tile = self._tiles[name] = _Tile(str(len(self._tiles)), name, self.history_s, self.events)
                self._ids[tile.id] = tile
            tile.update(record, frame, now)
            self._version += 1
            self._changed.notify_all()

    def state(self, since: Optional[dict] = None) -> dict:
        """What the page shows, as JSON-ready data (``/api/state``).

        ``since`` maps a source id to the ``points_total`` a viewer already has: only newer history
        points are included (``"full": false``); without it, all of them (``"full": true``).
        """
        now = time.monotonic()
        with self._changed:
            sources = [tile.to_dict(now, (since or {}).get(tile.id, 0)) for tile in self._tiles.values()]
        return {"title": self.title, "low": self.low, "high": self.high, "history_s": self.history_s,
                "full": since is None, "sources": sources}

    def picture(self, tile_id: str) -> Optional[bytes]:
        """Source ``tile_id``'s latest frame with the overlay as JPEG; None for no such source (yet)."""
        with self._changed:
            tile = self._ids.get(tile_id)
            if tile is None:
                return None
            frame, record, degraded, frames = tile.frame, tile.state.record, tile.state.degraded, tile.state.frames
        with tile.encoding:  # viewers asking at once wait for one encoding instead of each making one
            encoded, at, data = tile.jpeg
            now = time.monotonic()
            if encoded < frames and now - at >= self._push_interval:
                data = encode_jpeg(frame, record, degraded, self.max_width, self.jpeg_quality)
                tile.jpeg = (frames, now, data)
            return data

    def respond(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        """Answer one GET (called on the connection's own thread)."""
        if path in self._static:
            body, content_type = self._static[path]
            send_body(handler, body, content_type)
        elif path == "/api/state":
            send_body(handler, json.dumps(self.state()).encode("utf-8"), "application/json")
        elif path == "/api/stream":
            self._stream(handler)
        elif path == "/metrics" and self.metrics is not None:
            send_body(handler, self.metrics.render().encode("utf-8"), METRICS_CONTENT_TYPE)
        elif (match := FRAME_PATH.fullmatch(path)) and (body := self.picture(match.group(1))) is not None:
            send_body(handler, body, "image/jpeg")
        else:
            handler.send_error(404)

    def _stream(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        since: Optional[dict] = None  # what history this viewer has: nothing yet
        seen = -1
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._closed.is_set() or self._version != seen, KEEPALIVE_S)
                if self._closed.is_set():
                    return
                changed, seen = self._version != seen, self._version
            if changed:
                state = self.state(since)
                since = {source["id"]: source["points_total"] for source in state["sources"]}
                message = b"data: " + json.dumps(state).encode("utf-8") + b"\n\n"
            else:
                message = b": keepalive\n\n"
            handler.wfile.write(message)
            handler.wfile.flush()
            if self._closed.wait(self._push_interval):
                return

    def close(self) -> None:
        with self._changed:
            self._closed.set()
            self._changed.notify_all()  # open streams end now instead of at their next keepalive
        self._server.shutdown()
        self._server.server_close()
