"""``grmp-edge run`` with several sources: one process, one engine, records and summaries per source."""
from __future__ import annotations

import csv
import json
import urllib.request

import pytest

from grmp_edge.cli import main
from grmp_edge.runtime.sinks import MetricsSink
from grmp_edge.runtime.sources import Frame, FrameSource


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def four_videos(tmp_path, make_video):
    return [make_video(tmp_path / f"v{i}.avi", 6 + i) for i in range(1, 5)]


def test_four_videos_in_one_run(bundle, four_videos, tmp_path, tmp_runs, capsys):
    args = ["run", "--bundle", str(bundle), "--name", "site", "--csv", str(tmp_path / "all.csv")]
    for video in four_videos:
        args += ["--source", str(video)]
    assert main(args) == 0
    out, err = capsys.readouterr()
    records = _lines(out)
    labels = [f"video {video}" for video in four_videos]
    for label, video_frames in zip(labels, (7, 8, 9, 10)):
        assert [r["frame"] for r in records if r["source"] == label] == list(range(video_frames))
    assert len(records) == 34 and all(0 < r["score"] < 1 for r in records)
    assert "34 frames" in err and all(f"  {label}: " in err for label in labels)
    summary = json.loads((tmp_runs / "run" / "site" / "summary.json").read_text())
    assert summary["source"] == "4 sources" and summary["frames"] == 34
    assert [(s["source"], s["frames"]) for s in summary["sources"]] == list(zip(labels, (7, 8, 9, 10)))
    assert _lines((tmp_runs / "run" / "site" / "frames.jsonl").read_text()) == records
    rows = list(csv.DictReader((tmp_path / "all.csv").open()))
    assert [row["source"] for row in rows] == [r["source"] for r in records]


def test_a_sources_file_adds_to_the_sources_and_one_video_output_is_refused(bundle, four_videos, tmp_path, capsys):
    listed = tmp_path / "cameras.txt"
    listed.write_text("\n".join(str(v) for v in four_videos[1:]) + "\n")
    assert main(["run", "--bundle", str(bundle), "--source", str(four_videos[0]), "--sources-file", str(listed),
                 "--no-save", "--batch-window-ms", "20"]) == 0
    out, _ = capsys.readouterr()
    assert len({r["source"] for r in _lines(out)}) == 4
    assert main(["run", "--bundle", str(bundle), "--sources-file", str(listed), "--no-save",
                 "--save-video", str(tmp_path / "x.avi")]) == 2
    assert "--save-video and --display show one source" in capsys.readouterr().err


def test_every_source_failing_is_an_error(bundle, tmp_path, capsys):
    broken = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for path in broken:
        path.write_bytes(b"not a video")
    args = ["run", "--bundle", str(bundle), "--no-save"]
    for path in broken:
        args += ["--source", str(path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "cannot open video" in err and "every source failed" in err


def test_metrics_are_labelled_by_source(make_frame):
    class Named(FrameSource):
        def frames(self):
            return iter(())

    sink = MetricsSink(0)
    try:
        for label, score, event in (("cam a", 0.9, None), ('cam "b"', 0.2, "degraded"), ("cam a", 0.8, None)):
            record = {"frame": 0, "ts": 0.0, "score": score, "smoothed": score, "event": event, "source": label,
                      "latency_ms": {"capture": 1.0, "preprocess": 1.0, "infer": 2.0, "total": 4.0}}
            sink.write(record, Frame(0, 0.0, make_frame(0)), Named(label))
        text = urllib.request.urlopen(sink.url, timeout=5).read().decode()
    finally:
        sink.close()
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert float(samples['grmp_frames_total{source="cam a"}']) == 2
    assert float(samples['grmp_frames_total{source="cam \\"b\\""}']) == 1  # label values escaped
    assert float(samples['grmp_score{source="cam a"}']) == pytest.approx(0.8)
    assert float(samples['grmp_degraded{source="cam \\"b\\""}']) == 1
    assert float(samples['grmp_events_total{source="cam \\"b\\"",event="degraded"}']) == 1
    assert 'grmp_latency_seconds{source="cam a",stage="infer",quantile="0.5"}' in samples
    assert float(samples['grmp_latency_seconds_count{source="cam a",stage="total"}']) == 2
    assert not any(name.startswith("grmp_frames_total ") or name == "grmp_frames_total" for name in samples)
