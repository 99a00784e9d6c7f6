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


def test_the_full_preset_trains_on_grmp_tinys_schedule_and_fast_only_cuts_it():
    from grmp_edge.quickstart import PRESETS
    from grmp_edge.train.schedules import default_schedule

    full, fast = PRESETS["full"].schedule, PRESETS["fast"].schedule
    assert full == default_schedule("grmp-tiny")
    cut = ("shots", "meta_epochs", "epochs", "vpt_tokens")
    assert all(getattr(fast, k) < getattr(full, k) for k in cut)
    assert (fast.meta_lr, fast.meta_eps, fast.lr, fast.unfreeze_blocks) == \
        (full.meta_lr, full.meta_eps, full.lr, full.unfreeze_blocks)


def test_train_args_are_the_train_commands_options():
    from grmp_edge.quickstart import PRESETS, schedule_args

    args = PRESETS["full"].train_args()
    assert args[args.index("--meta-lr") + 1] == "0.001" and args[args.index("--vpt-tokens") + 1] == "16"
    assert schedule_args({"meta_algo": "continual-reset", "lr": 1e-3}) == ["--meta-algo", "continual-reset",
                                                                           "--lr", "0.001"]


def test_train_plan_carries_the_schedule(tmp_path):
    from grmp_edge.quickstart import PRESETS, Corpus, train_plan

    schedule = PRESETS["fast"].schedule
    plan = train_plan(Corpus.under(tmp_path), schedule, algo="continual-reset")
    assert plan.data == str(tmp_path / "fewshot.csv") and plan.meta_data == [str(tmp_path / "meta.csv")]
    assert (plan.backbone, plan.pretrained, plan.vpt_tokens) == ("grmp-tiny", "bootstrap", schedule.vpt_tokens)
    assert (plan.meta.epochs, plan.meta.inner_lr, plan.meta.eps, plan.meta.algo) == \
        (schedule.meta_epochs, schedule.meta_lr, schedule.meta_eps, "continual-reset")
    assert (plan.finetune.max_epochs, plan.finetune.lr, plan.protocol.shots, plan.protocol.splits) == \
        (schedule.epochs, schedule.lr, schedule.shots, schedule.splits)


def test_a_step_is_recorded_as_the_command_it_stands_for_and_the_outer_one_comes_back(capsys):
    from rich.console import Console

    from grmp_edge.quickstart import as_command
    from grmp_edge.runs import command_line, record_invocation

    record_invocation(["quickstart", "--fast"])
    with as_command(["bench", "--name", "quickstart"], Console()):
        assert command_line() == "grmp-edge bench --name quickstart"
    assert command_line() == "grmp-edge quickstart --fast"
    assert "$ grmp-edge bench --name quickstart" in capsys.readouterr().out


def test_the_summary_keeps_its_keys(tmp_path):
    from grmp_edge.quickstart import Folders, LevelTable, QuickstartResult

    mean = {"pooled": 0.5, "per_photo": 0.6}
    levels = LevelTable(per_type={"jpeg": mean}, seen_mean=mean, unseen_mean=mean, all_mean=mean, rising=[])
    result = QuickstartResult("fast", 90.0, {"corpus": 1.0}, levels, Folders.under(tmp_path))
    assert result.summary() == {"preset": "fast", "minutes": 1.5, "step_seconds": {"corpus": 1.0},
                                "level_srcc_mean": {"all": mean, "seen": mean, "unseen": mean}}
    assert list(levels.to_dict()) == ["per_type", "seen_mean", "unseen_mean", "all_mean", "rising"]
    assert result.folders.checkpoint == tmp_path / "train" / "quickstart" / "best"
