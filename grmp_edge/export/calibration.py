"""The real images export needs: a calibration set for INT8 and an eval set for parity and gates.

Both come from one source - a manifest (images with labels), a folder of images, or, when the training
run names no manifest, the natural photos bundled with scikit-image - and are cut by the runtime's own
preprocessing, so the graphs are checked on exactly what they will see. With enough images the two
sets are disjoint (one centre crop per image); with fewer, each image gives several crops (its centre
crop plus native-resolution crops) and the sets may share images, which the summary records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grmp_edge.images import list_images, read_rgb
from grmp_edge.errors import GrmpError
from grmp_edge.preprocess import native_crops, preprocess
from grmp_edge.spec import PreprocessSpec, read_json

# Where a training run records the manifests it used: ``config.json`` (the training plan: ``data`` is
# the fine-tuning manifest, ``meta_data`` the meta-training ones), then results / args files; the
# first existing manifest under these keys, in this order, is taken.
TRAINING_RECORDS = ("config.json", "results.json", "args.json")
TRAINING_MANIFEST_KEYS = ("calib_manifest", "data", "manifest", "train_manifest", "finetune_manifest",
                          "meta_data")
BUNDLED = "bundled-photos"


@dataclass
class ImageSet:
    """Preprocessed crops ``(N, S, S, 3)`` uint8, their labels (or None) and source image paths."""

    images: np.ndarray
    labels: np.ndarray | None
    sources: list[str] = field(default_factory=list)

    def batches(self, size: int) -> list[np.ndarray]:
        """The crops in batches of ``size`` (the last one smaller)."""
        return [self.images[i:i + size] for i in range(0, len(self.images), size)]


@dataclass
class CalibrationData:
    """The calibration and eval sets and where they came from."""

    kind: str  # "manifest", "folder" or "bundled-photos"
    source: str
    calib: ImageSet
    eval: ImageSet
    disjoint: bool
    seed: int

    def summary(self) -> dict[str, Any]:
        """What the bundle manifest records about calibration."""
        return {
            "kind": self.kind,
            "source": self.source,
            "num_calib": int(len(self.calib.images)),
            "num_eval": int(len(self.eval.images)),
            "calib_images": len(set(self.calib.sources)),
            "eval_images": len(set(self.eval.sources)),
            "disjoint": self.disjoint,
            "labels": self.eval.labels is not None,
            "seed": self.seed,
        }


def training_manifest(checkpoint: str | Path) -> Path | None:
    """The manifest the training run of ``checkpoint`` (``runs/train/<name>/best``) used, if it says.

    Looks in the run's :data:`TRAINING_RECORDS` at the top level and under ``args`` / ``config`` for
    the keys of :data:`TRAINING_MANIFEST_KEYS` (a path or a list of paths to .csv files); relative
    paths are taken from the working directory, then from the run folder. None when nothing names an
    existing manifest.
    """
    run = Path(checkpoint).resolve().parent
    for name in TRAINING_RECORDS:
        record = run / name
        if not record.is_file():
            continue
        data = read_json(record, "training record")
        scopes = [data] + [data[k] for k in ("args", "config") if isinstance(data.get(k), dict)]
        for key in TRAINING_MANIFEST_KEYS:
            for scope in scopes:
                values = scope.get(key)
                for value in values if isinstance(values, list) else [values]:
                    if not isinstance(value, str) or not value.lower().endswith(".csv"):
                        continue
                    for candidate in (Path(value), run / value):
                        if candidate.is_file():
                            return candidate
    return None


def _items(source: Path | None) -> tuple[str, str, list[tuple[Path, float | None]]]:
    """(kind, description, [(image path, label or None)]) of a calibration source."""
    if source is None:
        from grmp_edge.data.pristine import bundled_photos

        return BUNDLED, "scikit-image sample photos", [(p, None) for p in bundled_photos()]
    if source.is_dir():
        paths = list_images(source)
        if not paths:
            raise GrmpError(f"--calib folder {source} holds no images")
        return "folder", str(source), [(p, None) for p in paths]
    if source.is_file() and source.suffix.lower() == ".csv":
        from grmp_edge.data.manifest import load_manifest

        records = load_manifest(source)
        if not records:
            raise GrmpError(f"--calib manifest {source} has no rows")
        return "manifest", str(source), [(r.image, r.score) for r in records]
    if source.exists():
        raise GrmpError(f"--calib must be a folder of images or a manifest .csv, got {source}")
    raise GrmpError(f"--calib not found: {source}")


def _crops(items: list[tuple[Path, float | None]], spec: PreprocessSpec, n: int,
           decoded: dict[Path, np.ndarray]) -> ImageSet:
    """``n`` crops from ``items`` in order, spread evenly: one per image when there are enough, else
    each image's centre crop plus native-resolution crops."""
    images, labels, sources = [], [], []
    for i, (path, label) in enumerate(items[:n]):
        count = n // len(items) + (1 if i < n % len(items) else 0)
        if path not in decoded:
            decoded[path] = read_rgb(path)
        rgb = decoded[path]
        crops = [preprocess(rgb, spec)]
        if count > 1:
            crops += list(native_crops(rgb, spec, count - 1))
        images += crops
        labels += [label] * len(crops)
        sources += [str(path)] * len(crops)
    has_labels = all(label is not None for label in labels)
    return ImageSet(np.stack(images), np.asarray(labels, np.float64) if has_labels else None, sources)


def load_calibration(source: str | Path | None, spec: PreprocessSpec, num_calib: int, num_eval: int,
                     seed: int = 0) -> CalibrationData:
    """Calibration and eval crops from ``source`` (a manifest .csv, an image folder, or None for the
    bundled photos), shuffled with ``seed``. Eval labels come from a manifest's scores."""
    kind, description, items = _items(Path(source) if source is not None else None)
    order = np.random.default_rng(seed).permutation(len(items))
    items = [items[i] for i in order]
    decoded: dict[Path, np.ndarray] = {}
    disjoint = len(items) >= num_calib + num_eval
    if disjoint:
        evals = _crops(items[:num_eval], spec, num_eval, decoded)
        calib = _crops(items[num_eval:num_eval + num_calib], spec, num_calib, decoded)
    else:
        evals = _crops(items, spec, num_eval, decoded)
        calib = _crops(items[::-1], spec, num_calib, decoded)
    return CalibrationData(kind, description, calib, evals, disjoint, seed)
