"""A tiny generated IQA corpus for the training tests: procedural scenes degraded at graded levels.

Each reference is a smooth colour field with sharp shapes; each distortion type (the manifest's
group) is applied at levels 1..L, and the score falls linearly with the level (higher = better), so
even a small model can learn an ordering within a few epochs.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from grmp_edge.images import write_rgb
from grmp_edge.data.manifest import Record, write_manifest


def _reference(rng: np.random.Generator, size: int) -> np.ndarray:
    field = cv2.resize(rng.uniform(0, 255, (4, 4, 3)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    img = np.clip(field, 0, 255).astype(np.uint8)
    for _ in range(6):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = (int(v) for v in rng.integers(0, size - 8, 2))
        x1, y1 = x0 + int(rng.integers(6, size // 2)), y0 + int(rng.integers(6, size // 2))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (x1, y1), colour, -1)
        else:
            cv2.line(img, (x0, y0), (x1, y1), colour, 2)
    return img


def _distort(img: np.ndarray, kind: str, level: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "blur":
        return cv2.GaussianBlur(img, (0, 0), 0.6 * level)
    if kind == "noise":
        noisy = img.astype(np.float32) + rng.normal(0, 10.0 * level, img.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8)
    if kind == "impulse":
        out = img.copy()
        hit = rng.random(img.shape[:2]) < 0.04 * level
        out[hit] = rng.choice([0, 255], size=(int(hit.sum()), 1)).astype(np.uint8)
        return out
    if kind == "speckle":
        noisy = img.astype(np.float32) * (1.0 + rng.normal(0, 0.12 * level, img.shape))
        return np.clip(noisy, 0, 255).astype(np.uint8)
    if kind == "pixelate":
        h, w = img.shape[:2]
        small = cv2.resize(img, (max(2, w // (level + 1)), max(2, h // (level + 1))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    raise ValueError(kind)


def make_graded_corpus(folder: Path, refs: int = 4, levels: int = 4, size: int = 96, seed: int = 0,
                     kinds: tuple[str, ...] = ("blur", "noise", "pixelate")) -> Path:
    """Write ``refs * len(kinds) * levels`` PNGs and ``manifest.csv`` (group = kind) into ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for r in range(refs):
        ref = _reference(rng, size)
        for kind in kinds:
            for level in range(1, levels + 1):
                path = folder / f"r{r}_{kind}_{level}.png"
                write_rgb(path, _distort(ref, kind, level, rng))
                records.append(Record(image=path, score=1.0 - level / (levels + 1), group=kind, level=level,
                                      ref=f"r{r}"))
    return write_manifest(folder / "manifest.csv", records)
