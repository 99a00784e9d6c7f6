"""The live page's server (``grmp-edge run --serve``) without a browser: state, stream, pictures, viewers."""
from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from grmp_edge.cli import main
from grmp_edge.errors import GrmpError
from grmp_edge.runtime.sinks import MetricsSink
from grmp_edge.runtime.sources import Frame, FrameSource
from grmp_edge.runtime.web import WebSink, parse_address
from grmp_edge.runtime.web import server as web_server

TS0 = 1767000000.0


def _frame(i: int, width: int = 96, height: int = 72) -> Frame:
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0] = 40 + (i * 37) % 150  # a red level that changes with i
    return Frame(i, TS0 + i, rgb)


def _record(i: int, score: float = 0.6, event: str | None = None, source: str | None = None) -> dict:
    record = {"frame": i, "ts": TS0 + i, "score": score, "smoothed": score - 0.01, "event": event,
              "latency_ms": {"capture": 1.0, "preprocess": 2.0, "infer": 3.0, "total": 6.5}}
    if source is not None:
        record["source"] = source
    return record


@pytest.fixture
def sink():
    opened = WebSink(0, low=0.4, high=0.5, title="test run", push_hz=100.0)
    yield opened
    opened.close()


def _get(server: WebSink | int, path: str) -> tuple[int, str, bytes]:
    """Status, content type and body of a GET to a sink (or a port) on this machine."""
    port = server if isinstance(server, int) else server.port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], b""


class _Stream:
    """A Server-Sent Events client: ``next()`` returns the next ``data:`` message as JSON."""

    def __init__(self, sink: WebSink):
        self.conn = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=10)
        self.conn.request("GET", "/api/stream")
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        assert self.response.headers["Content-Type"] == "text/event-stream"

    def next(self) -> dict:
        data = []
        while True:
            line = self.response.readline()
            if not line:
                raise EOFError("the stream ended")
            line = line.decode("utf-8").rstrip("\n")
            if line.startswith("data: "):
                data.append(line[len("data: "):])
            elif not line and data:
                return json.loads("\n".join(data))

    def close(self) -> None:
        self.conn.close()


def test_state_has_one_tile_per_source_with_score_fps_latency_and_events(sink):
    one, other = FrameSource("video a.mp4"), FrameSource("ignored when records name their source")
    for i in range(5):
        sink.write(_record(i, score=0.3 if i >= 3 else 0.6, event="degraded" if i == 3 else None), _frame(i), one)
        sink.write(_record(i, source="rtsp://cam2/live"), _frame(i), other)
    status, content_type, body = _get(sink, "/api/state")
    assert status == 200 and content_type == "application/json"
    state = json.loads(body)
    assert state["title"] == "test run" and (state["low"], state["high"]) == (0.4, 0.5) and state["full"]
    first, second = state["sources"]
    assert (first["id"], first["name"]) == ("0", "video a.mp4")
    assert (second["id"], second["name"]) == ("1", "rtsp://cam2/live")
    assert first["frames"] == 5 and first["frame"] == 4 and first["score"] == 0.3 and first["smoothed"] == 0.29
    assert first["degraded"] is True and second["degraded"] is False
    assert [e["event"] for e in first["events"]] == ["degraded"] and first["events"][0]["frame"] == 3
    assert second["events"] == []
    assert first["latency_ms"]["total"] == 6.5 and first["fps"] > 0
    # One chart point per half second of frame time (frames are 1 s apart here), each [ts, score, smoothed].
    assert [p[0] for p in first["history"]] == [TS0 + i for i in range(5)]
    assert first["history"][3] == [TS0 + 3, 0.3, 0.29]


def test_history_keeps_the_last_history_s_seconds_and_every_event(sink):
    source = FrameSource("cam")
    for i in range(400):  # 400 s of frames, one per second; the chart keeps 300 s
        sink.write(_record(i, event="recovered" if i == 399 else None), _frame(i), source)
    history = json.loads(_get(sink, "/api/state")[2])["sources"][0]["history"]
    assert history[0][0] == TS0 + 99 and history[-1][0] == TS0 + 399 and len(history) == 301


def test_a_gap_in_a_live_source_is_an_event(sink):
    record = dict(_record(0), gap_s=2.5)
    sink.write(record, _frame(0), FrameSource("cam"))
    (event,) = sink.state()["sources"][0]["events"]
    assert event["event"] == "back" and event["gap_s"] == 2.5


