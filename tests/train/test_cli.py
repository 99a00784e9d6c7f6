"""``grmp-edge train`` / ``grmp-edge eval`` end to end, and their one-line user errors."""
from __future__ import annotations

import json

import pytest
import torch

from graded_corpus import make_graded_corpus
from grmp_edge.cli import main

torch.set_num_threads(1)  # the test machines are shared; oversubscribed threads are 5x slower

TINY = ["--backbone", "grmp-tiny", "--pretrained", "none", "--vpt-tokens", "2"]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    target = make_graded_corpus(root / "target", refs=6, levels=10, size=256, kinds=("pixelate",), seed=1)
    source = make_graded_corpus(root / "source", refs=2, levels=3, kinds=("noise", "impulse", "speckle"), seed=2)
    return target, source


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    return err


@pytest.mark.slow
def test_tiny_train_run_raises_srcc_over_the_untrained_model_and_eval_reads_it(corpora, tmp_runs, capsys):
    """The shipped offline grmp-tiny weights (not random ones: fine-tuning a random ViT on a dozen
    images is too erratic to assert on) with freshly initialised prompts, meta-trained one epoch on
    noise types, then fine-tuned on pixelation, a type the bootstrap never trains on and does not rank
    on these procedural scenes (on their noise it starts at 0.93-0.96, and since the bootstrap saw
    more kinds of photo it ranks their blur at 0.31, leaving fine-tuning too little to show)."""
    target, source = corpora
    code = main(["train", "--data", str(target), "--meta-data", str(source), "--backbone", "grmp-tiny",
                 "--pretrained", "bootstrap", "--vpt-tokens", "2", "--meta-epochs", "1", "--support-batch", "8",
                 "--query-batch", "4", "--shots", "12", "--val-size", "12", "--splits", "2", "--epochs", "30",
                 "--patience", "10", "--lr", "0.03", "--lam", "5", "--unfreeze-blocks", "4", "--meta-lr", "1e-4",
                 "--meta-eps", "0.01", "--name", "tiny"])
    out = capsys.readouterr().out
    assert code == 0
    assert "test metrics over 2 split(s)" in out and "next: grmp-edge export" in out
    results = json.loads((tmp_runs / "train" / "tiny" / "results.json").read_text())
    trained, untrained = results["summary"]["srcc"]["mean"], results["initial_summary"]["srcc"]["mean"]
    assert untrained < 0.3, untrained  # the target is new to the model ...
    assert trained - untrained >= 0.15, (trained, untrained)  # ... and fine-tuning learns it (0.005 -> 0.218 here)
    assert results["plan"]["finetune"]["lam"] == 5.0 and results["quick_trial"] is False

    # eval without --checkpoint finds the run's best/.
    assert main(["eval", "--data", str(target), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "srcc" in out and "plcc_logistic" in out and "60 images" in out


def test_eval_scores_with_the_checkpoints_crop_plan_unless_crops_is_given(corpora, tmp_path, capsys):
    from grmp_edge.train.backbones import GRMP_TINY_CROPS, model_spec
    from grmp_edge.train.checkpoint import save_checkpoint
    from grmp_edge.train.model import build_model

    target, _ = corpora
    checkpoint = save_checkpoint(build_model(model_spec("grmp-tiny", None, vpt_tokens=2)).eval(), tmp_path / "ck")
    crops = json.loads((checkpoint / "spec.json").read_text())["preprocess"]["crops"]
    assert crops == GRMP_TINY_CROPS
    srcc = {}
    for args, said in (([], f"60 images, {crops} crop(s) each: the checkpoint's crop plan"),
                       (["--crops", "1"], "60 images, 1 crop(s) each: --crops")):
        assert main(["eval", "--data", str(target), "--checkpoint", str(checkpoint), "--device", "cpu", *args]) == 0
        out = capsys.readouterr().out
        assert said in " ".join(out.split())
        srcc[len(args)] = next(line for line in out.splitlines() if " srcc " in f" {line} ")
    assert srcc[0] != srcc[2]  # the plan's crops score the images otherwise than the centre crop


def test_quick_trial_meta_only_run_gives_a_checkpoint_and_resumes(corpora, tmp_runs, capsys):
    _, source = corpora
    args = ["train", "--data", str(source), *TINY, "--stage", "meta", "--meta-epochs", "1", "--meta-algo", "reptile",
            "--support-batch", "4", "--query-batch", "2", "--preprocess", "release", "--name", "quick"]
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0
    assert "quick-trial mode" in out
    spec = json.loads((tmp_runs / "train" / "quick" / "best" / "spec.json").read_text())
    assert spec["preprocess"]["policy"] == "release" and spec["preprocess"]["size"] == 96
    # Resuming the finished run redoes nothing; resuming with other settings is refused.
    assert main([*args, "--resume"]) == 0
    assert "meta pre-training already done" in capsys.readouterr().out
    assert main([*args, "--resume", "--seed", "1"]) == 2
    assert "different settings (finetune.seed, meta.seed, protocol.seed, seed)" in one_line_error(capsys)


def test_bad_manifest_is_a_one_line_error(tmp_path, tmp_runs, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("image,quality\na.png,1\n")
    assert main(["train", "--data", str(bad), *TINY]) == 2
    assert "missing column 'score'" in one_line_error(capsys)
    assert not (tmp_runs / "train").exists() or not any((tmp_runs / "train").iterdir())


def test_too_few_images_for_the_shots(corpora, tmp_runs, capsys):
    target, _ = corpora
    assert main(["train", "--data", str(target), "--stage", "finetune", *TINY, "--shots", "50"]) == 2
    assert "too few images for 50 shots" in one_line_error(capsys)


def test_meta_task_without_a_query_image(tmp_path, corpora, tmp_runs, capsys):
    target, source = corpora
    lonely = tmp_path / "lonely.csv"
    lines = source.read_text().splitlines()
    header, first = lines[0], lines[1]
    image = str(source.parent / first.split(",")[0])
    lonely.write_text(f"{header}\n" + first.replace(first.split(",")[0], image) + "\n")
    assert main(["train", "--data", str(target), "--meta-data", str(lonely), "--stage", "meta", *TINY]) == 2
    assert "fewer than 2 images" in one_line_error(capsys)


def test_non_vit_backbone_is_refused(corpora, tmp_runs, capsys):
    target, _ = corpora
    assert main(["train", "--data", str(target), "--stage", "finetune", "--backbone", "RN50",
                 "--pretrained", "none", "--shots", "12", "--val-size", "5"]) == 2
    assert "ResNet" in one_line_error(capsys)


def test_eval_without_any_run_says_what_to_do(corpora, tmp_runs, capsys):
    target, _ = corpora
    assert main(["eval", "--data", str(target)]) == 2
    assert "grmp-edge train" in one_line_error(capsys)
