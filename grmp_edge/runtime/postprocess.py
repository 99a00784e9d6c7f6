"""Per-frame post-processing: exponential smoothing and a hysteresis alarm on the smoothed score.

Scores are in (0, 1), higher is better. The alarm turns ``degraded`` when the smoothed score falls
below ``low`` and ``recovered`` only once it climbs above ``high``; the band between them keeps a
score hovering near one threshold from flapping between the two states on every frame.
"""
from __future__ import annotations

from typing import Optional

from grmp_edge.errors import GrmpError

DEFAULT_ALPHA = 0.2
DEFAULT_LOW = 0.4
DEFAULT_HIGH = 0.5

DEGRADED = "degraded"
RECOVERED = "recovered"


class ScoreSmoother:
    """Exponential moving average: ``s = alpha * score + (1 - alpha) * s``; the first score starts it."""

    def __init__(self, alpha: float = DEFAULT_ALPHA):
        if not 0.0 < alpha <= 1.0:
            raise GrmpError(f"--alpha must be in (0, 1] (1 = no smoothing), got {alpha}")
        self.alpha = alpha
        self.value: Optional[float] = None

    def update(self, score: float) -> float:
        """Fold one score in and return the smoothed value."""
        self.value = score if self.value is None else self.alpha * score + (1.0 - self.alpha) * self.value
        return self.value


class Hysteresis:
    """Two-threshold alarm: ``update(value)`` returns ``"degraded"``, ``"recovered"`` or None."""

    def __init__(self, low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH):
        if not low < high:
            raise GrmpError(f"--low ({low}) must be below --high ({high}) so that the alarm has a hysteresis band")
        self.low, self.high = low, high
        self.degraded = False

    def update(self, value: float) -> Optional[str]:
        """The event this value triggers, if any."""
        if not self.degraded and value < self.low:
            self.degraded = True
            return DEGRADED
        if self.degraded and value > self.high:
            self.degraded = False
            return RECOVERED
        return None


class PostProcessor:
    """Smoothing followed by the hysteresis alarm: ``update(score) -> (smoothed, event or None)``."""

    def __init__(self, alpha: float = DEFAULT_ALPHA, low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH):
        self.smoother = ScoreSmoother(alpha)
        self.alarm = Hysteresis(low, high)

    @property
    def degraded(self) -> bool:
        return self.alarm.degraded

    def update(self, score: float) -> tuple[float, Optional[str]]:
        smoothed = self.smoother.update(score)
        return smoothed, self.alarm.update(smoothed)