def test_stream_sends_the_state_then_only_new_history_points(sink):
    source = FrameSource("cam")
    sink.write(_record(0), _frame(0), source)
    stream = _Stream(sink)
    try:
        first = stream.next()
        assert first["full"] and first["sources"][0]["history"] == [[TS0, 0.6, 0.59]]
        sink.write(_record(1, score=0.7), _frame(1), source)
        second = stream.next()
        assert not second["full"] and second["sources"][0]["score"] == 0.7
        assert second["sources"][0]["history"] == [[TS0 + 1, 0.7, 0.69]]
    finally:
        stream.close()


@pytest.fixture
def encodes(monkeypatch) -> list[int]:
    """The frame index of every picture the server encodes, in order."""
    calls: list[int] = []
    encode = web_server.encode_jpeg

    def counting(*args, **kwargs):
        calls.append(args[0].index)
        return encode(*args, **kwargs)

    monkeypatch.setattr(web_server, "encode_jpeg", counting)
    return calls


def test_pictures_are_encoded_only_when_asked_and_once_per_frame(encodes):
    sink = WebSink(0, push_hz=1e9)  # no rate limit in the way: this test is about when, not how often
    try:
        source = FrameSource("cam")
        for i in range(50):
            sink.write(_record(i), _frame(i, width=1920, height=1080), source)
        assert encodes == []  # nobody watched: no frame was encoded
        responses = [_get(sink, "/frame/0.jpg") for _ in range(3)]
        assert encodes == [49]  # the latest frame, once for three requests
        status, content_type, body = responses[0]
        assert status == 200 and content_type == "image/jpeg" and all(r[2] == body for r in responses)
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (540, 960, 3)  # downscaled to max_width before encoding
        # The overlay's black banner is at the top; below it the frame's red level (BGR order in the JPEG).
        assert image[:10, :10].mean() < 10 and abs(int(image[400, 400, 2]) - (40 + (49 * 37) % 150)) < 8
        sink.write(_record(50), _frame(50), source)
        _get(sink, "/frame/0.jpg")
        assert encodes == [49, 50]
        assert _get(sink, "/frame/7.jpg")[0] == 404
    finally:
        sink.close()


def test_a_source_is_encoded_at_most_push_hz_times_a_second_whoever_asks(encodes):
    sink = WebSink(0, push_hz=1e-6)  # one picture per ~12 days: every later request gets the first
    try:
        source = FrameSource("cam")
        sink.write(_record(0), _frame(0), source)
        first = _get(sink, "/frame/0.jpg")[2]
        sink.write(_record(1), _frame(1), source)
        assert _get(sink, "/frame/0.jpg")[2] == first and encodes == [0]
    finally:
        sink.close()


def test_several_viewers_at_once_and_one_that_leaves_costs_nothing(sink):
    source = FrameSource("cam")
    sink.write(_record(0), _frame(0), source)
    baseline = threading.active_count()
    streams = [_Stream(sink) for _ in range(2)]
    try:
        for stream in streams:
            assert stream.next()["sources"][0]["frames"] == 1
        # A viewer vanishes without a goodbye (tab closed, network gone): its connection is reset.
        gone = socket.create_connection(("127.0.0.1", sink.port), timeout=10)
        gone.sendall(b"GET /api/stream HTTP/1.0\r\n\r\n")
        received = b""
        while b"data: " not in received:
            received += gone.recv(65536)
        assert threading.active_count() == baseline + 3  # three viewers, a thread each
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()
        for i in range(1, 4):
            sink.write(_record(i), _frame(i), source)
        for stream in streams:
            while stream.next()["sources"][0]["frames"] < 4:
                pass
            assert _get(sink, "/frame/0.jpg")[0] == 200
        # The departed viewer's thread ended at its next write; the two others remain.
        deadline = time.monotonic() + 10
        while threading.active_count() > baseline + 2 and time.monotonic() < deadline:
            sink.write(_record(4), _frame(4), source)
            time.sleep(0.05)
        assert threading.active_count() == baseline + 2
    finally:
        for stream in streams:
            stream.close()


def test_close_ends_open_streams_and_frees_the_port():
    sink = WebSink(0)
    sink.write(_record(0), _frame(0), FrameSource("cam"))
    stream = _Stream(sink)
    stream.next()
    sink.close()
    with pytest.raises(EOFError):
        stream.next()
    stream.close()
    again = WebSink(sink.port)  # the port is free again
    again.close()


