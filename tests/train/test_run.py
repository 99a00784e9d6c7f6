"""A training run: the run folder, resuming, the quick-trial flag, evaluating its checkpoint."""
from __future__ import annotations

import json

import pytest
import torch

from graded_corpus import make_graded_corpus
from grmp_edge.errors import GrmpError
from grmp_edge.train.distributed import setup_runtime
from grmp_edge.train.evaluate import evaluate_checkpoint
from grmp_edge.train.finetune import FinetuneConfig
from grmp_edge.train.meta import MetaConfig
from grmp_edge.train.protocol import ProtocolConfig
from grmp_edge.train.run import TrainPlan, run_training

torch.set_num_threads(1)  # the test machines are shared; oversubscribed threads are 5x slower


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    target = make_graded_corpus(root / "target", refs=3, levels=8, kinds=("noise",), seed=1)
    source = make_graded_corpus(root / "source", refs=2, levels=3, kinds=("noise", "impulse", "speckle"), seed=2)
    return target, source


def tiny_plan(target, source, **kw) -> TrainPlan:
    base = dict(
        data=str(target), meta_data=[str(source)], backbone="grmp-tiny", pretrained=None, vpt_tokens=2,
        meta=MetaConfig(epochs=1, support_batch=4, query_batch=2, holdout_fraction=0.34),
        finetune=FinetuneConfig(lr=0.3, max_epochs=2, unfreeze_blocks=1),
        protocol=ProtocolConfig(shots=8, splits=2, val_size=4),
    )
    return TrainPlan(**{**base, **kw})


def test_a_run_writes_its_folder_and_resumes_without_redoing_splits(corpora, tmp_path):
    from grmp_edge.train.checkpoint import load_checkpoint

    target, source = corpora
    run_dir = tmp_path / "run"
    plan = tiny_plan(target, source)
    results = run_training(plan, run_dir, setup_runtime("cpu"), echo=lambda *_: None)
    for name in ("config.json", "state.json", "results.json", "metrics.jsonl", "meta_state.pt",
                 "meta/spec.json", "best/spec.json", "best/model.safetensors"):
        assert (run_dir / name).is_file(), name
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk == results.to_dict()
    assert on_disk["summary"] == results.summary
    assert on_disk["quick_trial"] is False and on_disk["meta"]["selection"] == "heldout"
    assert [s["split"] for s in on_disk["splits"]] == [0, 1]
    split = on_disk["splits"][0]
    assert (split["n_train"], split["n_val"], split["n_test"]) == (8, 4, 5)
    assert {"srcc", "plcc", "plcc_logistic", "krcc", "rmse"} <= set(split["test"])
    assert set(results.summary["srcc"]) == {"mean", "median", "std", "n"}
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in lines].count("meta") == 1
    assert sorted({r["split"] for r in lines if r["stage"] == "finetune"}) == [0, 1]
    best = load_checkpoint(run_dir / "best")
    assert best.spec.backbone == "grmp-tiny"
    # The best checkpoint is the split chosen on validation, and it evaluates like the protocol did.
    metrics = evaluate_checkpoint(run_dir / "best", target, device="cpu")
    assert metrics.n == 24 and -1 <= metrics.metrics["srcc"] <= 1

    # Resume: nothing is redone, so no metrics are appended and the results are the same.
    size = (run_dir / "metrics.jsonl").stat().st_size
    again = run_training(plan, run_dir, setup_runtime("cpu"), resume=True, echo=lambda *_: None)
    assert (run_dir / "metrics.jsonl").stat().st_size == size
    assert again.summary == results.summary


def test_resume_after_an_interrupted_split(corpora, tmp_path):
    target, source = corpora
    run_dir = tmp_path / "run"
    plan = tiny_plan(target, source, stage="finetune", meta_data=[])
    full = run_training(plan, run_dir, setup_runtime("cpu"), echo=lambda *_: None)
    # Forget split 1, as if the run had been killed during it.
    state = json.loads((run_dir / "state.json").read_text())
    del state["splits"]["1"]
    (run_dir / "state.json").write_text(json.dumps(state))
    resumed = run_training(plan, run_dir, setup_runtime("cpu"), resume=True, echo=lambda *_: None)
    assert resumed.splits[1].test == pytest.approx(full.splits[1].test)
    assert resumed.splits[0] == full.splits[0]


def test_resume_refuses_different_settings(corpora, tmp_path):
    target, source = corpora
    run_dir = tmp_path / "run"
    plan = tiny_plan(target, source, stage="meta")
    run_training(plan, run_dir, setup_runtime("cpu"), echo=lambda *_: None)
    assert (run_dir / "best/spec.json").is_file()  # a meta-only run's best/ is the meta model
    changed = tiny_plan(target, source, stage="meta", seed=3)
    with pytest.raises(GrmpError, match=r"different settings \(seed\)"):
        run_training(changed, run_dir, setup_runtime("cpu"), resume=True)


def test_quick_trial_mode_is_flagged(corpora):
    target, _ = corpora
    assert tiny_plan(target, None, meta_data=[]).quick_trial
    assert not tiny_plan(target, None, meta_data=[], stage="finetune").quick_trial
    with pytest.raises(GrmpError, match="--data"):
        TrainPlan(data=None, stage="finetune")
