"""Metrics against scipy.stats on random data and against hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from grmp_edge import metrics


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = 0.7 * x + rng.normal(scale=0.5, size=200)
    return x, y


def test_match_scipy_on_random_data(pair):
    x, y = pair
    assert metrics.srcc(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert metrics.krcc(x, y) == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-12)
    assert metrics.plcc(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)


def test_hand_computed_cases():
    # Perfectly monotone but non-linear: rank correlations are 1, raw PLCC is not.
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = x ** 3
    assert metrics.srcc(x, y) == pytest.approx(1.0)
    assert metrics.krcc(x, y) == pytest.approx(1.0)
    assert metrics.plcc(x, y) < 0.99
    # Reversed order: -1. One swapped pair out of 10 in 5 items: tau = (9 - 1) / 10.
    assert metrics.srcc(x, -x) == pytest.approx(-1.0)
    assert metrics.krcc(x, [1, 3, 2, 4, 5]) == pytest.approx(0.8)
    # Spearman by hand: d = [0, 1, -1, 0, 0] -> 1 - 6 * 2 / (5 * 24) = 0.9
    assert metrics.srcc(x, [1, 3, 2, 4, 5]) == pytest.approx(0.9)
    assert metrics.rmse([1, 2, 3], [1, 2, 5], logistic=False) == pytest.approx(np.sqrt(4 / 3))


def test_logistic_fit_on_fewer_points_than_parameters_is_linear():
    # A 3-image test split must not crash the 4-parameter fit; with so few points it is the linear fit.
    assert metrics.plcc_logistic([0.1, 0.5, 0.8], [1.0, 2.0, 4.0]) == pytest.approx(
        metrics.plcc([0.1, 0.5, 0.8], [1.0, 2.0, 4.0]))
    assert np.isfinite(metrics.rmse([0.1, 0.5, 0.8, 0.9], [1.0, 2.0, 4.0, 3.0], logistic=True))


def test_logistic_fit_recovers_a_sigmoid_relation():
    rng = np.random.default_rng(1)
    x = np.linspace(-3, 3, 120)
    y = metrics.logistic4(x, 5.0, 1.0, 0.2, 0.6) + rng.normal(scale=0.01, size=x.size)
    assert metrics.plcc(x, y) < 0.98
    assert metrics.plcc_logistic(x, y) > 0.999
    assert metrics.plcc_logistic(x, y, params=5) > 0.99
    assert metrics.rmse(x, y) < 0.05


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(metrics.MetricError, match="NaN"):
        metrics.srcc([1, np.nan, 3], [1, 2, 3])
    with pytest.raises(metrics.MetricError, match="constant"):
        metrics.plcc([1, 1, 1, 1], [1, 2, 3, 4])
    with pytest.raises(metrics.MetricError, match="constant"):
        metrics.srcc([1, 2, 3, 4], [2, 2, 2, 2])
    with pytest.raises(metrics.MetricError, match="lengths"):
        metrics.krcc([1, 2, 3], [1, 2])
    with pytest.raises(metrics.MetricError, match="at least 3"):
        metrics.srcc([1, 2], [1, 2])


def test_evaluate_and_summarize(pair):
    x, y = pair
    result = metrics.evaluate(x, y)
    assert set(result) == {"srcc", "krcc", "plcc", "plcc_logistic", "rmse"}
    assert set(result) == set(metrics.HIGHER_IS_BETTER)
    summary = metrics.summarize([{"srcc": 0.8}, {"srcc": 0.9}, {"srcc": 0.7}])
    assert summary["srcc"]["mean"] == pytest.approx(0.8)
    assert summary["srcc"]["median"] == pytest.approx(0.8)
    assert summary["srcc"]["std"] == pytest.approx(0.1)
    assert summary["srcc"]["n"] == 3


def test_level_srcc_pooled_and_per_photo():
    levels = np.array([1, 2, 3, 1, 2, 3, 1, 2, 3])
    groups = ["blur"] * 6 + ["noise"] * 3
    refs = ["a", "a", "a", "b", "b", "b", "a", "a", "a"]
    # Within each photo blur scores fall with level; photo b is brighter overall, so pooling mixes them.
    scores = np.array([0.5, 0.4, 0.3, 0.9, 0.8, 0.7, 0.1, 0.2, 0.3])
    table = metrics.level_srcc(scores, levels, groups, refs)
    assert table["blur"]["per_photo"] == pytest.approx(1.0)
    assert table["blur"]["pooled"] < 1.0
    assert table["noise"]["pooled"] == pytest.approx(-1.0)
    assert metrics.mean_level_srcc(table, key="per_photo") == pytest.approx(0.0)
    assert metrics.mean_level_srcc(table, types=["blur"], key="per_photo") == pytest.approx(1.0)
