"""The threaded pipeline: records, crops, overlap, stop conditions, signals, failures."""
from __future__ import annotations

import os
import signal
import threading
import time

import cv2
import numpy as np
import pytest

from grmp_edge.errors import GrmpError
from grmp_edge.runtime.pipeline import Pipeline, prepare_batch
from grmp_edge.runtime.postprocess import PostProcessor
from grmp_edge.runtime.sinks import Sink
from grmp_edge.runtime.sources import Frame, FrameSource, parse_source
from grmp_edge.runtime.summary import StopKind, StopReason


class ListSink(Sink):
    def __init__(self):
        self.records, self.frames, self.closed = [], [], 0

    def write(self, record, frame, source):
        self.records.append(record)
        self.frames.append(frame)

    def close(self):
        self.closed += 1


class SyntheticSource(FrameSource):
    """``n`` frames (None: endless), each taking ``delay`` seconds to "decode" (a GIL-free sleep)."""

    def __init__(self, n=None, delay=0.0, size=(72, 96), fail_at=None, gap_at=None):
        super().__init__("synthetic")
        self.n, self.delay, self.size, self.fail_at, self.gap_at = n, delay, size, fail_at, gap_at

    def frames(self):
        i = 0
        while not self._closed.is_set() and (self.n is None or i < self.n):
            if i == self.fail_at:
                raise GrmpError("camera exploded")
            t = time.perf_counter()
            if self.delay:
                time.sleep(self.delay)
            rgb = np.full((*self.size, 3), (i * 7) % 256, np.uint8)
            yield self._delivered(Frame(i, time.time(), rgb, None, (time.perf_counter() - t) * 1e3,
                                        gap_s=1.5 if i == self.gap_at else None, t_start=t))
            i += 1


def test_video_records_match_the_engine_on_the_preprocessed_frames(video, spec, fake_backend):
    sink = ListSink()
    summary = Pipeline(parse_source(str(video)), fake_backend(), spec, [sink]).run()
    assert summary.frames == 24 and summary.stopped_by == StopReason(StopKind.END_OF_SOURCE) and sink.closed == 1
    assert [r["frame"] for r in sink.records] == list(range(24))
    for record, frame in zip(sink.records, sink.frames):
        expected = prepare_batch(frame.rgb, spec).mean() / 255.0
        assert record["score"] == pytest.approx(expected, abs=1e-5)
        assert set(record["latency_ms"]) == {"capture", "preprocess", "infer", "total"}
        assert record["latency_ms"]["total"] >= record["latency_ms"]["infer"]
        assert "path" not in record
    assert summary.mean_score == pytest.approx(np.mean([r["score"] for r in sink.records]), abs=1e-5)
    assert summary.latency_ms["total"]["p90"] >= summary.latency_ms["total"]["p50"] > 0
    line = summary.line()
    assert "24 frames" in line and "drops 0" in line and "corrupt 0" in line and "mean score" in line


def test_crops_are_batched_and_averaged(spec, fake_backend, make_frame):
    rgb = cv2.cvtColor(make_frame(3, 256, 192), cv2.COLOR_BGR2RGB)

    class One(FrameSource):
        def frames(self):
            yield Frame(0, 0.0, rgb)

    engine, sink = fake_backend(), ListSink()
    Pipeline(One("one"), engine, spec, [sink], crops=4).run()
    assert engine.batches == [(4, 32, 32, 3)]
    crops = prepare_batch(rgb, spec, 4)
    assert sink.records[0]["score"] == pytest.approx(crops.reshape(4, -1).mean(axis=1).mean() / 255, abs=1e-5)


@pytest.mark.timeout(60)
def test_capture_and_inference_overlap(spec, fake_backend):
    # The engine's first call holds until the source has decoded the next frame: that happens only if
    # capture runs while inference does (in sequence the call would wait for nothing and see no frame).
    decoded = {i: threading.Event() for i in range(3)}

    class Tracked(SyntheticSource):
        def frames(self):
            for frame in super().frames():
                decoded[frame.index].set()
                yield frame

    class WaitsForTheNextFrame(fake_backend):
        def __init__(self):
            super().__init__()
            self.overlapped = []

        def infer(self, batch):
            if not self.batches:
                self.overlapped.append(decoded[1].wait(timeout=10))
            return super().infer(batch)

    engine = WaitsForTheNextFrame()
    summary = Pipeline(Tracked(3), engine, spec).run()
    assert summary.frames == 3 and engine.overlapped == [True]