def test_page_static_files_and_metrics_on_the_same_port():
    metrics = MetricsSink(None)
    sink = WebSink(0, metrics=metrics)
    try:
        record, frame, source = _record(0, score=0.25), _frame(0), FrameSource("cam")
        metrics.write(record, frame, source)
        sink.write(record, frame, source)
        status, content_type, page = _get(sink, "/")
        assert status == 200 and content_type.startswith("text/html")
        assert b'src="/static/app.js"' in page and b'href="/static/style.css"' in page
        for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            status, content_type, body = _get(sink, f"/static/{name}")
            assert status == 200 and content_type.startswith(kind) and body
            # Offline: nothing is loaded from another host (no CDN, no web fonts).
            assert not re.search(rb"https?://", body), name
        assert not re.search(rb"https?://", page)
        status, content_type, text = _get(sink, "/metrics")
        assert status == 200 and b"grmp_score 0.25" in text and b"grmp_frames_total 1.0" in text
        assert _get(sink, "/static/../server.py")[0] == 404
    finally:
        sink.close()
    bare = WebSink(0)
    try:
        assert _get(bare, "/metrics")[0] == 404  # no MetricsSink handed in: no /metrics here
    finally:
        bare.close()


def test_binds_this_machine_only_by_default_and_a_taken_port_is_one_line():
    sink = WebSink(0)
    try:
        assert sink.host == "127.0.0.1" and sink.loopback and sink.url == f"http://127.0.0.1:{sink.port}/"
        with pytest.raises(GrmpError, match=f"cannot serve the live page on 127.0.0.1:{sink.port}"):
            WebSink(sink.port)
    finally:
        sink.close()
    everywhere = WebSink(0, "0.0.0.0")
    try:
        assert not everywhere.loopback
    finally:
        everywhere.close()


@pytest.mark.parametrize("text, expected", [("8080", ("127.0.0.1", 8080)), ("0.0.0.0:80", ("0.0.0.0", 80)),
                                            (":9000", ("127.0.0.1", 9000)), ("localhost:0", ("localhost", 0))])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host", "8080:", "1.2.3.4:99999", "-1"])
def test_parse_address_refuses_what_is_not_host_port(text):
    with pytest.raises(GrmpError, match=r"\[HOST:\]PORT"):
        parse_address(text)


def test_cli_refuses_a_bad_serve_address_before_loading_a_model(video, capsys):
    assert main(["run", "--bundle", "/no/such/bundle", "--source", str(video), "--serve", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "[HOST:]PORT" in err and len(err.splitlines()) == 1


def test_cli_serves_while_the_run_goes_on_and_shuts_down_on_sigterm(bundle, video, cli):
    proc = cli.popen(["run", "--bundle", str(bundle), "--source", str(video), "--serve", "0", "--realtime",
                      "--loop", "--quiet", "--no-save"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = None
        for line in proc.stderr:
            found = re.search(rb"live page at http://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
                break
        assert port, "no live page URL on stderr"
        deadline = time.monotonic() + 30
        frames = 0
        while frames <= 24 and time.monotonic() < deadline:  # past the 24-frame file's end: it loops
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=10) as response:
                sources = json.load(response)["sources"]
            frames = sources[0]["frames"] if sources else 0
            time.sleep(0.1)
        assert frames > 24
        assert sources[0]["name"] == f"video {video}" and sources[0]["media_s"] < 2.4
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert b"grmp_frames_total" in response.read()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()  # drained and summarised, then 143
    assert b"stopped by SIGTERM" in err and b"Traceback" not in err
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5)


def test_cli_gives_each_source_of_a_run_its_own_tile(bundle, video, make_video, tmp_path, cli):
    other = make_video(tmp_path / "other.avi", 12)
    proc = cli.popen(["run", "--bundle", str(bundle), "--source", str(video), "--source", str(other), "--serve", "0",
                      "--loop", "--quiet", "--no-save"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port = next(int(found.group(1)) for line in proc.stderr
                    if (found := re.search(rb"live page at http://127\.0\.0\.1:(\d+)/", line)))
        deadline = time.monotonic() + 30
        sources: list = []
        while len(sources) < 2 and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=10) as response:
                sources = json.load(response)["sources"]
            time.sleep(0.1)
        assert sorted(s["name"] for s in sources) == sorted([f"video {video}", f"video {other}"])
        assert all(_get(port, f"/frame/{s['id']}.jpg")[2][:2] == b"\xff\xd8" for s in sources)  # JPEGs
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
