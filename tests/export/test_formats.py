"""The export format table drives the argument check as well as the help: an option that does not
apply to the chosen --format is a one-line error naming the format and the options it takes."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from grmp_edge.cli import main
from grmp_edge.cli.export import export
from grmp_edge.errors import GrmpError
from grmp_edge.export.formats import (
    COMMON_ARGUMENTS,
    EXPORT_FORMATS,
    EXPORT_MODES,
    check_arguments,
    formats_table,
    plan_name,
    valid_arguments,
)
from grmp_edge.export.options import ExportOptions


def _error(capsys, *argv) -> str:
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_every_argument_in_the_table_is_an_option_of_the_command():
    options = set(inspect.signature(export).parameters) - {"ctx"}
    named = {a for mode in EXPORT_MODES for a in valid_arguments(mode)}
    assert named <= options, named - options
    # ...and every option but the format selectors applies to some mode, so none is silently ignored.
    assert options - named == {"fmt", "engine"}
    fields = set(inspect.signature(ExportOptions).parameters)
    assert set(valid_arguments("engine")) - {"checkpoint"} <= fields


def test_modes_take_their_outputs_arguments():
    assert set(COMMON_ARGUMENTS) <= set(valid_arguments("onnx")) <= set(valid_arguments("engine"))
    assert {"calib", "calib_method", "num_calib"} <= set(valid_arguments("onnx"))
    assert {"batch_opt", "batch_max", "workspace_gib", "trt", "sm"} <= set(valid_arguments("engine"))
    assert not {"batch_max", "trt", "sm", "bundle", "device"} & set(valid_arguments("onnx"))
    assert set(valid_arguments("triton")) == {"precision", "name", "bundle", "device", "batch_max"}
    assert "calib" not in valid_arguments("engine --onnx") and "onnx" in valid_arguments("engine --onnx")


def test_check_names_the_format_and_what_it_takes():
    check_arguments("engine", ["batch_max", "calib"])  # no raise
    with pytest.raises(GrmpError, match=r"^--batch-max does not apply to --format onnx \(it reads a checkpoint\); "
                                        r"it takes --precision, --checkpoint, .*--calib-method"):
        check_arguments("onnx", ["batch_max"])
    with pytest.raises(GrmpError, match=r"^--calib, --seed do not apply to --format triton"):
        check_arguments("triton", ["calib", "seed", "device"])


def test_help_table_lists_each_outputs_arguments():
    table = formats_table()
    for spec in EXPORT_FORMATS.values():
        row = next(line for line in table.splitlines() if line.startswith(spec.file))
        for argument in spec.arguments:
            assert argument.replace("_", "-") in row
    assert plan_name("int8") == "model_int8.plan" and plan_name("fp16", "tensorrt-rtx") == "model_fp16_rtx.plan"


@pytest.mark.parametrize("argv, message", [
    (["--batch-max", "16"], "--batch-max does not apply to --format onnx"),
    (["--sm", "86", "--format", "onnx"], "add --engine"),
    (["--format", "triton", "--calib", "photos"], "--calib does not apply to --format triton"),
    (["--device", "gpu"], "--device does not apply to --format onnx"),
    (["--engine", "--onnx", "model_fp16.onnx", "--num-calib", "32"],
     "--num-calib does not apply to --format engine --onnx"),
])
def test_options_of_another_format_are_one_line_errors(tmp_runs, capsys, argv, message):
    assert message in _error(capsys, *argv)


def test_the_python_api_checks_its_arguments_too(tmp_runs, tmp_path):
    from grmp_edge.export.build import build_bundle
    from grmp_edge.export.plans import build_plans_from_onnx

    with pytest.raises(GrmpError, match="--batch-max does not apply to --format onnx"):
        build_bundle(tmp_path, batch_max=16)
    with pytest.raises(GrmpError, match="unknown export option batchmax"):
        build_bundle(tmp_path, batchmax=16)
    with pytest.raises(GrmpError, match="made from an exported bundle"):
        build_bundle(tmp_path, fmt="triton")
    with pytest.raises(GrmpError, match="--calib-method does not apply to --format engine --onnx"):
        build_plans_from_onnx(tmp_path / "model_fp16.onnx", calib_method="entropy")
    options = ExportOptions().with_overrides({"precision": "int8", "allow_drift": True})
    assert options.changed() == ["precision", "allow_drift"]


def test_the_readme_shows_the_table_the_command_checks():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert formats_table().rstrip("\n") in readme


def test_the_plan_profile_follows_the_crop_plan_unless_given():
    assert ExportOptions().batch_profile(1) == (1, 1, 8)  # a 1-crop model: at least 8
    assert ExportOptions().batch_profile(15) == (1, 15, 60)  # one frame at opt, four at max
    assert ExportOptions(batch_max=4).batch_profile(15) == (1, 4, 4)  # opt never passes a given max
    assert ExportOptions(batch_opt=2, batch_max=4).batch_profile(15) == (1, 2, 4)
    with pytest.raises(GrmpError, match="--batch-opt <= --batch-max"):
        ExportOptions(batch_opt=20).batch_profile(1)
    with pytest.raises(GrmpError, match="--batch-opt must be"):
        ExportOptions(batch_opt=0).check("engine")