def test_max_frames_is_exact(spec, fake_backend):
    sink = ListSink()
    summary = Pipeline(SyntheticSource(None), fake_backend(), spec, [sink], max_frames=7).run()
    assert summary.frames == 7 == len(sink.records) and summary.stopped_by == StopReason(StopKind.MAX_FRAMES)
    assert sink.closed == 1


def test_duration_stops_an_endless_source(spec, fake_backend):
    # The run's clock moves only when the engine works: 0.1 s a call, so 0.3 s is three frames exactly.
    clock = [0.0]

    class TakesATenthOfASecond(fake_backend):
        def infer(self, batch):
            clock[0] += 0.1
            return super().infer(batch)

    summary = Pipeline(SyntheticSource(None), TakesATenthOfASecond(), spec, duration=0.3,
                       clock=lambda: clock[0]).run()
    assert summary.stopped_by == StopReason(StopKind.DURATION) and summary.frames == 3
    assert summary.seconds == pytest.approx(0.3) and summary.fps == pytest.approx(10.0)


def test_sigterm_drains_closes_sinks_and_restores_the_handler(spec, fake_backend):
    sink = ListSink()
    before = signal.getsignal(signal.SIGTERM)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    summary = Pipeline(SyntheticSource(None, delay=0.002), fake_backend(delay=0.01), spec, [sink]).run()
    assert summary.stopped_by == StopReason(StopKind.SIGTERM) and summary.frames == len(sink.records) > 0
    assert summary.stopped_by.signal == signal.SIGTERM and summary.to_dict()["stopped_by"] == "SIGTERM"
    assert sink.closed == 1 and signal.getsignal(signal.SIGTERM) is before


def test_stop_from_another_thread_scores_what_is_queued(spec, fake_backend):
    sink = ListSink()
    pipeline = Pipeline(SyntheticSource(None), fake_backend(delay=0.02), spec, [sink], queue_size=3)
    threading.Timer(0.2, pipeline.stop).start()
    summary = pipeline.run(handle_signals=False)
    assert summary.stopped_by == StopReason(StopKind.REQUESTED)
    # Every captured-and-queued frame was scored: the records are consecutive, none lost in the queue.
    assert [r["frame"] for r in sink.records] == list(range(len(sink.records)))


def test_source_failure_is_raised_on_the_callers_thread_and_sinks_still_close(spec, fake_backend):
    sink = ListSink()
    with pytest.raises(GrmpError, match="camera exploded"):
        Pipeline(SyntheticSource(10, fail_at=4), fake_backend(), spec, [sink]).run()
    assert len(sink.records) == 4 and sink.closed == 1


def test_engine_failure_still_closes_sinks(spec, fake_backend):
    class Broken(fake_backend):
        def infer(self, batch):
            raise GrmpError("engine fell over")

    sink = ListSink()
    with pytest.raises(GrmpError, match="engine fell over"):
        Pipeline(SyntheticSource(5), Broken(), spec, [sink]).run()
    assert sink.closed == 1


def test_a_sink_can_end_the_run(spec, fake_backend):
    class StopsAfterThree(ListSink):
        def should_stop(self):
            return len(self.records) >= 3

    sink = StopsAfterThree()
    summary = Pipeline(SyntheticSource(None), fake_backend(delay=0.005), spec, [sink]).run()
    assert summary.stopped_by == StopReason(StopKind.SINK) and len(sink.records) >= 3


