"""Torch datasets over manifest records, built on the shared preprocessing spec.

* Evaluation transform: :func:`grmp_edge.preprocess.preprocess` (resize + centre crop) then
  :func:`~grmp_edge.preprocess.normalize` - exactly what the exported graph and the edge
  runtime compute. With ``crops > 1`` (a model's crop plan, for evaluation), each item is the
  runtime's :func:`~grmp_edge.preprocess.native_crops` of the decoded image instead, and
  :func:`predict_quality` averages their scores, as ``grmp-edge run --crops`` does.
* Training augmentation: the same :func:`~grmp_edge.preprocess.resize`, then a random
  ``size`` crop and a horizontal flip drawn from ``(seed, epoch, index)``, so it is reproducible and
  independent of worker count, rank and iteration order.
* Labels: the set's scores min-max normalised to [0, 1] (``docs/method.md``, "Meta-prompt pre-training"), higher = better.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from grmp_edge.images import read_rgb
from grmp_edge.data.manifest import minmax_normalize
from grmp_edge.errors import GrmpError
from grmp_edge.preprocess import center_crop, native_crops, normalize, resize
from grmp_edge.spec import PreprocessSpec

DEFAULT_CACHE_BYTES = 512 << 20


class ResizedImageCache:
    """Decoded, resized uint8 images kept in memory until ``max_bytes`` is used, then decoded on demand.

    A few-shot set or a synthetic corpus fits and is decoded once; a full KonIQ-sized dataset spills
    over and keeps only its first images, so memory stays bounded (the release held whole datasets).
    DataLoader worker processes each fill their own copy.
    """

    def __init__(self, spec: PreprocessSpec, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.spec = spec
        self.max_bytes = max_bytes
        self.used = 0
        self._images: dict[str, np.ndarray] = {}

    def get(self, path: Path) -> np.ndarray:
        """The image at ``path`` after the spec's resize step (uint8 RGB)."""
        key = str(path)
        img = self._images.get(key)
        if img is None:
            img = resize(read_rgb(path), self.spec)
            if self.used + img.nbytes <= self.max_bytes:
                self._images[key] = img
                self.used += img.nbytes
        return img


class QualityDataset(Dataset):
    """``(image CHW float32, soft label)`` pairs for a list of manifest records.

    ``train=True`` applies the seeded random crop + flip (call :meth:`set_epoch` each epoch for new
    draws); ``train=False`` applies the deterministic evaluation transform. Datasets built on the same
    records can share one :class:`ResizedImageCache`. ``crops > 1`` makes each item the
    ``(crops, 3, S, S)`` native-resolution crops of its image (evaluation only).
    """

    def __init__(self, records: Sequence, spec: PreprocessSpec, train: bool = False, seed: int = 0,
                 cache: ResizedImageCache | None = None, crops: int = 1):
        if train and crops != 1:
            raise GrmpError("a crop plan is for evaluation; training draws one random crop per image")
        self.crops = crops
        self.records = list(records)
        self.scores = np.array([r.score for r in self.records], dtype=np.float64)
        self.labels = minmax_normalize(self.scores).astype(np.float32)
        self.spec = spec
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.cache = cache if cache is not None else ResizedImageCache(spec)

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation draws of an epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def crop(self, index: int) -> np.ndarray:
        """The uint8 ``(size, size, 3)`` model input of one record (augmented when training)."""
        img = self.cache.get(self.records[index].image)
        size = self.spec.size
        if not self.train:
            return center_crop(img, size)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        h, w = img.shape[:2]
        top = int(rng.integers(0, h - size + 1))
        left = int(rng.integers(0, w - size + 1))
        out = img[top:top + size, left:left + size]
        if rng.random() < 0.5:
            out = out[:, ::-1]
        return out

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.crops > 1:  # crops of the frame at its own resolution, not of the resized image
            x = normalize(native_crops(read_rgb(self.records[index].image), self.spec, self.crops), self.spec)
        else:
            x = normalize(np.ascontiguousarray(self.crop(index))[None], self.spec)[0]
        return torch.from_numpy(x), torch.tensor(self.labels[index])


def make_loader(dataset: QualityDataset, batch_size: int, shuffle: bool, seed: int, runtime,
                workers: int = 0) -> DataLoader:
    """Batches of ``dataset`` for this rank: a ``batch_size`` global batch split over the ranks.

    Shuffling is seeded; on several ranks a ``DistributedSampler`` gives each its shard (call
    ``loader.sampler.set_epoch`` through :func:`set_loader_epoch`).
    """
    per_rank = max(1, -(-batch_size // runtime.world_size))
    sampler = runtime.sampler(dataset, shuffle=shuffle, seed=seed)
    generator = None
    if sampler is None and shuffle:
        generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=per_rank, shuffle=shuffle if sampler is None else False,
                      sampler=sampler, generator=generator, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=runtime.device.type == "cuda")


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """New augmentation draws and (on several ranks) a new shard order for ``epoch``."""
    loader.dataset.set_epoch(epoch)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


@torch.no_grad()
def predict_quality(model: torch.nn.Module, dataset: QualityDataset, device: torch.device,
                    batch_size: int = 64,
                    autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> np.ndarray:
    """The model's quality in (0, 1) for every item of ``dataset``, in order (eval mode, no grad); an
    item of several crops gets the mean of their scores."""
    was_training = model.training
    model.eval()
    out = []
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        for images, _ in loader:
            flat = images.flatten(0, 1) if images.ndim == 5 else images  # (B, crops, 3, S, S): one batch
            with autocast():
                q = model.quality(flat.to(device, non_blocking=True))
            out.append(q.float().cpu().numpy().reshape(len(images), -1).mean(axis=1))
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
