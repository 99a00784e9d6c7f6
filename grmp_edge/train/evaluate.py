"""Scoring a model against human scores: the protocol's test metrics and ``grmp-edge eval``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from grmp_edge.metrics import evaluate
from grmp_edge.train.datasets import QualityDataset, ResizedImageCache, predict_quality


@dataclass
class CheckpointEvaluation:
    """A checkpoint's metrics on a manifest (SRCC, KRCC, PLCC raw and logistic, RMSE), over ``n``
    images scored as ``crops`` crops each."""

    metrics: dict[str, float]
    n: int
    crops: int


def score_records(model, records: Sequence, runtime, cache: ResizedImageCache) -> dict | None:
    """All metrics of the model on ``records`` (centre crop), computed on rank 0; None elsewhere."""
    if not runtime.is_main:
        return None
    dataset = QualityDataset(records, model.spec.preprocess, train=False, cache=cache)
    pred = predict_quality(model, dataset, runtime.device, autocast=runtime.autocast)
    return evaluate(pred, dataset.scores)


def evaluate_checkpoint(checkpoint_dir: str | Path, manifest: str | Path, device: str = "auto",
                        batch_size: int = 64, crops: int | None = None) -> CheckpointEvaluation:
    """Score every image of ``manifest`` with a checkpoint as ``crops`` crops averaged (None: the
    checkpoint's crop plan)."""
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.train.checkpoint import load_checkpoint
    from grmp_edge.train.distributed import resolve_device

    dev = resolve_device(device)
    model = load_checkpoint(checkpoint_dir, device=dev)
    crops, _ = model.spec.preprocess.crop_plan(crops)
    dataset = QualityDataset(load_manifest(manifest), model.spec.preprocess, train=False, crops=crops)
    pred = predict_quality(model, dataset, dev, batch_size)
    return CheckpointEvaluation(evaluate(pred, dataset.scores), len(dataset), crops)
