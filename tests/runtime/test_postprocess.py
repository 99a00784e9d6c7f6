"""Smoothing and the hysteresis alarm."""
from __future__ import annotations

import pytest

from grmp_edge.errors import GrmpError
from grmp_edge.runtime.postprocess import DEGRADED, RECOVERED, Hysteresis, PostProcessor, ScoreSmoother


def test_smoother_starts_at_first_score_then_moves_by_alpha():
    s = ScoreSmoother(alpha=0.25)
    assert s.update(0.8) == pytest.approx(0.8)
    assert s.update(0.0) == pytest.approx(0.6)
    assert s.update(0.4) == pytest.approx(0.55)


def test_alpha_one_is_no_smoothing():
    s = ScoreSmoother(alpha=1.0)
    assert [s.update(v) for v in (0.1, 0.9, 0.3)] == pytest.approx([0.1, 0.9, 0.3])


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
def test_bad_alpha_is_a_user_error(alpha):
    with pytest.raises(GrmpError, match="alpha"):
        ScoreSmoother(alpha)


@pytest.mark.parametrize("low, high", [(0.5, 0.5), (0.6, 0.4)])
def test_thresholds_must_leave_a_band(low, high):
    with pytest.raises(GrmpError, match="--low"):
        Hysteresis(low, high)


def test_hysteresis_fires_once_per_crossing_and_not_inside_the_band():
    alarm = Hysteresis(low=0.4, high=0.6)
    values = [0.7, 0.5, 0.39, 0.3, 0.45, 0.59, 0.5, 0.61, 0.7, 0.45, 0.41, 0.2]
    events = [alarm.update(v) for v in values]
    assert events == [None, None, DEGRADED, None, None, None, None, RECOVERED, None, None, None, DEGRADED]
    assert alarm.degraded


def test_postprocessor_does_not_flap_on_noise_around_a_threshold():
    post = PostProcessor(alpha=1.0, low=0.4, high=0.5)
    noisy = [0.39, 0.41, 0.38, 0.42, 0.39, 0.45, 0.41] * 5  # jitters around low, never above high
    events = [post.update(v)[1] for v in noisy]
    assert events.count(DEGRADED) == 1 and events.count(RECOVERED) == 0


def test_postprocessor_smooths_before_the_alarm():
    # One bad frame in a good stream does not trip the alarm when smoothing is on...
    post = PostProcessor(alpha=0.2, low=0.4, high=0.5)
    events = [post.update(v)[1] for v in [0.8, 0.8, 0.1, 0.8, 0.8]]
    assert events == [None] * 5
    # ...but a lasting drop does, and the recovery comes once the average climbs back above high.
    results = [post.update(v) for v in [0.1] * 10 + [0.9] * 10]
    events = [e for _, e in results]
    assert events.count(DEGRADED) == 1 and events.count(RECOVERED) == 1
    assert events.index(DEGRADED) < events.index(RECOVERED)
    smoothed_at_recovery = results[events.index(RECOVERED)][0]
    assert smoothed_at_recovery > 0.5
