"""Bundle writing: files and manifest published together, hashes recorded, tampering detected."""
from __future__ import annotations

import json

import pytest

from grmp_edge.artifacts import sha256_file
from grmp_edge.errors import GrmpError
from grmp_edge.export.bundle import BundleWriter, producing_versions
from grmp_edge.runtime.bundle import load_bundle
from grmp_edge.spec import BundleManifest, ModelSpec, PreprocessSpec

SPEC = ModelSpec(backbone="grmp-tiny", pretrained=None, vpt_tokens=8, preprocess=PreprocessSpec.clip(96))


def _write(out_dir):
    with BundleWriter(out_dir, SPEC) as bundle:
        bundle.path("model_fp32.onnx").write_bytes(b"fp32 graph")
        bundle.path("model_int8_cpu.onnx").write_bytes(b"int8 graph")
        bundle.add("model_fp32.onnx", "fp32", ["onnxruntime", "tensorrt"])
        bundle.add("model_int8_cpu.onnx", "int8", ["onnxruntime-cpu"], info={"chosen": "dynamic_int8"})
        bundle.gates["parity_fp32"] = {"n": 64, "max_abs": 1e-7, "passed": True}
        bundle.calibration = {"kind": "folder", "num_calib": 64}
        manifest = bundle.commit()
    return manifest


def test_manifest_round_trip(tmp_path):
    out = tmp_path / "export" / "exp"
    out.mkdir(parents=True)  # new_run_dir leaves an empty placeholder; the bundle replaces it
    written = _write(out)
    loaded = BundleManifest.load(out / "manifest.json")
    assert loaded.to_dict() == written.to_dict()
    assert [f.path for f in loaded.files] == ["model_fp32.onnx", "model_int8_cpu.onnx"]
    assert loaded.files[0].sha256 == sha256_file(out / "model_fp32.onnx")
    assert loaded.files[1].targets == ["onnxruntime-cpu"] and loaded.files[1].info == {"chosen": "dynamic_int8"}
    assert loaded.preprocess == SPEC.preprocess and loaded.gates["parity_fp32"]["passed"]
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["preprocess"]["size"] == 96 and raw["schema_version"] == 1
    assert {"grmp-edge", "numpy"} <= set(raw["versions"])
    assert sorted(p.name for p in tmp_path.joinpath("export").iterdir()) == ["exp"]  # no staging left


def test_tampered_file_is_detected_by_the_runtime_reader(tmp_path):
    out = tmp_path / "bundle"
    _write(out)
    bundle = load_bundle(out)
    bundle.verify(bundle.manifest.files[0])
    (out / "model_fp32.onnx").write_bytes(b"fp32 graph, modified")
    with pytest.raises(GrmpError, match="model_fp32.onnx does not match its sha256"):
        bundle.file_for("onnxruntime-cpu", "fp32")


def test_failure_leaves_nothing_behind(tmp_path):
    out = tmp_path / "export" / "exp"
    out.mkdir(parents=True)
    with pytest.raises(RuntimeError):
        with BundleWriter(out, SPEC) as bundle:
            bundle.path("model_fp32.onnx").write_bytes(b"half a graph")
            bundle.add("model_fp32.onnx", "fp32", ["onnxruntime"])
            raise RuntimeError("export failed midway")
    assert list(tmp_path.joinpath("export").iterdir()) == []


def test_file_changed_after_add_is_refused(tmp_path):
    with BundleWriter(tmp_path / "b", SPEC) as bundle:
        bundle.path("model_fp32.onnx").write_bytes(b"graph")
        bundle.add("model_fp32.onnx", "fp32", ["onnxruntime"])
        bundle.path("model_fp32.onnx").write_bytes(b"graph, rewritten")
        with pytest.raises(GrmpError, match="changed after it was recorded"):
            bundle.commit()
    assert not (tmp_path / "b").exists()


def test_bad_names_and_folders(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "other.txt").write_text("x")
    with pytest.raises(GrmpError, match="not empty"):
        BundleWriter(full, SPEC)
    with BundleWriter(tmp_path / "b", SPEC) as bundle:
        for bad in ("../escape.onnx", "manifest.json", "sub/model.onnx"):
            with pytest.raises(GrmpError, match="plain names"):
                bundle.path(bad)
        with pytest.raises(GrmpError, match="was not written"):
            bundle.add("missing.onnx", "fp32", ["onnxruntime"])


def test_producing_versions_names_the_toolchain():
    versions = producing_versions()
    assert versions["grmp-edge"]
    pytest.importorskip("torch")
    assert {"torch", "onnx", "onnxruntime", "open_clip"} <= set(versions)
