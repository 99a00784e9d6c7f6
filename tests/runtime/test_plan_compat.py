"""Plan sidecar vs device: the pure compatibility check and its messages."""
from __future__ import annotations

import pytest

from grmp_edge.errors import GrmpError
from grmp_edge.runtime.plan_compat import (
    check_plan_compatible,
    flavour,
    parse_sm_list,
    describe_build,
    parse_compute_capability,
    parse_version,
    plan_mismatches,
    rebuild_command,
    sm_name,
)

ORIN = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "jetpack": "6.1"}
L4 = {"tensorrt_version": "10.7.0", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}


@pytest.mark.parametrize("value", ["8.7", "sm_87", "SM87", "87", 87, 8.7, [8, 7], (8, 7), {"major": 8, "minor": 7},
                                   "compute_87"])
def test_compute_capability_forms(value):
    assert parse_compute_capability(value) == (8, 7)


def test_three_digit_compute_capability():
    assert parse_compute_capability("sm_100") == (10, 0)
    assert sm_name("12.0") == "sm_120"


def test_unreadable_compute_capability():
    with pytest.raises(GrmpError, match="compute capability"):
        parse_compute_capability("ampere")


@pytest.mark.parametrize("value, expected", [
    ("10.3.0", (10, 3, 0)), ("10.3.0.30", (10, 3, 0)), ("10.7", (10, 7, 0)), ("10.3.0+cuda12", (10, 3, 0)),
    ("10.3", (10, 3, 0)), ("1.7.1", (1, 7, 1)), ("1.7.1.116", (1, 7, 1)), ("11.0.0.14", (11, 0, 0)),
])
def test_versions(value, expected):
    assert parse_version(value) == expected


def test_same_build_is_compatible_whatever_the_gpu_name():
    here = dict(ORIN, gpu_name="NVIDIA Jetson AGX Orin 64GB", tensorrt_version="10.3.0.30", jetpack=None)
    assert plan_mismatches(ORIN, here) == []
    check_plan_compatible(ORIN, here)


def test_each_mismatch_is_named():
    assert plan_mismatches(ORIN, dict(ORIN, tensorrt_version="10.4.0")) == ["the TensorRT release differs"]
    assert plan_mismatches(ORIN, dict(ORIN, compute_capability="sm_89")) == ["the compute capability differs"]
    assert plan_mismatches(ORIN, L4) == ["the TensorRT release differs", "the compute capability differs"]


def test_missing_facts_are_mismatches():
    assert plan_mismatches({"gpu_name": "Orin"}, L4) == [
        "the plan's sidecar does not record tensorrt_version",
        "the plan's sidecar does not record compute_capability",
    ]
    assert plan_mismatches(ORIN, {"tensorrt_version": "10.3.0"}) == ["this device's compute_capability is unknown"]


def test_refusal_names_both_builds_and_the_rebuild_command():
    rebuild = rebuild_command("/data/bundle/model_fp16.onnx")
    with pytest.raises(GrmpError) as info:
        check_plan_compatible(ORIN, L4, plan_name="engine model_fp16.plan", rebuild=rebuild)
    assert str(info.value) == (
        "engine model_fp16.plan was built for Orin (sm_87) with TensorRT 10.3.0 (JetPack 6.1); "
        "this is NVIDIA L4 (sm_89) with TensorRT 10.7.0: the TensorRT release differs and the compute capability "
        "differs; rebuild it here: grmp-edge export --engine --onnx /data/bundle/model_fp16.onnx"
    )


def test_rebuild_command_quotes_paths_and_falls_back_to_the_checkpoint():
    assert rebuild_command("/my bundles/model_fp16.onnx") == "grmp-edge export --engine --onnx '/my bundles/model_fp16.onnx'"
    assert rebuild_command(None, "fp16") == "grmp-edge export --engine --precision fp16"


