"""IQA agreement metrics: SRCC, KRCC, PLCC (raw and after a logistic fit), RMSE; numpy/scipy only.

Direction is metadata (pyiqa's convention): every metric here is "higher is better" except RMSE.
PLCC is reported both raw (as the GRMP release does) and after the monotonic logistic mapping that
VQEG recommends, fitted from predictions to labels.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
from scipy import optimize, stats

from grmp_edge.errors import GrmpError

HIGHER_IS_BETTER = {"srcc": True, "krcc": True, "plcc": True, "plcc_logistic": True, "rmse": False}


class MetricError(GrmpError):
    """Inputs on which a correlation is undefined (NaN, constant, too short, mismatched)."""


def _check(pred: Sequence[float], target: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise MetricError(f"prediction and target lengths differ ({p.size} vs {t.size})")
    if p.size < 3:
        raise MetricError(f"need at least 3 pairs for a correlation, got {p.size}")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise MetricError("predictions or targets contain NaN or infinity")
    if np.ptp(p) == 0:
        raise MetricError("predictions are constant; correlation is undefined")
    if np.ptp(t) == 0:
        raise MetricError("targets are constant; correlation is undefined")
    return p, t


def srcc(pred, target) -> float:
    """Spearman rank-order correlation."""
    p, t = _check(pred, target)
    # [0], not .statistic: the result objects gained that name in SciPy 1.9/1.10; the floor is 1.7.
    return float(stats.spearmanr(p, t)[0])


def krcc(pred, target) -> float:
    """Kendall rank-order correlation (tau-b)."""
    p, t = _check(pred, target)
    return float(stats.kendalltau(p, t)[0])


def plcc(pred, target) -> float:
    """Pearson linear correlation of the raw predictions."""
    p, t = _check(pred, target)
    return float(stats.pearsonr(p, t)[0])


def logistic4(x, b1, b2, b3, b4):
    """4-parameter logistic: ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``."""
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / (np.abs(b4) + 1e-12))) + b2


def logistic5(x, b1, b2, b3, b4, b5):
    """VQEG 5-parameter logistic: ``b1 * (0.5 - 1 / (1 + exp(b2 (x - b3)))) + b4 x + b5``."""
    return b1 * (0.5 - 1.0 / (1.0 + np.exp(b2 * (x - b3)))) + b4 * x + b5


def fit_logistic(pred, target, params: int = 4) -> Callable[[np.ndarray], np.ndarray]:
    """Fit the 4- or 5-parameter logistic from predictions to targets; return the mapping.

    If the least-squares fit does not converge, or there are no more points than parameters (a tiny
    test split: the curve would pass through every point), the linear fit is returned instead, so
    PLCC after the fit never falls below the raw PLCC's linear equivalent.
    """
    p, t = _check(pred, target)
    if params == 4:
        fn = logistic4
        p0 = [t.max(), t.min(), float(np.median(p)), float(np.std(p)) or 1.0]
    elif params == 5:
        fn = logistic5
        p0 = [float(np.ptp(t)), 1.0 / (float(np.std(p)) or 1.0), float(np.mean(p)), 0.0, float(np.mean(t))]
    else:
        raise MetricError(f"logistic fit has 4 or 5 parameters, not {params}")
    try:
        if p.size <= len(p0):
            raise ValueError("too few points for the logistic")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            coef, _ = optimize.curve_fit(fn, p, t, p0=p0, maxfev=20000)
        mapped = _quiet(fn, p, *coef)
        if not np.isfinite(mapped).all():
            raise RuntimeError("non-finite fit")
        return lambda x: _quiet(fn, np.asarray(x, dtype=np.float64), *coef)
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        slope, intercept = np.polyfit(p, t, 1)
        return lambda x: slope * np.asarray(x, dtype=np.float64) + intercept


def _quiet(fn, x, *coef):
    """Evaluate a fitted logistic; exp overflowing to inf far from the midpoint is its correct limit."""
    with np.errstate(over="ignore"):
        return fn(x, *coef)


def plcc_logistic(pred, target, params: int = 4) -> float:
    """Pearson correlation after mapping predictions through a fitted logistic (4 or 5 parameters)."""
    p, t = _check(pred, target)
    mapped = fit_logistic(p, t, params)(p)
    if np.ptp(mapped) == 0:
        return plcc(p, t)
    return float(stats.pearsonr(mapped, t)[0])


def rmse(pred, target, logistic: bool = True) -> float:
    """Root mean squared error, after the 4-parameter logistic mapping unless ``logistic=False``."""
    p, t = _check(pred, target)
    if logistic:
        p = fit_logistic(p, t)(p)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def evaluate(pred, target) -> dict[str, float]:
    """Every metric at once: srcc, krcc, plcc, plcc_logistic, rmse."""
    return {
        "srcc": srcc(pred, target),
        "krcc": krcc(pred, target),
        "plcc": plcc(pred, target),
        "plcc_logistic": plcc_logistic(pred, target),
        "rmse": rmse(pred, target),
    }


def level_srcc(scores, levels, groups, refs=None) -> dict[str, dict[str, float | None]]:
    """Per distortion type, the SRCC of score against *negated* level (higher level = worse = lower score).

    ``pooled`` ranks all images of a type together (content differences between photos count
    against the model); ``per_photo`` ranks the levels within each reference photo and averages
    (what a fixed camera sees as one scene degrades). Undefined correlations (fewer than 3 images,
    constant scores) are None and left out of the means.
    """
    scores = np.asarray(scores, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64)
    groups = np.asarray(groups, dtype=object)
    refs = np.asarray(refs if refs is not None else ["all"] * len(scores), dtype=object)
    out: dict[str, dict[str, float | None]] = {}
    for g in dict.fromkeys(groups.tolist()):
        m = groups == g
        pooled = _try_srcc(scores[m], -levels[m])
        per = [_try_srcc(scores[m & (refs == r)], -levels[m & (refs == r)]) for r in dict.fromkeys(refs[m].tolist())]
        per = [v for v in per if v is not None]
        out[str(g)] = {"pooled": pooled, "per_photo": float(np.mean(per)) if per else None}
    return out


# A mean level curve that rises by more than this from one level to the next is not monotonic.
CURVE_RISE = 0.02


def rising_types(curves: dict[str, list[float]], rise: float = CURVE_RISE) -> list[str]:
    """The types of :func:`level_curves` whose curve rises by more than ``rise`` somewhere."""
    return [t for t, curve in curves.items() if len(curve) > 1 and float(np.diff(curve).max()) > rise]


def level_curves(scores, levels, groups) -> dict[str, list[float]]:
    """Per distortion type, its mean score at each of its levels in increasing order: the curve a
    good model draws downhill."""
    scores = np.asarray(scores, dtype=np.float64)
    levels = np.asarray(levels)
    groups = np.asarray(groups, dtype=object)
    return {str(g): [float(scores[(groups == g) & (levels == level)].mean())
                     for level in sorted(set(levels[groups == g].tolist()))]
            for g in dict.fromkeys(groups.tolist())}


def mean_level_srcc(table: dict[str, dict[str, float | None]], types=None, key: str = "pooled") -> float | None:
    """Mean of one column of :func:`level_srcc` over ``types`` (default: all), ignoring undefined entries."""
    vals = [row[key] for t, row in table.items() if (types is None or t in types) and row[key] is not None]
    return float(np.mean(vals)) if vals else None


def _try_srcc(a: np.ndarray, b: np.ndarray) -> float | None:
    try:
        return srcc(a, b)
    except MetricError:
        return None


def summarize(per_split: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, median and (sample) std of each metric over splits."""
    if not per_split:
        raise MetricError("no splits to summarise")
    out: dict[str, dict[str, float]] = {}
    for key in per_split[0]:
        vals = np.array([s[key] for s in per_split], dtype=np.float64)
        out[key] = {
            "mean": float(vals.mean()),
            "median": float(np.median(vals)),
            "std": float(vals.std(ddof=1)) if vals.size > 1 else 0.0,
            "n": int(vals.size),
        }
    return out
