"""QGR fine-tuning: what trains, the validation-driven schedule and selection, mixed precision."""
from __future__ import annotations

import pytest
import torch

from graded_corpus import make_graded_corpus
from grmp_edge.data.manifest import load_manifest
from grmp_edge.errors import GrmpError
from grmp_edge.train import finetune as finetune_module
from grmp_edge.train.distributed import Runtime, resolve_precision, setup_runtime
from grmp_edge.train.finetune import FinetuneConfig, finetune
from grmp_edge.train.meta import freeze_all_but
from grmp_edge.train.qgr import SceneTeacher, qgr_step

torch.set_num_threads(1)  # the test machines are shared; oversubscribed threads are 5x slower


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """16 speckled images (4 references x 4 levels): 10 to train, 6 to validate."""
    records = load_manifest(make_graded_corpus(tmp_path_factory.mktemp("ft") / "corpus", refs=4, levels=4,
                                               kinds=("speckle",)))
    return records[:10], records[10:]


def tiny_model():
    from grmp_edge.train.backbones import model_spec
    from grmp_edge.train.model import build_model

    torch.manual_seed(0)
    return build_model(model_spec("grmp-tiny", None, vpt_tokens=2, vpt_dropout=0.0))


def test_fine_tuning_trains_the_unfrozen_blocks_and_keeps_the_visual_prompts(corpus):
    train, val = corpus
    model = tiny_model()
    names = {id(p): n for n, p in model.named_parameters()}
    trainable = {names[id(p)] for p in model.finetune_parameters(1)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = finetune(model, train, val, FinetuneConfig(lr=0.5, max_epochs=2, unfreeze_blocks=1), setup_runtime("cpu"))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed <= trainable, f"frozen tensors changed: {sorted(changed - trainable)}"
    assert not any(k.startswith("visual_prompts.") for k in changed)
    assert result.epochs == 2 and len(result.history) == 2
    assert {"loss_q", "loss_s", "grad_cos", "val_srcc", "lr"} <= set(result.history[0])
    if result.best_epoch:
        assert changed, "a later epoch was kept but nothing changed"


def test_plateau_decays_lr_stops_at_min_lr_and_restores_the_best_epoch(corpus, monkeypatch):
    """Scripted validation scores: improve at epoch 1 only, then plateau."""
    train, val = corpus
    model = tiny_model()
    params = model.finetune_parameters(1)
    scores = iter([0.1, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4])
    snapshots = []

    def scripted(model_, dataset, runtime):
        snapshots.append([p.detach().clone() for p in params])
        s = next(scores)
        return {"srcc": s, "plcc": s, "score": 2 * s}

    monkeypatch.setattr(finetune_module, "validation_metrics", scripted)
    cfg = FinetuneConfig(lr=0.1, lam=0.0, max_epochs=50, patience=1, lr_decay=0.1, min_lr=5e-4, unfreeze_blocks=1)
    result = finetune(model, train, val, cfg, setup_runtime("cpu"))
    lrs = [r["lr"] for r in result.history]
    # Two bad epochs (> patience) per decay: 0.1, 0.1, 0.1, then 0.01 x2, 0.001 x2, then 1e-4 < min_lr.
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert result.stop_reason == "min_lr" and result.best_epoch == 1
    assert result.best_val == {"srcc": 0.5, "plcc": 0.5}
    # snapshots[1] = weights validated after epoch 1; the model must hold exactly those.
    assert all(torch.equal(a, b) for a, b in zip(snapshots[1], params))
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[1], snapshots[-1]))


def test_without_validation_the_budget_is_fixed_and_the_last_epoch_kept(corpus):
    train, _ = corpus
    result = finetune(tiny_model(), train, [], FinetuneConfig(lr=0.1, lam=0.0, max_epochs=3, unfreeze_blocks=1),
                      setup_runtime("cpu"))
    assert (result.epochs, result.best_epoch, result.stop_reason, result.best_val) == (3, 3, "max_epochs", None)
    assert "loss_s" not in result.history[0]  # lambda 0: no semantic gradient at all


def test_bad_fine_tuning_settings_are_user_errors(corpus):
    with pytest.raises(GrmpError, match="lambda"):
        FinetuneConfig(lam=-1).check()
    with pytest.raises(GrmpError, match="no training images"):
        finetune(tiny_model(), [], corpus[1], FinetuneConfig(), setup_runtime("cpu"))


def _step_delta(runtime: Runtime, scaler=None):
    model = tiny_model()
    params = model.finetune_parameters(1)
    freeze_all_but(model, params)
    teacher = SceneTeacher(model)
    torch.manual_seed(1)
    images, labels = torch.randn(4, 3, 96, 96), torch.tensor([0.0, 0.2, 0.7, 1.0])
    before = [p.detach().clone() for p in params]
    qgr_step(model, teacher, images, labels, params, torch.optim.SGD(params, lr=0.1), 5.0,
             scaler=scaler, autocast=runtime.autocast)
    return [p.detach() - b for p, b in zip(params, before)]


def test_fp16_loss_scaling_gives_the_fp32_update():
    """The fp16 path (autocast + GradScaler, both gradients scaled alike) on CPU vs plain fp32."""
    fp32 = _step_delta(Runtime(torch.device("cpu")))
    fp16_runtime = Runtime(torch.device("cpu"), precision="fp16")
    scaler = fp16_runtime.grad_scaler()
    fp16 = _step_delta(fp16_runtime, scaler)
    err = sum(((a - b) ** 2).sum() for a, b in zip(fp32, fp16)).sqrt()
    norm = sum((a ** 2).sum() for a in fp32).sqrt()
    assert norm > 0 and err / norm < 0.1
    assert scaler.get_scale() == 2.0 ** 16  # no overflow, no back-off


def test_fp16_overflow_skips_the_step_and_backs_off():
    runtime = Runtime(torch.device("cpu"), precision="fp16")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 120)  # scaled losses overflow fp32
    delta = _step_delta(runtime, scaler)
    assert all(torch.equal(d, torch.zeros_like(d)) for d in delta)
    assert scaler.get_scale() < 2.0 ** 120


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(GrmpError, match="CUDA"):
        resolve_precision("bf16", cpu)
    with pytest.raises(GrmpError, match="unknown precision"):
        resolve_precision("fp8", cpu)
