"""Specs round-trip through JSON; a newer bundle schema is refused."""
from __future__ import annotations

import json

import pytest

from grmp_edge.errors import GrmpError
from grmp_edge.spec import BUNDLE_SCHEMA_VERSION, BundleFile, BundleManifest, ModelSpec, PreprocessSpec


def test_preprocess_policies():
    clip = PreprocessSpec.clip(224)
    assert (clip.resize, clip.resize_mode, clip.policy) == (224, "shortest", "clip")
    release = PreprocessSpec.release(224)
    assert (release.resize, release.resize_mode, release.mean) == (244, "square", (0.485, 0.456, 0.406))
    with pytest.raises(GrmpError):
        PreprocessSpec(size=224, resize=200)
    with pytest.raises(GrmpError):
        PreprocessSpec.named("imagenet", 224)


def test_model_spec_round_trip(tmp_path):
    spec = ModelSpec(backbone="grmp-tiny", pretrained=None, backbone_config={"embed_dim": 64},
                     vpt_tokens=8, preprocess=PreprocessSpec.release(96))
    path = spec.save(tmp_path / "spec.json")
    again = ModelSpec.load(path)
    assert again == spec
    assert isinstance(again.classnames, tuple) and isinstance(again.preprocess, PreprocessSpec)


def test_bundle_manifest_round_trip_and_newer_schema(tmp_path):
    manifest = BundleManifest(model=ModelSpec(), files=[BundleFile("m.onnx", "ab" * 32, "fp32", targets=["onnxruntime"])],
                              source={"checkpoint": "runs/train/exp/best"})
    path = manifest.save(tmp_path / "manifest.json")
    again = BundleManifest.load(path)
    assert again.files == manifest.files and again.preprocess == manifest.preprocess
    assert again.source == {"checkpoint": "runs/train/exp/best"}
    data = json.loads(path.read_text())
    data["schema_version"] = BUNDLE_SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(GrmpError, match="newer"):
        BundleManifest.load(path)


def test_corrupt_json_is_one_line_error(tmp_path):
    bad = tmp_path / "spec.json"
    bad.write_text("{not json")
    with pytest.raises(GrmpError, match="unreadable"):
        ModelSpec.load(bad)
    with pytest.raises(GrmpError, match="not found"):
        ModelSpec.load(tmp_path / "missing.json")


def test_crop_plan_round_trips_and_old_specs_read_as_one_crop(tmp_path):
    spec = ModelSpec(backbone="grmp-tiny", pretrained=None, preprocess=PreprocessSpec(size=96, resize=256, crops=4))
    manifest = BundleManifest(model=spec)
    again = BundleManifest.load(manifest.save(tmp_path / "manifest.json"))
    assert again.preprocess.crops == 4 and again.model == spec
    # A bundle written before the plan existed has no "crops": it keeps scoring the centre crop.
    data = json.loads((tmp_path / "manifest.json").read_text())
    for pre in (data["model"]["preprocess"], data["preprocess"]):
        del pre["crops"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    assert BundleManifest.load(tmp_path / "manifest.json").preprocess.crops == 1
    assert again.preprocess.crop_plan() == (4, "the model's crop plan")
    assert again.preprocess.crop_plan(1)[0] == 1


@pytest.mark.parametrize("crops", [0, 2000, 2.5, True, "4"])
def test_crop_plan_out_of_range_is_refused(crops):
    with pytest.raises(GrmpError, match="crops must be a whole number"):
        PreprocessSpec.from_dict({"size": 96, "resize": 256, "crops": crops})
