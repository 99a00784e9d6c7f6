"""Latency statistics: the one summary of a list of timings that reports, benchmarks and the runtime share.

Medians and percentiles rather than means, because a loaded machine produces a long right tail;
the spread (IQR, p10..p90) travels with every number so that two runs can be compared honestly.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """Median, percentiles and spread of timings in milliseconds: ``p10 p50 p90 p99 iqr mean std n``."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("latency_stats needs at least one timing")
    p10, p25, p50, p75, p90, p99 = (float(v) for v in np.percentile(a, [10, 25, 50, 75, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "p10": p10, "iqr": p75 - p25,
            "mean": float(a.mean()), "std": float(a.std()), "n": int(a.size)}
