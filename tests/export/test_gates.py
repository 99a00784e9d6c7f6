"""Accuracy gates: agreement numbers, verdicts, degenerate inputs, the printed table, run_onnx."""
from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from grmp_edge.errors import GrmpError
from grmp_edge.export.gates import (
    CONSTANT_REF_MAX_DELTA,
    GATE_DEFAULTS,
    GateFailed,
    GateResult,
    agreement_gate,
    enforce_gates,
    gate_table,
    run_onnx,
)


@pytest.fixture
def ref():
    return np.random.default_rng(0).random(64)


def test_defaults_match_the_issue():
    assert GATE_DEFAULTS == {"fp16": 0.999, "int8": 0.99}


def test_identical_scores_pass_with_zero_delta(ref):
    gate = agreement_gate("fp16", ref, ref.copy())
    assert gate.passed and gate.status == "ok"
    assert gate.srcc == pytest.approx(1.0)
    assert gate.max_abs_delta == 0.0 and gate.p99_abs_delta == 0.0
    assert gate.n == 64 and gate.min_srcc == GATE_DEFAULTS["fp16"]


def test_deltas_are_reported(ref):
    shifted = ref.copy()
    shifted[3] += 0.05  # one image moves
    gate = agreement_gate("int8", ref, shifted, min_srcc=0.9)
    assert gate.max_abs_delta == pytest.approx(0.05)
    assert 0 < gate.p99_abs_delta <= 0.05


def test_reordered_scores_fail_and_enforce_raises(ref):
    noisy = ref + np.random.default_rng(1).normal(0, 0.1, ref.size)
    gate = agreement_gate("int8", ref, noisy, min_srcc=GATE_DEFAULTS["int8"])
    assert not gate.passed and gate.status == "below gate"
    assert gate.srcc < 0.99
    with pytest.raises(GateFailed, match="int8: SRCC") as info:
        enforce_gates([agreement_gate("fp16", ref, ref), gate])
    assert "--allow-drift" in str(info.value) and "fp16" not in str(info.value)
    enforce_gates([gate], allow_drift=True)  # no raise
    assert isinstance(info.value, GrmpError)


def test_constant_reference_falls_back_to_closeness():
    ref = np.full(20, 0.5)
    close = agreement_gate("int8", ref, ref + CONSTANT_REF_MAX_DELTA / 2)
    far = agreement_gate("int8", ref, ref + np.linspace(0, 0.1, 20))
    assert close.status == far.status == "constant reference"
    assert close.srcc is None and "undefined" in close.note
    assert close.passed and not far.passed


def test_constant_and_non_finite_variant_fail(ref):
    assert agreement_gate("fp16", ref, np.full_like(ref, 0.3)).status == "constant scores"
    broken = ref.copy()
    broken[0] = np.nan
    gate = agreement_gate("fp16", ref, broken, labels=ref)
    assert gate.status == "non-finite scores" and not gate.passed
    assert gate.max_abs_delta is None
    assert "error" in gate.labels["fp16"]


def test_labels_give_both_sides(ref):
    labels = ref + np.random.default_rng(2).normal(0, 0.05, ref.size)
    variant = ref + np.random.default_rng(3).normal(0, 0.01, ref.size)
    gate = agreement_gate("int8", ref, variant, labels=labels, min_srcc=0.9)
    for side in ("fp32", "int8"):
        assert set(gate.labels[side]) == {"srcc", "plcc", "plcc_logistic"}
    assert gate.labels["fp32"]["srcc"] > 0.9
    assert gate.labels["fp32"]["srcc"] != gate.labels["int8"]["srcc"]


def test_manifest_form_keeps_its_keys_in_order(ref):
    """The bundle manifest records ``to_dict()``: the keys (and their order) of every gate it ever held."""
    gate = agreement_gate("fp16", ref, ref, labels=ref)
    assert list(gate.to_dict()) == ["name", "n", "min_srcc", "srcc", "max_abs_delta", "p99_abs_delta", "status",
                                    "passed", "labels"]
    constant = agreement_gate("int8", np.full(20, 0.5), np.full(20, 0.5))
    assert list(constant.to_dict()) == ["name", "n", "min_srcc", "srcc", "max_abs_delta", "p99_abs_delta", "status",
                                        "note", "passed"]
    assert GateResult.from_dict(gate.to_dict()) == gate


def test_constant_labels_are_reported_not_raised(ref):
    gate = agreement_gate("fp16", ref, ref, labels=np.ones_like(ref))
    assert gate.passed
    assert "constant" in gate.labels["fp32"]["error"]


def test_mismatched_lengths_are_user_errors(ref):
    with pytest.raises(GrmpError, match="63 scores against 64"):
        agreement_gate("fp16", ref, ref[:-1])
    with pytest.raises(GrmpError, match="labels"):
        agreement_gate("fp16", ref, ref, labels=ref[:10])


def test_table_shows_every_gate_and_verdict(ref):
    results = [
        agreement_gate("fp16", ref, ref, labels=ref),
        agreement_gate("int8", ref, ref[::-1].copy(), min_srcc=0.99),
        agreement_gate("int8 cpu", np.full(10, 0.2), np.full(10, 0.2)),
    ]
    console = Console(record=True, width=160)
    console.print(gate_table(results))
    text = console.export_text()
    for expected in ("fp16", "int8 cpu", "pass", "FAIL", "constant reference", "1.000>1.000", ">=0.99"):
        assert expected in text


def test_run_onnx_matches_torch(tiny_graph):
    scores = run_onnx(tiny_graph.onnx_path, tiny_graph.batches(16), threads=1)
    assert scores.dtype == np.float32 and scores.shape == (len(tiny_graph.images),)
    np.testing.assert_allclose(scores, tiny_graph.torch_scores, atol=1e-5)


def test_run_onnx_rejects_bad_input(tiny_graph, tmp_path):
    with pytest.raises(GrmpError, match="uint8"):
        run_onnx(tiny_graph.onnx_path, [tiny_graph.images[:2].astype(np.float32)])
    with pytest.raises(GrmpError, match="not found"):
        run_onnx(tmp_path / "missing.onnx", tiny_graph.batches())
    with pytest.raises(GrmpError, match="no images"):
        run_onnx(tiny_graph.onnx_path, [])
