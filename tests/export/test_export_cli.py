"""``grmp-edge export`` end to end on a grmp-tiny checkpoint, its formats table and its errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from grmp_edge.cli import main  # noqa: E402
from grmp_edge.data.manifest import Record, write_manifest  # noqa: E402
from grmp_edge.data.pristine import bundled_photos  # noqa: E402
from grmp_edge.export import gates  # noqa: E402
from grmp_edge.export.formats import EXPORT_FORMATS, formats_table  # noqa: E402
from grmp_edge.runtime.bundle import load_bundle  # noqa: E402
from grmp_edge.train.backbones import GRMP_TINY_CROPS, model_spec  # noqa: E402
from grmp_edge.train.checkpoint import save_checkpoint  # noqa: E402
from grmp_edge.train.model import build_model  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A grmp-tiny checkpoint (random weights, few prompts) whose run's training plan names a labelled
    manifest, as ``grmp-edge train`` records it in config.json."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("train") / "tiny"
    save_checkpoint(build_model(model_spec("grmp-tiny", None, vpt_tokens=8)).eval(), run / "best")
    photos = bundled_photos()
    manifest = write_manifest(run / "labels.csv", [Record(image=p, score=i / len(photos)) for i, p in enumerate(photos)])
    (run / "config.json").write_text(json.dumps({"data": str(manifest), "meta_data": [], "stage": "finetune"}))
    return run / "best"


@pytest.fixture
def runs(tmp_runs, checkpoint):
    """A runs/ folder whose latest training run is the tiny checkpoint."""
    import shutil

    shutil.copytree(checkpoint.parent, tmp_runs / "train" / "tiny")
    return tmp_runs


def _error(capsys, *argv) -> str:
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_formats_table_is_in_help(capsys):
    assert main(["export", "--help"]) == 0
    out = capsys.readouterr().out
    for spec in EXPORT_FORMATS.values():
        assert spec.file in out and spec.file in formats_table()
    assert "onnxruntime-cpu" in out and "--calib-method" in out


def test_export_all_from_latest_training_run(runs, capsys):
    assert main(["export", "--precision", "all", "--name", "tiny"]) == 0
    out = capsys.readouterr().out
    folder = runs / "export" / "tiny"
    for precision in ("fp16", "int8", "fp32"):  # the exact commands that use what was written
        assert f"grmp-edge run --bundle {folder} --precision {precision}\n" in out
    bundle = load_bundle(folder)  # the runtime's reader, hash checks included
    assert bundle.manifest.source["checkpoint"] == str((runs / "train" / "tiny" / "best").resolve())
    files = {f.path: f for f in bundle.manifest.files}
    assert set(files) == {"model_fp32.onnx", "model_fp16.onnx", "model_int8_qdq.onnx", "model_int8_cpu.onnx"}
    for f in bundle.manifest.files:
        bundle.verify(f)
    assert bundle.file_for("onnxruntime-cpu", "int8").path == "model_int8_cpu.onnx"
    assert bundle.file_for("onnxruntime-tensorrt", "int8").path == "model_int8_qdq.onnx"
    assert files["model_int8_cpu.onnx"].info["chosen"]
    g = bundle.manifest.gates
    assert g["parity_fp32"]["passed"] and g["parity_fp32"]["max_abs"] <= 1e-4 and g["parity_fp32"]["n"] >= 64
    for name in ("fp16", "int8_qdq", "int8_cpu"):
        assert g[name]["passed"], g[name]
        assert set(g[name]["labels"]) == {"fp32", name}  # the training manifest's scores are labels
    assert set(g["tensorrt_support"]) == {"model_fp32.onnx", "model_fp16.onnx", "model_int8_qdq.onnx"}
    calibration = bundle.manifest.calibration
    assert calibration["kind"] == "manifest" and calibration["source"].endswith("labels.csv")
    assert calibration["num_calib"] == 64 and calibration["num_eval"] == 64 and calibration["method"] == "minmax"
    assert bundle.manifest.model.vpt_tokens == 8
    assert bundle.preprocess.crops == GRMP_TINY_CROPS  # grmp-tiny's crop plan travels from the checkpoint to the runtime
    assert {"torch", "onnx", "onnxruntime", "open_clip", "grmp-edge"} <= set(bundle.manifest.versions)
    assert not [p for p in (runs / "export").iterdir() if p.name != "tiny"]  # no staging folder left


@pytest.mark.slow
def test_failed_gate_fails_the_export_unless_drift_is_allowed(runs, checkpoint, tmp_path, monkeypatch, capsys):
    import shutil

    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in bundled_photos()[:3]:
        shutil.copy(photo, folder / photo.name)
    monkeypatch.setitem(gates.GATE_DEFAULTS, "fp16", 1.01)  # unreachable: SRCC <= 1
    err = _error(capsys, "--checkpoint", str(checkpoint), "--name", "strict")
    assert "accuracy gate failed" in err and "--allow-drift" in err
    assert not (runs / "export" / "strict").exists()
    assert main(["export", "--checkpoint", str(checkpoint), "--name", "drift", "--allow-drift",
                 "--calib", str(folder)]) == 0
    manifest = load_bundle(runs / "export" / "drift").manifest
    assert manifest.gates["fp16"]["passed"] is False
    assert manifest.calibration["kind"] == "folder" and "labels" not in manifest.gates["fp16"]
    assert manifest.calibration["eval_images"] == 3 and not manifest.calibration["disjoint"]
    assert np.isfinite(manifest.gates["fp16"]["srcc"])


@pytest.mark.parametrize("argv, message", [
    (["--precision", "fp8"], "--precision must be one of"),
    (["--format", "tflite"], "--format must be one of"),
    (["--opset", "21"], "between 13 and 20"),
    (["--num-eval", "10"], "--num-eval must be >= 64"),
    (["--num-calib", "4"], "--num-calib must be >= 16"),
    (["--calib-method", "mse"], "--calib-method must be one of"),
    (["--batch-opt", "4", "--batch-max", "2"], "--batch-opt <= --batch-max"),
    (["--checkpoint", "/nonexistent/best"], "not a checkpoint folder"),
])
def test_bad_options_are_one_line_errors(tmp_runs, capsys, argv, message):
    assert message in _error(capsys, *argv)


def test_missing_inputs_are_one_line_errors(runs, checkpoint, tmp_path, capsys):
    assert "not found" in _error(capsys, "--calib", str(tmp_path / "nope"), "--name", "x")
    assert not (runs / "export" / "x").exists()
    (runs / "export" / "taken").mkdir(parents=True)
    (runs / "export" / "taken" / "manifest.json").write_text("{}")  # an empty folder does not block a name
    assert "already exists" in _error(capsys, "--name", "taken")


def test_no_training_run_is_a_one_line_error(tmp_runs, capsys):
    assert "no train run" in _error(capsys)


def test_engine_without_tensorrt_names_the_extra(runs, capsys):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed: building plans is covered by the tensorrt tests")
    assert "grmp-edge[tensorrt]" in _error(capsys, "--engine")


def test_engine_plans_are_bundled_with_their_sidecars(runs, monkeypatch, capsys):
    """The --engine plumbing with a stand-in builder (the real one needs a GPU): plans and sidecars are
    listed with hashes, built from the graph of their precision, and found by the runtime's reader."""
    import sys
    import types

    from grmp_edge.artifacts import atomic_write_json, sha256_file
    from grmp_edge.export import tensorrt_build

    built = []

    def fake_build_engine(onnx_path, plan_path, precision, batch, workspace_gib, **_):
        built.append((onnx_path.name, plan_path.name, precision, tuple(batch), workspace_gib))
        plan_path.write_bytes(b"serialized engine")
        atomic_write_json(tensorrt_build.sidecar_path(plan_path), {
            "plan": plan_path.name, "onnx": onnx_path.name, "onnx_sha256": sha256_file(onnx_path),
            "precision": precision, "batch": dict(zip(("min", "opt", "max"), batch)), "flavour": "tensorrt",
            "tensorrt_version": "10.3.0", "compute_capabilities": ["8.7"],
            "layers": {"layers": {"fp16": 3}, "gemm": {"fp16": 1}, "layernorm": {"fp32": 1}, "softmax": {}}})
        return plan_path

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(tensorrt_build, "build_engine", fake_build_engine)
    # The stand-in module has no parser: the export gate's parser check is faked too.
    monkeypatch.setattr(tensorrt_build, "parse_onnx", lambda path, flavour_name: "stand-in parser")
    assert main(["export", "--precision", "fp16", "--format", "engine", "--batch-opt", "2", "--batch-max", "4",
                 "--workspace-gib", "0.5", "--name", "plans"]) == 0
    assert built == [("model_fp16.onnx", "model_fp16.plan", "fp16", (1, 2, 4), 0.5)]
    bundle = load_bundle(runs / "export" / "plans")
    plan = bundle.file_for("tensorrt", "fp16")
    assert plan.path == "model_fp16.plan" and plan.info["source"] == "model_fp16.onnx"
    sidecar = bundle.sidecar(plan)
    assert sidecar["batch"] == {"min": 1, "opt": 2, "max": 4}
    assert bundle.onnx_source(plan, sidecar).name == "model_fp16.onnx"
    assert "model_fp16.plan.json" in {f.path for f in bundle.manifest.files}

    # On the device: build the FP32 plan from the bundle's own graph, no checkpoint involved.
    built.clear()
    capsys.readouterr()
    assert main(["export", "--engine", "--onnx", str(runs / "export" / "plans" / "model_fp32.onnx")]) == 0
    assert f"grmp-edge run --bundle {runs / 'export' / 'plans'} --backend tensorrt --precision fp32" in capsys.readouterr().out
    # Unset, the profile follows the bundle's crop plan: one frame's crops at opt, four frames' at max.
    assert built == [("model_fp32.onnx", "model_fp32.plan", "fp32", (1, GRMP_TINY_CROPS, 4 * GRMP_TINY_CROPS), 1.0)]
    bundle = load_bundle(runs / "export" / "plans")
    assert bundle.file_for("tensorrt", "fp32").info["source"] == "model_fp32.onnx"
    assert bundle.file_for("tensorrt", "fp16").path == "model_fp16.plan"  # earlier entries kept
    capsys.readouterr()
    assert "not fp16" in _error(capsys, "--engine", "--onnx", str(runs / "export" / "plans" / "model_fp32.onnx"),
                                "--precision", "fp16")
    assert "add --engine" in _error(capsys, "--onnx", str(runs / "export" / "plans" / "model_fp32.onnx"))
    (runs / "export" / "plans" / "model_fp16.onnx").write_bytes(b"tampered")
    assert "does not match its sha256" in _error(capsys, "--engine", "--onnx",
                                                 str(runs / "export" / "plans" / "model_fp16.onnx"))
