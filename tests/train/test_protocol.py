"""The few-shot protocol: splits, the run folder, resuming, checkpoint evaluation."""
from __future__ import annotations

import json

import pytest
import torch

from graded_corpus import make_graded_corpus
from grmp_edge.errors import GrmpError
from grmp_edge.train.distributed import setup_runtime
from grmp_edge.train.finetune import FinetuneConfig
from grmp_edge.train.meta import MetaConfig
from grmp_edge.train.protocol import ProtocolConfig, TrainPlan, evaluate_checkpoint, make_splits, run_training

torch.set_num_threads(1)  # the test machines are shared; oversubscribed threads are 5x slower


def test_splits_are_disjoint_seeded_and_sized():
    cfg = ProtocolConfig(shots=10, splits=3, val_size=4, seed=7)
    splits = make_splits(50, cfg)
    assert len(splits) == 3
    for s in splits:
        assert (len(s.train), len(s.val), len(s.test)) == (10, 4, 10)
        assert not (set(s.train) & set(s.val) or set(s.train) & set(s.test) or set(s.val) & set(s.test))
    assert splits[0].test != splits[1].test
    again = make_splits(50, cfg)
    assert [s.train for s in again] == [s.train for s in splits]
    other = make_splits(50, ProtocolConfig(shots=10, splits=3, val_size=4, seed=8))
    assert [s.train for s in other] != [s.train for s in splits]


def test_default_validation_size_and_fixed_budget_option():
    assert ProtocolConfig(shots=50).validation_images == 12
    assert ProtocolConfig(shots=8).validation_images == 5
    assert make_splits(20, ProtocolConfig(shots=10, splits=1, val_size=0))[0].val == []


def test_too_few_images_for_the_shots_is_a_user_error():
    with pytest.raises(GrmpError, match="too few images for 50 shots"):
        make_splits(60, ProtocolConfig(shots=50))
    with pytest.raises(GrmpError, match="at least 3"):
        make_splits(60, ProtocolConfig(shots=10, val_size=2))


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
    from grmp_edge.train.model import load_checkpoint

    target, source = corpora
    run_dir = tmp_path / "run"
    plan = tiny_plan(target, source)
    results = run_training(plan, run_dir, setup_runtime("cpu"), echo=lambda *_: None)
    for name in ("config.json", "state.json", "results.json", "metrics.jsonl", "meta_state.pt",
                 "meta/spec.json", "best/spec.json", "best/model.safetensors"):
        assert (run_dir / name).is_file(), name
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["summary"] == results["summary"]
    assert on_disk["quick_trial"] is False and on_disk["meta"]["selection"] == "heldout"
    assert [s["split"] for s in on_disk["splits"]] == [0, 1]
    split = on_disk["splits"][0]
    assert (split["n_train"], split["n_val"], split["n_test"]) == (8, 4, 5)
    assert {"srcc", "plcc", "plcc_logistic", "krcc", "rmse"} <= set(split["test"])
    assert set(results["summary"]["srcc"]) == {"mean", "median", "std", "n"}
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in lines].count("meta") == 1
    assert sorted({r["split"] for r in lines if r["stage"] == "finetune"}) == [0, 1]
    best = load_checkpoint(run_dir / "best")
    assert best.spec.backbone == "grmp-tiny"
    # The best checkpoint is the split chosen on validation, and it evaluates like the protocol did.
    metrics = evaluate_checkpoint(run_dir / "best", target, device="cpu")
    assert metrics["n"] == 24 and -1 <= metrics["srcc"] <= 1

    # Resume: nothing is redone, so no metrics are appended and the results are the same.
    size = (run_dir / "metrics.jsonl").stat().st_size
    again = run_training(plan, run_dir, setup_runtime("cpu"), resume=True, echo=lambda *_: None)
    assert (run_dir / "metrics.jsonl").stat().st_size == size
    assert again["summary"] == results["summary"]


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
    assert resumed["splits"][1]["test"] == pytest.approx(full["splits"][1]["test"])
    assert resumed["splits"][0] == full["splits"][0]


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


def test_dataset_transforms_match_the_shared_preprocessing(corpora):
    import numpy as np

    from grmp_edge.images import read_rgb
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.preprocess import normalize, preprocess, resize
    from grmp_edge.spec import PreprocessSpec
    from grmp_edge.train.datasets import QualityDataset, ResizedImageCache

    records = load_manifest(corpora[0])[:6]
    spec = PreprocessSpec.release(64)  # square resize to 70, then a 64 crop
    evaluation = QualityDataset(records, spec, train=False)
    image, label = evaluation[2]
    expected = normalize(preprocess(read_rgb(records[2].image), spec)[None], spec)[0]
    assert np.array_equal(image.numpy(), expected)
    scores = np.array([r.score for r in records])
    assert float(label) == pytest.approx((scores[2] - scores.min()) / (scores.max() - scores.min()))
    assert evaluation.labels.min() == 0 and evaluation.labels.max() == 1

    train = QualityDataset(records, spec, train=True, seed=5)
    resized = resize(read_rgb(records[0].image), spec)
    crops = []
    for epoch in range(6):
        train.set_epoch(epoch)
        crop = train.crop(0)
        assert crop.shape == (64, 64, 3)
        crops.append(crop.tobytes())
        windows = [resized[y:y + 64, x:x + 64] for y in range(7) for x in range(7)]
        assert any(np.array_equal(crop, w) or np.array_equal(crop, w[:, ::-1]) for w in windows)
    train.set_epoch(3)
    assert train.crop(0).tobytes() == crops[3]  # seeded by (seed, epoch, index)
    assert len(set(crops)) > 1

    small = ResizedImageCache(spec, max_bytes=2 * 70 * 70 * 3)
    for r in records:
        small.get(r.image)
    assert small.used == 2 * 70 * 70 * 3


def test_evaluation_with_a_crop_plan_scores_the_runtimes_crops_averaged(corpora):
    import numpy as np

    from grmp_edge.images import read_rgb
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.preprocess import native_crops, normalize
    from grmp_edge.spec import PreprocessSpec
    from grmp_edge.train.datasets import QualityDataset, predict_quality

    class MeanBrightness(torch.nn.Module):
        """A stand-in model whose quality of a crop is its mean normalised pixel."""

        def quality(self, images):
            return images.flatten(1).mean(dim=1)

    records = load_manifest(corpora[0])[:5]
    spec = PreprocessSpec(size=64, resize=96, crops=4)
    planned = QualityDataset(records, spec, train=False, crops=4)
    crops = [normalize(native_crops(read_rgb(r.image), spec, 4), spec) for r in records]
    image, _ = planned[1]
    assert image.shape == (4, 3, 64, 64) and np.array_equal(image.numpy(), crops[1])
    scores = predict_quality(MeanBrightness(), planned, torch.device("cpu"), batch_size=2)
    np.testing.assert_allclose(scores, [c.mean() for c in crops], rtol=1e-5)
    single = predict_quality(MeanBrightness(), QualityDataset(records, spec), torch.device("cpu"))
    assert single.shape == (5,) and not np.allclose(single, scores)
    with pytest.raises(GrmpError, match="crop plan is for evaluation"):
        QualityDataset(records, spec, train=True, crops=4)