def test_describe_build_jetpack_forms():
    assert describe_build(dict(ORIN, jetpack="JetPack 6.1")).endswith("TensorRT 10.3.0 (JetPack 6.1)")
    assert describe_build(dict(ORIN, jetpack="L4T R36.3.0")).endswith("TensorRT 10.3.0 (L4T R36.3.0)")


def test_describe_build_with_partial_facts():
    assert describe_build({"tensorrt_version": "10.3.0"}) == "an unknown GPU with TensorRT 10.3.0"
    assert describe_build({"compute_capability": "8.7", "gpu_name": "Orin"}) == "Orin (sm_87) with an unknown TensorRT"


RTX_PLAN = {"flavour": "tensorrt-rtx", "tensorrt_version": "1.7.1.116", "compute_capabilities": ["8.6", "8.9", "12.0"],
            "gpu_name": None, "compute_capability": None}
RTX_4090 = {"flavour": "tensorrt-rtx", "tensorrt_version": "1.7.1.116", "gpu_name": "RTX 4090", "compute_capability": "8.9"}


def test_sm_lists():
    assert parse_sm_list("86,89,120") == ["8.6", "8.9", "12.0"]
    assert parse_sm_list("sm_86 8.6, 120") == ["8.6", "12.0"]
    for bad in ("", " , ", "ampere"):
        with pytest.raises(GrmpError, match="compute capabilit"):
            parse_sm_list(bad)


def test_flavour_names():
    assert flavour("rtx") is flavour("tensorrt-rtx") and flavour("rtx").aot
    assert flavour(None) is flavour("tensorrt") and not flavour(None).aot
    with pytest.raises(GrmpError, match="expected one of tensorrt, rtx"):
        flavour("jetson")


def test_an_aot_plan_runs_on_any_of_its_targets():
    assert plan_mismatches(RTX_PLAN, RTX_4090) == []
    assert plan_mismatches(RTX_PLAN, dict(RTX_4090, compute_capability="12.0", tensorrt_version="1.7.1.200")) == []
    assert plan_mismatches(RTX_PLAN, dict(RTX_4090, compute_capability="7.5")) == [
        "this compute capability is not among the plan's"]
    assert plan_mismatches(RTX_PLAN, dict(RTX_4090, tensorrt_version="1.8.0")) == ["the TensorRT release differs"]


def test_the_other_flavour_is_refused_whatever_else_matches():
    # A sidecar written before flavours existed is a TensorRT one.
    assert plan_mismatches(ORIN, dict(RTX_4090, compute_capability="8.7", tensorrt_version="10.3.0")) == [
        "the plan is for TensorRT, this runtime is TensorRT-RTX"]
    assert plan_mismatches(RTX_PLAN, dict(L4, compute_capability="8.9", tensorrt_version="1.7.1")) == [
        "the plan is for TensorRT-RTX, this runtime is TensorRT"]


def test_rtx_refusal_and_rebuild_command():
    rebuild = rebuild_command("b/model_fp16.onnx", "fp16", "tensorrt-rtx", "7.5")
    assert rebuild == "grmp-edge export --engine --trt rtx --sm 75 --onnx b/model_fp16.onnx"
    assert rebuild_command(None, "int8", "tensorrt-rtx", None) == "grmp-edge export --engine --trt rtx --precision int8"
    assert rebuild_command("b/x.onnx", "fp16", "tensorrt", "8.7") == "grmp-edge export --engine --onnx b/x.onnx"
    with pytest.raises(GrmpError) as info:
        check_plan_compatible(RTX_PLAN, dict(RTX_4090, compute_capability="7.5"), "engine model_fp16_rtx.plan", rebuild)
    assert str(info.value) == (
        "engine model_fp16_rtx.plan was built for sm_86, sm_89, sm_120 with TensorRT-RTX 1.7.1.116; this is RTX 4090 "
        "(sm_75) with TensorRT-RTX 1.7.1.116: this compute capability is not among the plan's; rebuild it here: "
        f"{rebuild}")
