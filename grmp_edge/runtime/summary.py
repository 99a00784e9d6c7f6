"""What a run did: :class:`RunSummary`, and :class:`StopReason`, why a run or one of its sources ended.

The summary's JSON (``summary.json``, ``to_dict()``) spells the stop reason as text: ``end of
source``, ``max-frames``, ``duration``, ``a sink (window closed or output closed)``, ``stop()``,
``SIGINT``, ``SIGTERM``, ``every source ended`` or ``failed: <why>``.
"""
from __future__ import annotations

import enum
import signal
from dataclasses import dataclass, field, fields
from typing import Optional

from grmp_edge.runtime.postprocess import DEGRADED, RECOVERED


class StopKind(enum.Enum):
    """The ways a run or a source ends; the value is the summary's text."""

    END_OF_SOURCE = "end of source"
    MAX_FRAMES = "max-frames"
    DURATION = "duration"
    SINK = "a sink (window closed or output closed)"
    REQUESTED = "stop()"
    SIGINT = "SIGINT"
    SIGTERM = "SIGTERM"
    EVERY_SOURCE_ENDED = "every source ended"
    FAILED = "failed"


@dataclass(frozen=True)
class StopReason:
    """Why a run or a source ended; ``error`` says why a ``FAILED`` source failed."""

    kind: StopKind
    error: Optional[str] = None

    @classmethod
    def of_signal(cls, signum: int) -> "StopReason":
        """The reason for SIGINT or SIGTERM."""
        return cls(StopKind[signal.Signals(signum).name])

    @classmethod
    def failure(cls, exc: BaseException) -> "StopReason":
        """A source that raised ``exc``."""
        return cls(StopKind.FAILED, str(exc))

    @property
    def failed(self) -> bool:
        return self.kind is StopKind.FAILED

    @property
    def signal(self) -> Optional[signal.Signals]:
        """The signal that stopped the run (drained and summarised, but not the stop asked for), else None."""
        return signal.Signals[self.kind.name] if self.kind in (StopKind.SIGINT, StopKind.SIGTERM) else None

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.error}" if self.failed else self.kind.value


@dataclass
class RunSummary:
    """What one run did; ``line()`` is the one-line summary the CLI prints.

    With several sources the top level sums them (``fps`` is the aggregate rate) and ``sources`` holds
    one summary per source.
    """

    source: str
    frames: int
    seconds: float
    fps: float
    drops: int
    corrupt: int
    gaps: int
    gap_seconds: float
    mean_score: Optional[float]
    events: dict = field(default_factory=dict)
    latency_ms: dict = field(default_factory=dict)
    stopped_by: StopReason = StopReason(StopKind.END_OF_SOURCE)
    sources: list["RunSummary"] = field(default_factory=list)

    def line(self) -> str:
        mean = "n/a" if self.mean_score is None else f"{self.mean_score:.4f}"
        lat = self.latency_ms.get("total", {})
        latency = f", latency p50 {lat['p50']:.1f} ms p90 {lat['p90']:.1f} ms" if lat else ""
        gaps = f", gaps {self.gaps} ({self.gap_seconds:.1f} s)" if self.gaps else ""
        return (f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps), drops {self.drops}, "
                f"corrupt {self.corrupt}{gaps}, mean score {mean}, events degraded {self.events.get(DEGRADED, 0)} "
                f"recovered {self.events.get(RECOVERED, 0)}{latency}; stopped by {self.stopped_by}")

    @property
    def every_source_failed(self) -> bool:
        """True for a run of several sources in which each one failed."""
        return bool(self.sources) and all(part.stopped_by.failed for part in self.sources)

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(events=dict(self.events), latency_ms={k: dict(v) for k, v in self.latency_ms.items()},
                    stopped_by=str(self.stopped_by), sources=[part.to_dict() for part in self.sources])
        return data
