"""Calibration / eval image sets: where they come from and how they are split."""
from __future__ import annotations

import json

import numpy as np
import pytest

from grmp_edge.images import write_rgb
from grmp_edge.data.manifest import Record, write_manifest
from grmp_edge.errors import GrmpError
from grmp_edge.export.calibration import load_calibration, training_manifest
from grmp_edge.spec import PreprocessSpec

SPEC = PreprocessSpec.clip(32)


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    for i in range(6):
        write_rgb(folder / f"p{i}.png", rng.integers(0, 256, (40 + 4 * i, 50, 3), dtype=np.uint8))
    return folder


def test_training_manifest_follows_the_training_plan(tmp_path):
    run = tmp_path / "runs" / "train" / "exp"
    (run / "best").mkdir(parents=True)
    assert training_manifest(run / "best") is None
    (run / "meta.csv").write_text("image,score\n")
    (run / "config.json").write_text(json.dumps({"data": "missing.csv", "meta_data": ["meta.csv"]}))
    assert training_manifest(run / "best") == run / "meta.csv"  # relative to the run, first existing
    (run / "target.csv").write_text("image,score\n")
    (run / "config.json").write_text(json.dumps({"data": str(run / "target.csv"), "meta_data": ["meta.csv"]}))
    assert training_manifest(run / "best") == run / "target.csv"  # the fine-tuning manifest comes first


def test_enough_images_give_disjoint_sets(photos):
    data = load_calibration(photos, SPEC, num_calib=2, num_eval=3, seed=1)
    assert data.disjoint and data.kind == "folder"
    assert data.calib.images.shape == (2, 32, 32, 3) and data.eval.images.shape == (3, 32, 32, 3)
    assert not set(data.calib.sources) & set(data.eval.sources)
    assert data.eval.labels is None
    again = load_calibration(photos, SPEC, num_calib=2, num_eval=3, seed=1)
    np.testing.assert_array_equal(again.eval.images, data.eval.images)  # seeded


def test_few_images_give_several_crops_each(photos, tmp_path):
    records = [Record(image=p, score=float(i)) for i, p in enumerate(sorted(photos.iterdir()))]
    manifest = write_manifest(tmp_path / "labels.csv", records)
    data = load_calibration(manifest, SPEC, num_calib=16, num_eval=20)
    assert not data.disjoint and data.kind == "manifest"
    assert len(data.eval.images) == 20 and len(data.calib.images) == 16
    assert data.eval.labels.shape == (20,)
    by_source = {}
    for source, label in zip(data.eval.sources, data.eval.labels):
        by_source.setdefault(source, set()).add(label)
    assert all(len(labels) == 1 for labels in by_source.values())  # a crop keeps its image's label
    summary = data.summary()
    assert summary["labels"] and summary["eval_images"] == 6 and summary["num_eval"] == 20


def test_bad_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GrmpError, match="holds no images"):
        load_calibration(tmp_path / "empty", SPEC, 16, 64)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(GrmpError, match="folder of images or a manifest"):
        load_calibration(tmp_path / "notes.txt", SPEC, 16, 64)
    with pytest.raises(GrmpError, match="not found"):
        load_calibration(tmp_path / "nope", SPEC, 16, 64)
