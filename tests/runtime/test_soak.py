"""Soak: 10,000 frames from a video through ONNX Runtime and every text sink, resident memory flat."""
from __future__ import annotations

import pytest

from grmp_edge.runtime.backends import open_backend
from grmp_edge.runtime.bundle import load_bundle
from grmp_edge.runtime.pipeline import Pipeline
from grmp_edge.runtime.sinks import CsvSink, JsonlSink, MetricsSink, Sink
from grmp_edge.runtime.sources import parse_source

FRAMES = 10_000
WARM_UP = 1_000
MAX_GROWTH_MB = 30


class MemoryProbe(Sink):
    """Samples this process's resident memory after the warm-up and at the last frame."""

    def __init__(self):
        import psutil

        self.process = psutil.Process()
        self.samples: dict[int, float] = {}
        self.n = 0

    def write(self, record, frame, source):
        self.n += 1
        if self.n in (WARM_UP, FRAMES):
            self.samples[self.n] = self.process.memory_info().rss / 2**20


@pytest.mark.slow
def test_ten_thousand_frames_keep_memory_flat(bundle, tmp_path, make_video):
    pytest.importorskip("psutil")
    video = make_video(tmp_path / "long.avi", FRAMES, width=160, height=120, fps=30)
    loaded = load_bundle(bundle)
    engine = open_backend(loaded, backend="onnxruntime", threads=1)
    probe = MemoryProbe()
    metrics = MetricsSink(0)
    sinks = [JsonlSink(tmp_path / "f.jsonl"), CsvSink(tmp_path / "f.csv"), metrics, probe]
    try:
        summary = Pipeline(parse_source(str(video)), engine, loaded.preprocess, sinks, crops=2).run()
    finally:
        engine.close()
    assert summary.frames == FRAMES and summary.corrupt == 0
    growth = probe.samples[FRAMES] - probe.samples[WARM_UP]
    assert growth < MAX_GROWTH_MB, f"resident memory grew {growth:.1f} MB over {FRAMES - WARM_UP} frames"
    assert sum(1 for _ in open(tmp_path / "f.jsonl")) == FRAMES
