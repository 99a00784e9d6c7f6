"""The few-shot evaluation protocol (``docs/method.md``, "The few-shot protocol").

Each of R seeded splits shuffles the target dataset into an 80 % pool and a 20 % test part; N
training images ("shots") and a separate validation sample are drawn from the pool. Validation
drives model selection and the learning-rate schedule, so the test part is only ever scored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grmp_edge.errors import GrmpError


@dataclass
class ProtocolConfig:
    """Few-shot splits: ``splits`` seeded 80/20 pool/test splits, ``shots`` training images from the
    pool, ``val_size`` further pool images for validation (None: ``max(5, shots // 4)``; 0: none, a
    fixed epoch budget)."""

    shots: int = 50
    splits: int = 10
    test_fraction: float = 0.2
    val_size: int | None = None
    seed: int = 0

    @property
    def validation_images(self) -> int:
        return max(5, self.shots // 4) if self.val_size is None else self.val_size


@dataclass
class Split:
    """Indices into the target records of one split."""

    index: int
    train: list[int]
    val: list[int]
    test: list[int]


def make_splits(n_images: int, cfg: ProtocolConfig) -> list[Split]:
    """The protocol's seeded splits of ``n_images`` records; too small a dataset is a user error."""
    if cfg.shots < 2 or cfg.splits < 1:
        raise GrmpError(f"need --shots >= 2 and --splits >= 1 (got {cfg.shots} and {cfg.splits})")
    if not 0 < cfg.test_fraction < 1:
        raise GrmpError(f"test fraction must be in (0, 1), got {cfg.test_fraction}")
    n_test = int(round(cfg.test_fraction * n_images))
    n_val = cfg.validation_images
    if n_val and n_val < 3:
        raise GrmpError(f"a validation set needs at least 3 images for a correlation (got {n_val}); use 0 for none")
    if n_test < 3 or n_images - n_test < cfg.shots + n_val:
        raise GrmpError(
            f"too few images for {cfg.shots} shots: {n_images} images give a pool of {n_images - n_test} "
            f"and a test part of {n_test} (need pool >= {cfg.shots} training + {n_val} validation, test >= 3)"
        )
    splits = []
    for r in range(cfg.splits):
        order = np.random.default_rng([cfg.seed, r]).permutation(n_images).tolist()
        test, pool = order[:n_test], order[n_test:]
        splits.append(Split(r, pool[:cfg.shots], pool[cfg.shots:cfg.shots + n_val], test))
    return splits