def test_non_finite_scores_become_null_without_poisoning_the_smoothing(spec, fake_backend):
    class Flaky(fake_backend):
        def infer(self, batch):
            scores = super().infer(batch)
            return np.full_like(scores, np.nan) if len(self.batches) == 2 else scores

    sink = ListSink()
    summary = Pipeline(SyntheticSource(4), Flaky(), spec, [sink]).run()
    assert sink.records[1]["score"] is None and sink.records[1]["smoothed"] is not None
    assert all(r["smoothed"] is not None for r in sink.records)
    assert summary.mean_score == pytest.approx(np.mean([r["score"] for r in sink.records if r["score"] is not None]))


def test_events_gaps_and_paths_reach_the_records(spec, image_folder, fake_backend):
    sink = ListSink()
    logs = []
    source = parse_source(str(image_folder))
    summary = Pipeline(source, fake_backend(), spec, [sink], postprocessor=PostProcessor(1.0, 0.3, 0.35),
                       log=logs.append).run()
    assert summary.frames == 5 and summary.corrupt == 1
    assert all(r["path"].endswith(".png") for r in sink.records)
    assert any("f02.jpg" in line for line in logs)  # the skipped file is named on the log
    events = [r["event"] for r in sink.records if r["event"]]
    assert events and summary.events["degraded"] == events.count("degraded")

    gap_sink = ListSink()
    Pipeline(SyntheticSource(4, gap_at=2), fake_backend(), spec, [gap_sink]).run()
    assert [r.get("gap_s") for r in gap_sink.records] == [None, None, 1.5, None]


@pytest.mark.parametrize("kwargs, message", [({"crops": 0}, "--crops"), ({"max_frames": 0}, "--max-frames"),
                                             ({"duration": 0}, "--duration")])
def test_bad_limits_are_user_errors(spec, kwargs, message, fake_backend):
    with pytest.raises(GrmpError, match=message):
        Pipeline(SyntheticSource(1), fake_backend(), spec, **kwargs)


# -- several sources, one engine ------------------------------------------------------------------

class LevelSource(FrameSource):
    """``n`` frames of one grey ``level`` (so each source's score is known), as fast as asked."""

    def __init__(self, name, level, n=6, fail_at=None):
        super().__init__(name)
        self.level, self.n, self.fail_at = level, n, fail_at

    def frames(self):
        for i in range(self.n):
            if i == self.fail_at:
                raise GrmpError(f"{self.name} unplugged")
            if self._closed.is_set():
                return
            yield self._delivered(Frame(i, time.time(), np.full((40, 40, 3), self.level, np.uint8)))


class StalledSource(FrameSource):
    """A camera that never delivers a frame (lost, reconnecting) until it is closed."""

    live = True

    def frames(self):
        self._closed.wait()
        return
        yield


def test_several_sources_share_batched_engine_calls_with_their_own_records_and_smoothing(spec, fake_backend):
    sink = ListSink()
    engine = fake_backend(delay=0.01)  # while it works, every source queues its next frame
    sources = [LevelSource("bright", 230), LevelSource("dark", 20), LevelSource("bright", 200)]
    logs = []
    summary = Pipeline(sources, engine, spec, [sink], postprocessor=PostProcessor(1.0, 0.3, 0.35),
                       log=logs.append).run()
    labels = ["bright", "dark", "bright#2"]  # names made unique
    by_source = {label: [r for r in sink.records if r["source"] == label] for label in labels}
    assert all([r["frame"] for r in records] == list(range(6)) for records in by_source.values())
    assert len(sink.records) == 18 and {r["source"] for r in sink.records} == set(labels)
    for label, level in zip(labels, (230, 20, 200)):
        assert [r["score"] for r in by_source[label]] == pytest.approx([level / 255] * 6, abs=1e-6)
    # Smoothing and alarms are per source: only the dark one degrades, once.
    assert [(r["source"], r["frame"]) for r in sink.records if r["event"]] == [("dark", 0)]
    assert any(line.startswith("dark: frame 0: degraded") for line in logs)
    assert max(batch[0] for batch in engine.batches) == 3 and sum(b[0] for b in engine.batches) == 18
    assert len(engine.batches) < 18  # batched, not one call per frame
    assert summary.source == "3 sources" and summary.frames == 18 and summary.stopped_by == StopReason(StopKind.END_OF_SOURCE)
    assert [(s.source, s.frames, s.events["degraded"]) for s in summary.sources] == \
        [("bright", 6, 0), ("dark", 6, 1), ("bright#2", 6, 0)]
    assert summary.events["degraded"] == 1
    assert summary.to_dict()["sources"][1]["mean_score"] == pytest.approx(20 / 255, abs=1e-6)


