"""``grmp-edge export --format triton``: every config.pbtxt parses as Triton's ModelConfig and says
what the bundle serves (input, output, batching, instances); the model files are the bundle's."""
from __future__ import annotations

import pytest
import tiny_bundle

from grmp_edge.cli import main
from grmp_edge.errors import GrmpError
from grmp_edge.export.triton import MODEL_NAME, export_triton
from grmp_edge.runtime.bundle import load_bundle

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")


def parse(path):
    """The config as Triton reads it: protobuf text format of inference.ModelConfig (unknown fields fail)."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_onnx_and_plan_models_from_a_bundle(tmp_path):
    bundle = load_bundle(tiny_bundle.make_bundle(tmp_path / "bundle"))  # fp32..int8 ONNX and an fp16 plan
    repo = tmp_path / "repo"
    models = export_triton(bundle, repo, max_batch=16)
    assert [m.name for m in models] == [MODEL_NAME, f"{MODEL_NAME}_trt"]
    Config = model_config_pb2.ModelConfig
    DataType = model_config_pb2.DataType
    Kind = model_config_pb2.ModelInstanceGroup.Kind

    onnx = parse(repo / MODEL_NAME / "config.pbtxt")
    assert onnx.name == MODEL_NAME and onnx.platform == "onnxruntime_onnx" and onnx.max_batch_size == 16
    plan = parse(repo / f"{MODEL_NAME}_trt" / "config.pbtxt")
    assert plan.name == f"{MODEL_NAME}_trt" and plan.platform == "tensorrt_plan"
    assert plan.max_batch_size == tiny_bundle.ORIN_SIDECAR["batch"]["max"]  # the plan's profile, not --batch-max
    for config, kind in ((onnx, Kind.KIND_CPU), (plan, Kind.KIND_GPU)):
        assert isinstance(config, Config)
        (image,) = config.input
        assert image.name == "image" and image.data_type == DataType.TYPE_UINT8
        assert list(image.dims) == [tiny_bundle.SIZE, tiny_bundle.SIZE, 3]
        (score,) = config.output
        assert score.name == "score" and score.data_type == DataType.TYPE_FP32
        assert list(score.dims) == [1] and score.HasField("reshape") and list(score.reshape.shape) == []
        assert config.HasField("dynamic_batching") and config.dynamic_batching.max_queue_delay_microseconds > 0
        assert [(g.kind, g.count) for g in config.instance_group] == [(kind, 1)]
    # The files are the bundle's: fp32 ONNX for the CPU, the plan byte for byte.
    assert (repo / MODEL_NAME / "1" / "model.onnx").read_bytes() == (bundle.folder / "model_fp32.onnx").read_bytes()
    assert (repo / f"{MODEL_NAME}_trt" / "1" / "model.plan").read_bytes() == (bundle.folder / "model_fp16.plan").read_bytes()


def test_max_batch_size_defaults_to_four_frames_of_the_crop_plan(tmp_path):
    files = [f for f in tiny_bundle.STANDARD_FILES if f[2] == "onnx"]
    for crops, expected in ((1, 8), (15, 60)):
        bundle = load_bundle(tiny_bundle.make_bundle(tmp_path / f"bundle{crops}", files=files, crops=crops))
        (model,) = export_triton(bundle, tmp_path / f"repo{crops}")
        assert parse(model / "config.pbtxt").max_batch_size == expected


def test_gpu_device_serves_fp16_on_gpu_instances_and_no_plan_means_one_model(tmp_path):
    files = [f for f in tiny_bundle.STANDARD_FILES if f[2] == "onnx"]
    bundle = load_bundle(tiny_bundle.make_bundle(tmp_path / "bundle", files=files))
    models = export_triton(bundle, tmp_path / "repo", device="gpu")
    assert [m.name for m in models] == [MODEL_NAME]
    config = parse(models[0] / "config.pbtxt")
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.Kind.KIND_GPU
    assert (models[0] / "1" / "model.onnx").read_bytes() == (bundle.folder / "model_fp16.onnx").read_bytes()
    with pytest.raises(GrmpError, match="--device"):
        export_triton(bundle, tmp_path / "other", device="tpu")


def test_cli_writes_the_repository_under_runs_and_prints_how_to_serve_it(tmp_path, tmp_runs, capsys):
    bundle = tiny_bundle.make_bundle(tmp_path / "bundle")
    assert main(["export", "--format", "triton", "--bundle", str(bundle), "--name", "site"]) == 0
    out = capsys.readouterr().out
    repo = tmp_runs / "triton" / "site"
    for config in repo.glob("*/config.pbtxt"):
        parse(config)
    assert sorted(p.parent.name for p in repo.glob("*/config.pbtxt")) == [MODEL_NAME, f"{MODEL_NAME}_trt"]
    assert "nvcr.io/nvidia/tritonserver" in out and f"--backend triton://127.0.0.1:8001/{MODEL_NAME}" in out
    assert main(["export", "--format", "triton", "--bundle", str(bundle), "--precision", "fp64"]) == 2
