"""Bundle loading, hash verification and the file-per-backend selection rules."""
from __future__ import annotations

import json
import os

import pytest

from grmp_edge.artifacts import sha256_file
from grmp_edge.errors import GrmpError
from grmp_edge.runtime.bundle import load_bundle
from grmp_edge.spec import BundleFile, BundleManifest


import tiny_bundle as _tiny
STANDARD_FILES = _tiny.STANDARD_FILES
make_bundle = _tiny.make_bundle


@pytest.fixture
def bundle(tmp_path):
    return load_bundle(make_bundle(tmp_path / "bundle"))


def test_loads_from_folder_or_manifest(tmp_path):
    folder = make_bundle(tmp_path / "b")
    by_folder, by_manifest = load_bundle(folder), load_bundle(folder / "manifest.json")
    assert by_folder.folder == by_manifest.folder == folder
    assert by_folder.preprocess.size == 8
    assert [f.path for f in by_folder.manifest.files] == [f[0] for f in STANDARD_FILES]


def test_none_takes_latest_export_run(tmp_runs):
    old = make_bundle(tmp_runs / "export" / "old")
    new = make_bundle(tmp_runs / "export" / "new")
    (tmp_runs / "export" / "not-a-bundle").mkdir()
    os.utime(old / "manifest.json", (1_000_000, 1_000_000))
    assert load_bundle(None).folder == new


def test_none_without_export_runs_says_what_to_do(tmp_runs):
    with pytest.raises(GrmpError, match="grmp-edge export"):
        load_bundle(None)


def test_folder_without_manifest_is_refused(tmp_path):
    with pytest.raises(GrmpError, match="no manifest.json"):
        load_bundle(tmp_path)


def test_newer_schema_is_refused(tmp_path):
    folder = make_bundle(tmp_path / "b")
    data = json.loads((folder / "manifest.json").read_text())
    data["schema_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(GrmpError, match="newer"):
        load_bundle(folder)


def test_tampered_file_is_refused_by_name(bundle):
    path = bundle.folder / "model_fp32.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(GrmpError, match="model_fp32.onnx does not match its sha256"):
        bundle.file_for("onnxruntime-cpu", "fp32")
    # other files stay usable
    assert bundle.file_for("onnxruntime-cpu", "int8").path == "model_int8_cpu.onnx"


def test_missing_file_is_refused_by_name(bundle):
    (bundle.folder / "model_int8_cpu.onnx").unlink()
    with pytest.raises(GrmpError, match="model_int8_cpu.onnx is missing"):
        bundle.file_for("onnxruntime-cpu", "int8")


def test_path_outside_the_bundle_is_refused(tmp_path):
    folder = make_bundle(tmp_path / "b")
    data = json.loads((folder / "manifest.json").read_text())
    data["files"][0]["path"] = "../elsewhere.onnx"
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(GrmpError, match="outside the bundle"):
        load_bundle(folder).file_for("onnxruntime-cpu", "fp32")


@pytest.mark.parametrize("backend, precision, expected", [
    ("onnxruntime-cpu", "int8", "model_int8_cpu.onnx"),
    ("onnxruntime-cpu", "fp32", "model_fp32.onnx"),
    ("onnxruntime-cpu", "auto", "model_fp32.onnx"),
    ("onnxruntime-cuda", "int8", "model_int8_qdq.onnx"),
    ("onnxruntime-cuda", "fp16", "model_fp16.onnx"),
    ("onnxruntime-cuda", "auto", "model_fp16.onnx"),
    ("onnxruntime-cuda", "fp32", "model_fp32.onnx"),
    ("onnxruntime-tensorrt", "int8", "model_int8_qdq.onnx"),
    ("tensorrt", "auto", "model_fp16.plan"),
    ("tensorrt", "fp16", "model_fp16.plan"),
])
def test_selection_rules(bundle, backend, precision, expected):
    assert bundle.file_for(backend, precision).path == expected


def test_cpu_int8_falls_back_to_a_generic_onnxruntime_file(tmp_path):
    files = [
        ("model_fp32.onnx", "fp32", "onnx", ["onnxruntime", "tensorrt"]),
        ("model_int8_qdq.onnx", "int8", "onnx", ["tensorrt", "onnxruntime-gpu"]),
        ("model_int8_dyn.onnx", "int8", "onnx", ["onnxruntime"]),
    ]
    bundle = load_bundle(make_bundle(tmp_path / "b", files=files))
    assert bundle.file_for("onnxruntime-cpu", "int8").path == "model_int8_dyn.onnx"
    assert bundle.file_for("onnxruntime-cuda", "int8").path == "model_int8_qdq.onnx"


def test_cpu_auto_without_fp32_takes_int8(tmp_path):
    files = [("model_int8_cpu.onnx", "int8", "onnx", ["onnxruntime-cpu"])]
    bundle = load_bundle(make_bundle(tmp_path / "b", files=files))
    assert bundle.file_for("onnxruntime-cpu", "auto").path == "model_int8_cpu.onnx"


def test_missing_precision_lists_what_the_bundle_holds(bundle):
    with pytest.raises(GrmpError) as info:
        bundle.file_for("onnxruntime-cpu", "fp16")
    message = str(info.value)
    assert "no onnx file at fp16 for onnxruntime-cpu" in message
    assert "model_fp16.onnx (fp16 onnx for onnxruntime-gpu/tensorrt)" in message
    assert "\n" not in message
    with pytest.raises(GrmpError, match="no plan file at int8 for tensorrt"):
        bundle.file_for("tensorrt", "int8")


def test_unknown_backend_and_precision_are_refused(bundle):
    with pytest.raises(GrmpError, match="unknown backend"):
        bundle.file_for("openvino", "fp32")
    with pytest.raises(GrmpError, match="unknown precision"):
        bundle.file_for("onnxruntime-cpu", "fp8")


def test_sidecar_and_onnx_source_of_a_plan(bundle):
    plan = bundle.file_for("tensorrt", "fp16")
    sidecar = bundle.sidecar(plan)
    assert sidecar["compute_capability"] == "8.7"
    assert bundle.onnx_source(plan, sidecar) == (bundle.folder / "model_fp16.onnx").resolve()
    # without a recorded hash the TensorRT-targeted ONNX of the same precision is the source
    assert bundle.onnx_source(plan, {}) == (bundle.folder / "model_fp16.onnx").resolve()
    # the exporter's info.source names it outright
    plan.info["source"] = "model_fp32.onnx"
    assert bundle.onnx_source(plan, sidecar) == (bundle.folder / "model_fp32.onnx").resolve()


def test_listed_sidecar_is_hash_checked(tmp_path):
    folder = make_bundle(tmp_path / "b")
    manifest = BundleManifest.load(folder / "manifest.json")
    manifest.files.append(BundleFile(path="model_fp16.plan.json", sha256=sha256_file(folder / "model_fp16.plan.json"),
                                     precision="fp16", format="json"))
    manifest.save(folder / "manifest.json")
    bundle = load_bundle(folder)
    plan = bundle.file_for("tensorrt", "fp16")
    assert bundle.sidecar(plan)["gpu_name"] == "Orin"
    (folder / "model_fp16.plan.json").write_text("{}")
    with pytest.raises(GrmpError, match="model_fp16.plan.json does not match its sha256"):
        bundle.sidecar(plan)