def test_batches_respect_the_engines_max_batch_with_crops(spec, fake_backend):
    engine = fake_backend(delay=0.01)
    engine.max_batch = 4  # two frames of two crops
    sources = [LevelSource(f"cam{i}", 50 * i, n=4) for i in range(3)]
    summary = Pipeline(sources, engine, spec, crops=2).run()
    assert summary.frames == 12 and all(batch[0] in (2, 4) for batch in engine.batches)
    assert 4 in {batch[0] for batch in engine.batches}


def test_a_failing_source_is_reported_and_the_others_go_on(spec, fake_backend):
    sink, logs = ListSink(), []
    sources = [LevelSource("ok", 100, n=8), LevelSource("flaky", 100, n=8, fail_at=3)]
    summary = Pipeline(sources, fake_backend(), spec, [sink], log=logs.append).run()
    assert [r["frame"] for r in sink.records if r["source"] == "ok"] == list(range(8))
    assert [r["frame"] for r in sink.records if r["source"] == "flaky"] == [0, 1, 2]
    assert [s.stopped_by for s in summary.sources] == [StopReason(StopKind.END_OF_SOURCE), StopReason(StopKind.FAILED, "flaky unplugged")]
    assert [s.stopped_by.failed for s in summary.sources] == [False, True] and not summary.every_source_failed
    assert "flaky: stopped (failed: flaky unplugged)" in logs and summary.stopped_by == StopReason(StopKind.EVERY_SOURCE_ENDED)
    # The summary's JSON spells the reasons as text.
    assert [s["stopped_by"] for s in summary.to_dict()["sources"]] == ["end of source", "failed: flaky unplugged"]
    assert summary.to_dict()["stopped_by"] == "every source ended"
    assert sink.closed == 1


@pytest.mark.timeout(60)  # a regression would wait for the stalled camera forever: fail instead
def test_a_stalled_source_does_not_hold_back_the_others(spec, fake_backend):
    class StopsAfterTheFiles(ListSink):
        def should_stop(self):
            return len(self.records) >= 20

    sink = StopsAfterTheFiles()
    sources = [StalledSource("rtsp://cam/down"), LevelSource("file", 100, n=20)]
    summary = Pipeline(sources, fake_backend(), spec, [sink]).run()
    # Without the window closing on its own, the first frame would wait for the stalled camera forever.
    assert [r["frame"] for r in sink.records] == list(range(20)) and {r["source"] for r in sink.records} == {"file"}
    assert summary.stopped_by == StopReason(StopKind.SINK) and [s.frames for s in summary.sources] == [0, 20]


def test_max_frames_counts_per_source(spec, fake_backend):
    sink = ListSink()
    summary = Pipeline([SyntheticSource(None), LevelSource("short", 10, n=2)], fake_backend(), spec, [sink],
                       max_frames=5).run()
    assert [s.frames for s in summary.sources] == [5, 2]
    assert [s.stopped_by for s in summary.sources] == [StopReason(StopKind.MAX_FRAMES), StopReason(StopKind.END_OF_SOURCE)]
    assert len(sink.records) == 7 and summary.stopped_by == StopReason(StopKind.EVERY_SOURCE_ENDED)


def test_one_source_records_have_no_source_field_and_bad_windows_are_refused(spec, fake_backend):
    sink = ListSink()
    summary = Pipeline([LevelSource("only", 10, n=2)], fake_backend(), spec, [sink]).run()
    assert summary.sources == [] and all("source" not in r for r in sink.records)
    with pytest.raises(GrmpError, match="--batch-window-ms"):
        Pipeline(SyntheticSource(1), fake_backend(), spec, batch_window=2.0)
