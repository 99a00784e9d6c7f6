"""Accuracy gates: a low-precision graph must rank images the way the FP32 graph does.

Each gate compares a variant's scores with the FP32 graph's on the eval images: SRCC between them
(the gate itself), max and 99th-percentile |delta score|, and, when the images carry labels, SRCC /
PLCC / logistic PLCC against the labels for both, so the report shows what the precision costs in
accuracy, not only in agreement. Each gate is a :class:`GateResult`; the bundle manifest records its
``to_dict()``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from grmp_edge import metrics
from grmp_edge.preprocess import check_image_batch
from grmp_edge.errors import GrmpError
from grmp_edge.spec import OUTPUT_NAME

# Minimum SRCC against the FP32 graph, per precision.
GATE_DEFAULTS = {"fp16": 0.999, "int8": 0.99}

# Below this spread the reference scores carry no ranking (a random or collapsed model), so the gate
# falls back to closeness: max |delta score| must stay under CONSTANT_REF_MAX_DELTA.
CONSTANT_REF_SPREAD = 1e-6
CONSTANT_REF_MAX_DELTA = 1e-3


class GateFailed(GrmpError):
    """A low-precision graph drifted from the FP32 graph beyond its gate."""


def onnx_session(path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None):
    """An ONNX Runtime session with all graph optimisations; ``threads`` bounds intra-op threads.

    ``providers`` defaults to the CPU provider, so gates compare like with like on any machine.
    """
    from grmp_edge.runtime.onnxruntime_backend import ort_session

    if not os.path.isfile(path):
        raise GrmpError(f"ONNX model not found: {path}")
    return ort_session(path, providers or ["CPUExecutionProvider"], threads)


def run_onnx(
    path: str | os.PathLike,
    batches: Iterable[np.ndarray],
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    output: str = OUTPUT_NAME,
) -> np.ndarray:
    """Run a graph over uint8 NHWC ``batches`` and return its ``output`` scores as one float32 array."""
    session = onnx_session(path, providers, threads)
    input_name = session.get_inputs()[0].name
    scores = []
    for batch in batches:
        batch = check_image_batch(np.asarray(batch), what=Path(path).name)
        scores.append(session.run([output], {input_name: batch})[0].reshape(-1))
    if not scores:
        raise GrmpError("no images to run the graph on")
    return np.concatenate(scores).astype(np.float32)


def _label_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    try:
        return {
            "srcc": metrics.srcc(scores, labels),
            "plcc": metrics.plcc(scores, labels),
            "plcc_logistic": metrics.plcc_logistic(scores, labels),
        }
    except metrics.MetricError as exc:
        return {"error": str(exc)}


@dataclass
class GateResult:
    """One accuracy gate: a variant's scores against the FP32 graph's on the same ``n`` images.

    ``status`` says how the gate was decided: "ok", "below gate", "non-finite scores", "constant
    scores", or "constant reference" (the FP32 scores do not vary, SRCC is undefined, and the gate
    falls back to max |delta score| <= CONSTANT_REF_MAX_DELTA; ``note`` says so). ``labels`` holds
    ``{"fp32": {...}, name: {...}}`` (srcc, plcc, plcc_logistic, or an error) when labels were given.
    """

    name: str
    n: int
    min_srcc: float
    srcc: float | None = None
    max_abs_delta: float | None = None
    p99_abs_delta: float | None = None
    status: str = "ok"
    passed: bool = False
    note: str | None = None
    labels: dict[str, dict] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GateResult":
        """A gate as the bundle manifest records it (:meth:`to_dict`'s inverse)."""
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The gate as the bundle manifest records it (``note`` and ``labels`` only when present)."""
        out: dict[str, Any] = {"name": self.name, "n": self.n, "min_srcc": self.min_srcc, "srcc": self.srcc,
                               "max_abs_delta": self.max_abs_delta, "p99_abs_delta": self.p99_abs_delta,
                               "status": self.status}
        if self.note is not None:
            out["note"] = self.note
        out["passed"] = self.passed
        if self.labels is not None:
            out["labels"] = self.labels
        return out


def _paired_scores(name: str, ref_scores, scores) -> tuple[np.ndarray, np.ndarray]:
    """The reference and variant scores as float64 vectors; GrmpError when they cannot be gated."""
    ref, out = (np.asarray(values, dtype=np.float64).ravel() for values in (ref_scores, scores))
    why = (f"{out.size} scores against {ref.size} reference scores" if ref.shape != out.shape
           else f"needs at least 3 images, got {ref.size}" if ref.size < 3
           else "the FP32 reference scores contain NaN or infinity" if not np.isfinite(ref).all()
           else None)
    if why is not None:
        raise GrmpError(f"gate {name}: {why}")
    return ref, out


def _decide(result: GateResult, ref: np.ndarray, out: np.ndarray) -> None:
    """Fill in the deltas, SRCC, status and verdict of ``result``."""
    if not np.isfinite(out).all():
        result.status, result.passed = "non-finite scores", False
        return
    delta = np.abs(out - ref)
    result.max_abs_delta = float(delta.max())
    result.p99_abs_delta = float(np.percentile(delta, 99))
    if np.ptp(ref) <= CONSTANT_REF_SPREAD:
        result.status = "constant reference"
        result.note = f"SRCC is undefined on constant FP32 scores; gated on max |delta| <= {CONSTANT_REF_MAX_DELTA:g}"
        result.passed = bool(result.max_abs_delta <= CONSTANT_REF_MAX_DELTA)
    elif np.ptp(out) == 0:
        result.status, result.passed = "constant scores", False
    else:
        result.srcc = metrics.srcc(out, ref)
        result.passed = bool(result.srcc >= result.min_srcc)
        result.status = "ok" if result.passed else "below gate"


def agreement_gate(
    name: str,
    ref_scores: Sequence[float],
    scores: Sequence[float],
    labels: Sequence[float] | None = None,
    min_srcc: float = GATE_DEFAULTS["fp16"],
) -> GateResult:
    """Gate a variant's ``scores`` against the FP32 ``ref_scores`` on the same images.

    The gate passes when SRCC against FP32 reaches ``min_srcc`` (see :class:`GateResult` for the
    degenerate cases); with ``labels``, both sides are also scored against them.
    """
    ref, out = _paired_scores(name, ref_scores, scores)
    result = GateResult(name=name, n=int(ref.size), min_srcc=float(min_srcc))
    _decide(result, ref, out)
    if labels is not None:
        lab = np.asarray(labels, dtype=np.float64).ravel()
        if lab.shape != ref.shape:
            raise GrmpError(f"gate {name}: {lab.size} labels for {ref.size} images")
        variant = _label_metrics(out, lab) if np.isfinite(out).all() else {"error": "non-finite scores"}
        result.labels = {"fp32": _label_metrics(ref, lab), name: variant}
    return result


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _label_cell(result: GateResult, key: str) -> str:
    if not result.labels:
        return "-"
    ref, variant = result.labels["fp32"].get(key), result.labels[result.name].get(key)
    return f"{_fmt(ref, 3)}>{_fmt(variant, 3)}"


def gate_table(results: Sequence[GateResult]):
    """A rich Table of gate results: SRCC vs FP32 (and its minimum), max/p99 |delta|, labels (FP32>variant)."""
    from rich import box
    from rich.table import Table

    sizes = "/".join(str(n) for n in sorted({r.n for r in results}))
    table = Table(title=f"Accuracy gates against the FP32 graph ({sizes} images)", title_justify="left",
                  box=box.SIMPLE_HEAD)
    table.add_column("gate")
    for column in ("SRCC>=min", "max/p99 |d|", "labels SRCC", "labels PLCC"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("result")
    for r in results:
        verdict = "[green]pass[/green]" if r.passed else "[red]FAIL[/red]"
        if r.status not in ("ok", "below gate"):
            verdict += f" ({r.status})"
        table.add_row(
            r.name, f"{_fmt(r.srcc)}>={r.min_srcc:g}", f"{_fmt(r.max_abs_delta)}/{_fmt(r.p99_abs_delta)}",
            _label_cell(r, "srcc"), _label_cell(r, "plcc"), verdict,
        )
    return table


def print_gates(results: Sequence[GateResult], console=None) -> None:
    """Print :func:`gate_table` to ``console`` (a rich Console; stdout by default)."""
    from rich.console import Console

    (console or Console()).print(gate_table(results))


def enforce_gates(results: Sequence[GateResult], allow_drift: bool = False) -> None:
    """Raise GateFailed naming every failed gate, unless ``allow_drift``."""
    failed = [r for r in results if not r.passed]
    if failed and not allow_drift:
        details = "; ".join(
            f"{r.name}: SRCC {_fmt(r.srcc)} < {r.min_srcc:g}" if r.status == "below gate" else f"{r.name}: {r.status}"
            for r in failed
        )
        raise GateFailed(f"accuracy gate failed ({details}); rerun with --allow-drift to keep the files anyway")
