"""Few-shot fine-tuning with quality-aware gradient regularisation (``docs/method.md``, "QGR fine-tuning").

Trainable: ``model.finetune_parameters(k)`` (text context, last ``k`` blocks of both towers, final
LayerNorms); the visual prompts stay at their meta-learned values. SGD (lr 1e-3, weight decay 1e-4),
one full batch per epoch when the training set fits in a batch. The learning rate is multiplied by
0.3 once more than ``patience`` epochs in a row bring no better *validation* score (SRCC + PLCC on a
validation part of the training pool, never the test split; torch's ``ReduceLROnPlateau``), and
training stops once it falls below ``min_lr`` or after ``max_epochs``; the best validation epoch is
kept. Without a validation set the run is a fixed budget of ``max_epochs`` and the last weights are
kept.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from grmp_edge.errors import GrmpError
from grmp_edge.metrics import MetricError, plcc, srcc
from grmp_edge.train.datasets import QualityDataset, ResizedImageCache, make_loader, predict_quality, set_loader_epoch
from grmp_edge.train.distributed import Runtime
from grmp_edge.train.meta import freeze_all_but
from grmp_edge.train.qgr import SceneTeacher, qgr_step


@dataclass
class FinetuneConfig:
    """Fine-tuning settings; defaults are the release's (``docs/method.md``, "QGR fine-tuning")."""

    lam: float = 5.0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    max_epochs: int = 2000
    patience: int = 30
    lr_decay: float = 0.3
    min_lr: float = 5e-7
    unfreeze_blocks: int = 4
    seed: int = 0
    workers: int = 0

    def check(self) -> None:
        if self.lam < 0:
            raise GrmpError(f"QGR lambda must be >= 0 (0 turns QGR off), got {self.lam}")
        if self.lr <= 0 or self.batch_size < 1 or self.max_epochs < 0 or self.patience < 0:
            raise GrmpError("fine-tuning needs lr > 0, batch size >= 1, epochs >= 0, patience >= 0")
        if not 0 < self.lr_decay < 1:
            raise GrmpError(f"lr decay factor must be in (0, 1), got {self.lr_decay}")


@dataclass
class FinetuneResult:
    """What fine-tuning did: epochs run, the epoch kept, its validation metrics, why it stopped."""

    epochs: int
    best_epoch: int
    best_val: dict | None
    stop_reason: str
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def validation_metrics(model, dataset: QualityDataset, runtime: Runtime) -> dict:
    """SRCC, PLCC and their sum (the selection score) on a validation set; -inf when undefined."""
    pred = predict_quality(model, dataset, runtime.device, autocast=runtime.autocast)
    try:
        s, p = srcc(pred, dataset.scores), plcc(pred, dataset.scores)
    except MetricError:
        return {"srcc": None, "plcc": None, "score": float("-inf")}
    return {"srcc": s, "plcc": p, "score": s + p}


def _validate(model, val_set: QualityDataset | None, runtime: Runtime) -> dict | None:
    """Rank 0's :func:`validation_metrics`, on every rank; None without a validation set."""
    if val_set is None:
        return None
    metrics = validation_metrics(model, val_set, runtime) if runtime.is_main else None
    return runtime.broadcast_object(metrics)


class _QGRTrainer:
    """The trained tensors, the frozen scene teacher (none when ``lam`` is 0), SGD and its plateau
    schedule: one :meth:`epoch` of QGR steps at a time."""

    def __init__(self, model, params: list, cfg: FinetuneConfig, runtime: Runtime):
        self.model, self.params, self.cfg, self.runtime = model, params, cfg, runtime
        self.teacher = SceneTeacher(model) if cfg.lam != 0 else None
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=cfg.lr_decay, patience=cfg.patience, threshold=0.0)
        self.scaler = runtime.grad_scaler()

    @property
    def lr(self) -> float:
        """The current learning rate."""
        return self.optimizer.param_groups[0]["lr"]

    def epoch(self, loader, epoch: int) -> dict[str, float]:
        """One pass over ``loader``; the mean of each step statistic (losses, gradient cosine)."""
        runtime = self.runtime
        set_loader_epoch(loader, epoch)
        self.model.train()
        steps = [qgr_step(self.model, self.teacher, images.to(runtime.device, non_blocking=True),
                          labels.to(runtime.device, non_blocking=True), self.params, self.optimizer, self.cfg.lam,
                          scaler=self.scaler, autocast=runtime.autocast, reduce=runtime.all_reduce_mean_)
                 for images, labels in loader]
        return {k: float(np.mean([s[k] for s in steps])) for k in steps[0]}


@dataclass
class _Selection:
    """The best validation epoch so far and a copy of its trained tensors."""

    params: list
    best: dict | None
    best_epoch: int = 0

    def __post_init__(self) -> None:
        self.weights = [p.detach().clone() for p in self.params]

    def offer(self, epoch: int, val: dict) -> None:
        """Keep this epoch's weights if its validation score beats the best so far."""
        if val["score"] > self.best["score"]:
            self.best, self.best_epoch = val, epoch
            self.weights = [p.detach().clone() for p in self.params]

    def restore(self) -> None:
        """Put the kept weights back into the trained tensors."""
        with torch.no_grad():
            for p, v in zip(self.params, self.weights):
                p.copy_(v)


def finetune(model, train_records: Sequence, val_records: Sequence, cfg: FinetuneConfig, runtime: Runtime,
             log: Callable[[dict], None] | None = None, cache: ResizedImageCache | None = None) -> FinetuneResult:
    """Fine-tune ``model`` in place on ``train_records``; on return it holds the selected weights.

    ``val_records`` (may be empty) drive model selection and the lr schedule. ``log`` receives one
    dict per epoch (rank 0 only).
    """
    cfg.check()
    spec = model.spec.preprocess
    if not train_records:
        raise GrmpError("no training images for fine-tuning")
    cache = cache if cache is not None else ResizedImageCache(spec)
    params = list(model.finetune_parameters(cfg.unfreeze_blocks))
    freeze_all_but(model, params)
    trainer = _QGRTrainer(model, params, cfg, runtime)
    train_set = QualityDataset(train_records, spec, train=True, seed=cfg.seed, cache=cache)
    loader = make_loader(train_set, cfg.batch_size, True, cfg.seed, runtime, cfg.workers)
    val_set = QualityDataset(val_records, spec, train=False, cache=cache) if len(val_records) else None
    selection = _Selection(params, _validate(model, val_set, runtime))
    history, stop_reason, epoch = [], "max_epochs", 0
    for epoch in range(1, cfg.max_epochs + 1):
        record = {"stage": "finetune", "epoch": epoch, "lr": trainer.lr, **trainer.epoch(loader, epoch)}
        val = _validate(model, val_set, runtime)
        if val is None:
            selection.best_epoch = epoch  # a fixed budget: the last epoch is the one kept
        else:
            record.update({"val_srcc": val["srcc"], "val_plcc": val["plcc"]})
            selection.offer(epoch, val)
            trainer.scheduler.step(val["score"])
        record["best_epoch"] = selection.best_epoch
        history.append(record)
        if log is not None and runtime.is_main:
            log(record)
        if trainer.lr < cfg.min_lr:
            stop_reason = "min_lr"
            break
    if val_set is not None:
        selection.restore()
    model.eval()
    best = selection.best
    return FinetuneResult(epochs=epoch, best_epoch=selection.best_epoch, stop_reason=stop_reason, history=history,
                          best_val=None if best is None else {"srcc": best["srcc"], "plcc": best["plcc"]})
