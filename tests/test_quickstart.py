"""`grmp-edge quickstart --fast`: the whole pipeline offline, then a re-run that reuses every step."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from grmp_edge.cli import main


@pytest.mark.slow
def test_quickstart_fast_end_to_end_and_cached_rerun(tmp_runs, capsys):
    assert main(["quickstart", "--fast"]) == 0
    first = capsys.readouterr().out
    assert "per-type SRCC" in first and "grmp-edge run --camera 0" in first
    for path in ("quickstart/corpus/heldout.csv", "train/quickstart/best/spec.json",
                 "export/quickstart/manifest.json", "bench/quickstart/report.md",
                 "bench/quickstart/accuracy_vs_latency.png", "run/quickstart/frames.jsonl",
                 "run/quickstart/score_timeline.png", "quickstart/level_srcc.json"):
        assert (tmp_runs / path).exists(), path
    summary = json.loads((tmp_runs / "quickstart/summary.json").read_text())
    assert set(summary["step_seconds"]) == {"corpus", "backbone", "train", "evaluate", "export", "bench", "run"}
    assert -1 <= summary["level_srcc_mean"]["all"]["pooled"] <= 1 and "all 25 types" in first
    manifest = json.loads((tmp_runs / "export/quickstart/manifest.json").read_text())
    assert {f["precision"] for f in manifest["files"]} == {"fp32", "fp16", "int8"}
    report = json.loads((tmp_runs / "bench/quickstart/report.json").read_text())
    assert {v["backend"] for v in report["variants"] if v["status"] == "ok"} >= {"pytorch-eager", "onnxruntime-cpu"}
    with Image.open(tmp_runs / "run/quickstart/score_timeline.png") as im:
        assert im.format == "PNG"

    assert main(["quickstart", "--fast"]) == 0
    second = capsys.readouterr().out
    for step in ("corpus", "training run", "bundle", "bench report", "video run"):
        assert f"reused {step}" in second
