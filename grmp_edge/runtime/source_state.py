"""What the runtime keeps about each source while a run goes on: recent latencies per stage, and the
latest score, alarm state, frame count and arrival rate that the metrics endpoint and the live page
show. One implementation, so that ``grmp_fps`` and the page's fps are the same number.
"""
from __future__ import annotations

import collections
import math
from typing import Iterable, Mapping, Optional

from grmp_edge.runtime.postprocess import DEGRADED, RECOVERED
from grmp_edge.timing import latency_stats

LATENCY_STAGES = ("capture", "preprocess", "infer", "total")
# Arrival times kept per source for its frame rate: a few seconds' worth even at hundreds of fps.
ARRIVALS_KEPT = 4096


class LatencyWindow:
    """Per-stage latencies in ms: the sum over every frame (exact means, Prometheus ``_sum``) and the
    most recent ``size`` values (percentiles), so memory stays flat on a camera that runs for weeks."""

    def __init__(self, size: int):
        self.recent = {stage: collections.deque(maxlen=size) for stage in LATENCY_STAGES}
        self.total = dict.fromkeys(LATENCY_STAGES, 0.0)
        self.count = 0

    def add(self, latency_ms: Mapping[str, float]) -> None:
        """Fold in one frame's ``{stage: ms}``."""
        self.count += 1
        for stage in LATENCY_STAGES:
            self.recent[stage].append(latency_ms[stage])
            self.total[stage] += latency_ms[stage]

    @classmethod
    def merged(cls, windows: Iterable["LatencyWindow"]) -> "LatencyWindow":
        """One window over the frames of several (the run-wide figures of a run of several sources)."""
        windows = list(windows)
        merged = cls(sum(w.recent[LATENCY_STAGES[0]].maxlen or 0 for w in windows))
        for w in windows:
            merged.count += w.count
            for stage in LATENCY_STAGES:
                merged.recent[stage].extend(w.recent[stage])
                merged.total[stage] += w.total[stage]
        return merged

    def stats(self, stage: str) -> Optional[dict[str, float]]:
        """:func:`grmp_edge.timing.latency_stats` of a stage's recent values; None before any frame."""
        return latency_stats(self.recent[stage]) if self.recent[stage] else None

    def summary(self) -> dict:
        """``{stage: {mean, p50, p90}}`` (mean over every frame, percentiles over the recent ones); {} for none."""
        if not self.count:
            return {}
        summaries = {}
        for stage in LATENCY_STAGES:
            stats = self.stats(stage)
            summaries[stage] = {"mean": self.total[stage] / self.count, "p50": stats["p50"], "p90": stats["p90"]}
        return summaries


def alarm_after(degraded: bool, record: dict) -> bool:
    """The alarm state after a record, tracked from its event."""
    return {DEGRADED: True, RECOVERED: False}.get(record["event"], degraded)


class SourceState:
    """One source as the sinks see it: its latest record, alarm state, frame and event counts, recent
    arrival times and (unless ``latency_window`` is None, for a reader that shows only the latest
    record's latencies) a window of latencies. ``now`` is any monotonic clock in seconds, the same for
    every call."""

    def __init__(self, latency_window: Optional[int] = 1024):
        self.record: Optional[dict] = None
        self.degraded = False
        self.frames = 0
        self.events: collections.Counter = collections.Counter()
        self.arrivals: collections.deque = collections.deque(maxlen=ARRIVALS_KEPT)
        self.latency = LatencyWindow(latency_window) if latency_window is not None else None

    def update(self, record: dict, now: float) -> None:
        """Fold in one scored frame's record (see :mod:`grmp_edge.runtime.sinks`) that arrived at ``now``."""
        self.record = record
        self.degraded = alarm_after(self.degraded, record)
        if record["event"]:
            self.events[record["event"]] += 1
        self.frames += 1
        self.arrivals.append(now)
        if self.latency is not None:
            self.latency.add(record["latency_ms"])

    def _latest(self, key: str) -> float:
        value = None if self.record is None else self.record[key]
        return math.nan if value is None else value

    @property
    def score(self) -> float:
        """The latest score (NaN before the first frame and for a frame the engine could not score)."""
        return self._latest("score")

    @property
    def smoothed(self) -> float:
        """The latest smoothed score (NaN before the first frame)."""
        return self._latest("smoothed")

    def fps(self, now: float, window: float) -> float:
        """Frames per second over the last ``window`` seconds: the frames after the oldest one in the
        window over the time since it, so a stalled source decays to 0 and one frame alone reads 0."""
        recent = [t for t in self.arrivals if now - t <= window]
        if len(recent) < 2 or now <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (now - recent[0])
