"""Sinks: JSON lines, CSV, annotated video, display checks, the Prometheus endpoint."""
from __future__ import annotations

import csv
import json
import re
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from grmp_edge.errors import GrmpError
from grmp_edge.runtime.sinks import CSV_COLUMNS, CsvSink, DisplaySink, JsonlSink, MetricsSink, VideoSink
from grmp_edge.runtime.sources import Frame, FrameSource


def frame_bgr(i: int) -> np.ndarray:
    """A 96x72 BGR test frame: a horizontal ramp whose level depends on ``i``."""
    ramp = np.linspace(0, 60, 96, dtype=np.float32)[None, :, None] + 40 + (i * 37) % 150
    return np.broadcast_to(ramp, (72, 96, 3)).astype(np.uint8)


def _frame(i: int, path: str | None = None) -> Frame:
    return Frame(i, 1767000000.0 + i, cv2.cvtColor(frame_bgr(i), cv2.COLOR_BGR2RGB), path, 1.0)


def _record(i: int, score: float = 0.5, event: str | None = None, path: str | None = None) -> dict:
    record = {"frame": i, "ts": 1767000000.0 + i, "score": score, "smoothed": score, "event": event,
              "latency_ms": {"capture": 1.0, "preprocess": 2.0, "infer": 3.0, "total": 6.5}}
    if path:
        record["path"] = path
    return record


class _Source(FrameSource):
    def __init__(self):
        super().__init__("test source")
        self.fps = 12.0


def test_jsonl_file_sink_writes_one_object_per_line_as_it_goes(tmp_path):
    out = tmp_path / "sub" / "frames.jsonl"
    sink = JsonlSink(out)
    src = _Source()
    sink.write(_record(0), _frame(0), src)
    # Line-buffered: the line is on disk before the sink is closed (an interrupted run keeps it).
    assert json.loads(out.read_text().splitlines()[0])["frame"] == 0
    sink.write(_record(1, path="a.png"), _frame(1, "a.png"), src)
    sink.close()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in rows] == [0, 1] and rows[1]["path"] == "a.png" and "path" not in rows[0]


def test_jsonl_stream_sink_stops_the_run_when_the_reader_goes_away():
    class Closed:
        def write(self, text):
            raise BrokenPipeError

        def flush(self):
            raise AssertionError("flushing a broken pipe")

    sink = JsonlSink(Closed())
    sink.write(_record(0), _frame(0), _Source())
    assert sink.should_stop()
    sink.write(_record(1), _frame(1), _Source())  # ignored, no exception
    sink.close()


def test_csv_sink(tmp_path):
    out = tmp_path / "frames.csv"
    sink = CsvSink(out)
    sink.write(_record(0, 0.25, "degraded"), _frame(0), _Source())
    sink.write(_record(1, 0.75, path="x/f.png"), _frame(1), _Source())
    sink.close()
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0]["event"] == "degraded" and rows[0]["path"] == "" and float(rows[0]["score"]) == 0.25
    assert rows[1]["event"] == "" and rows[1]["path"] == "x/f.png" and float(rows[1]["total_ms"]) == 6.5


def test_video_sink_appears_only_when_finished_and_carries_the_overlay(tmp_path):
    out = tmp_path / "scored.avi"
    sink = VideoSink(out)
    src = _Source()
    for i in range(6):
        sink.write(_record(i, 0.3 if i < 3 else 0.7, "degraded" if i == 0 else None), _frame(i), src)
    assert not out.exists()  # still encoding into a hidden temporary file
    sink.close()
    assert out.exists() and [p.name for p in tmp_path.iterdir()] == ["scored.avi"]
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    assert len(frames) == 6 and frames[0].shape == (72, 96, 3)
    # The banner is drawn at the top: the top rows differ from the source frame, the bottom does not.
    diff = np.abs(frames[0].astype(int) - frame_bgr(0).astype(int))
    assert diff[:12].mean() > 20 and diff[-20:].mean() < 6


def test_video_sink_resizes_frames_of_another_size(tmp_path):
    out = tmp_path / "mixed.avi"
    sink = VideoSink(out, fps=5)
    sink.write(_record(0), _frame(0), _Source())
    big = Frame(1, 0.0, np.zeros((144, 192, 3), np.uint8))
    sink.write(_record(1), big, _Source())
    sink.close()
    cap = cv2.VideoCapture(str(out))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (96, 72)
    cap.release()


def test_video_sink_rejects_unknown_containers(tmp_path):
    with pytest.raises(GrmpError, match="--save-video"):
        VideoSink(tmp_path / "x.gif")


def test_display_without_a_screen_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(GrmpError, match="needs a screen"):
        DisplaySink()


def test_display_with_headless_opencv_says_so(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")

    def no_gui(*args):
        raise cv2.error("The function is not implemented. Rebuild the library with GTK+")

    monkeypatch.setattr(cv2, "namedWindow", no_gui)
    with pytest.raises(GrmpError, match="GUI support"):
        DisplaySink()


# -- Prometheus ----------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_]+="[^"]*"(,[a-zA-Z_]+="[^"]*")*\})? '
                    r'(NaN|[+-]Inf|-?[0-9.]+(e[+-]?[0-9]+)?)$')


def parse_exposition(text: str) -> tuple[dict[str, str], dict[str, float]]:
    """A strict reader of the text format: every line is HELP, TYPE or a well-formed sample."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter", "summary")
            types[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, f"malformed sample line: {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(4))
    return types, samples


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def test_metrics_endpoint_serves_parsable_prometheus_text():
    sink = MetricsSink(0)  # any free port on 127.0.0.1
    assert sink.host == "127.0.0.1" and sink.port > 0
    src = _Source()
    try:
        _, _, empty = _get(sink.url)
        _, before = parse_exposition(empty)
        assert before["grmp_frames_total"] == 0
        src.stats.drops, src.stats.corrupt = 3, 1
        for i, (score, event) in enumerate([(0.9, None), (0.2, "degraded"), (0.3, None)]):
            sink.write(_record(i, score, event), _frame(i), src)
        status, content_type, text = _get(sink.url)
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
        types, samples = parse_exposition(text)
        assert types["grmp_score"] == "gauge" and types["grmp_frames_total"] == "counter"
        assert types["grmp_latency_seconds"] == "summary"
        assert samples["grmp_score"] == pytest.approx(0.3)
        assert samples["grmp_score_smoothed"] == pytest.approx(0.3)
        assert samples["grmp_frames_total"] == 3
        assert samples["grmp_drops_total"] == 3 and samples["grmp_corrupt_total"] == 1
        assert samples["grmp_degraded"] == 1
        assert samples['grmp_events_total{event="degraded"}'] == 1
        assert samples["grmp_fps"] > 0
        assert samples['grmp_latency_seconds{stage="infer",quantile="0.5"}'] == pytest.approx(0.003)
        assert samples['grmp_latency_seconds_count{stage="total"}'] == 3
        assert samples['grmp_latency_seconds_sum{stage="total"}'] == pytest.approx(3 * 0.0065)
        with pytest.raises(urllib.error.HTTPError):
            _get(sink.url.replace("/metrics", "/other"))
    finally:
        sink.close()
    with pytest.raises(urllib.error.URLError):
        _get(sink.url)


def test_metrics_port_in_use_is_a_user_error():
    first = MetricsSink(0)
    try:
        with pytest.raises(GrmpError, match=f"cannot serve metrics on 127.0.0.1:{first.port}"):
            MetricsSink(first.port)
    finally:
        first.close()
