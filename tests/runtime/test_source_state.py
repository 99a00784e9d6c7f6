"""The per-source state the metrics endpoint and the live page share: rate, alarm state, latencies."""
from __future__ import annotations

import math

import pytest

from grmp_edge.runtime.source_state import LatencyWindow, SourceState


def _record(event=None, score=0.5, total=4.0):
    return {"frame": 0, "ts": 0.0, "score": score, "smoothed": score, "event": event,
            "latency_ms": {"capture": 1.0, "preprocess": 1.0, "infer": 2.0, "total": total}}


def test_fps_counts_the_frames_of_the_window_and_decays_while_a_source_stalls():
    state = SourceState()
    assert state.fps(0.0, 5.0) == 0.0 and math.isnan(state.score)
    for i in range(11):  # 10 fps for a second
        state.update(_record(), 100.0 + i / 10)
    assert state.fps(101.0, 5.0) == pytest.approx(10.0)
    assert state.fps(103.0, 5.0) == pytest.approx(10 / 3)  # two seconds without a frame
    assert state.fps(107.0, 5.0) == 0.0  # every frame has left the window
    lone = SourceState()
    lone.update(_record(), 100.0)
    assert lone.fps(100.0, 5.0) == 0.0  # one frame is no rate


def test_alarm_state_and_events_follow_the_records():
    state = SourceState()
    for event in (None, "degraded", None, "recovered", "degraded"):
        state.update(_record(event), 0.0)
    assert state.degraded and state.frames == 5 and state.events == {"degraded": 2, "recovered": 1}
    state.update(_record(score=None), 0.0)
    assert math.isnan(state.score) and state.latency.count == 6


def test_latency_window_means_over_every_frame_and_percentiles_over_the_recent_ones():
    window = LatencyWindow(2)
    for total in (10.0, 2.0, 4.0):
        window.add(_record(total=total)["latency_ms"])
    summary = window.summary()
    assert summary["total"]["mean"] == pytest.approx(16 / 3) and summary["total"]["p50"] == pytest.approx(3.0)
    merged = LatencyWindow.merged([window, window])
    assert merged.count == 6 and merged.summary()["total"]["mean"] == pytest.approx(16 / 3)
    assert LatencyWindow(4).summary() == {}
