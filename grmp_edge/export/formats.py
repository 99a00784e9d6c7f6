"""What ``grmp-edge export`` can write, and which arguments apply to each way of running it.

One table, :data:`EXPORT_FORMATS`, says what each output is, for which backends, and which
arguments shape it; :data:`EXPORT_MODES` says what each ``--format`` reads and which outputs it
writes. Both the ``--help`` table (:func:`formats_table`) and the argument check
(:func:`check_arguments`) are read from them, so an argument that the help does not list for a
format is refused rather than silently ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from grmp_edge.errors import GrmpError
from grmp_edge.spec import PRECISIONS


@dataclass(frozen=True)
class ExportFormat:
    """One output: its title, the ``--format`` that writes it, its precision (``any`` for plans and
    repositories of every precision), its name in the bundle, the backends that serve it, and the
    arguments that shape it beyond those of its mode."""

    title: str
    format: str
    precision: str
    file: str
    targets: tuple[str, ...]
    arguments: tuple[str, ...]


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "fp32": ExportFormat("ONNX FP32", "onnx", "fp32", "model_fp32.onnx", ("onnxruntime", "tensorrt"), ()),
    "fp16": ExportFormat("ONNX FP16", "onnx", "fp16", "model_fp16.onnx", ("onnxruntime-gpu", "tensorrt"),
                         ("allow_drift",)),
    "int8_qdq": ExportFormat("ONNX INT8 QDQ", "onnx", "int8", "model_int8_qdq.onnx", ("tensorrt", "onnxruntime-gpu"),
                             ("calib", "calib_method", "num_calib", "allow_drift")),
    "int8_cpu": ExportFormat("ONNX INT8 CPU", "onnx", "int8", "model_int8_cpu.onnx", ("onnxruntime-cpu",),
                             ("calib", "num_calib", "allow_drift")),
    "plan": ExportFormat("TensorRT plan", "engine", "any", "model_<precision>.plan", ("tensorrt",),
                         ("batch_opt", "batch_max", "workspace_gib", "allow_drift")),
    "rtx_plan": ExportFormat("TensorRT-RTX plan", "engine", "any", "model_<precision>_rtx.plan", ("tensorrt-rtx",),
                             ("trt", "sm", "batch_opt", "batch_max", "workspace_gib", "allow_drift")),
    "triton": ExportFormat("Triton model repository", "triton", "any", "runs/triton/<name>/grmp_iqa[_trt]/",
                           ("triton",), ("bundle", "device", "batch_max")),
}
# The arguments of every output compiled from a checkpoint.
COMMON_ARGUMENTS = ("checkpoint", "name", "force", "opset", "simplify", "embedding", "num_eval", "seed")


@dataclass(frozen=True)
class ExportMode:
    """One way of running ``grmp-edge export``: what it reads, the ``format`` of the outputs it
    writes, and its own arguments beside theirs."""

    reads: str
    writes: tuple[str, ...]
    arguments: tuple[str, ...]


EXPORT_MODES: dict[str, ExportMode] = {
    "onnx": ExportMode("a checkpoint", ("onnx",), ("precision", *COMMON_ARGUMENTS)),
    # Plans are compiled from the ONNX graphs the same run writes.
    "engine": ExportMode("a checkpoint", ("onnx", "engine"), ("precision", *COMMON_ARGUMENTS)),
    "engine --onnx": ExportMode("an ONNX graph of a bundle", ("engine",), ("precision", "onnx")),
    "triton": ExportMode("a bundle", ("triton",), ("precision", "name")),
}
FORMAT_CHOICES = ("onnx", "engine", "triton")
# --precision of a checkpoint export: one of the bundle's precisions, or all of them.
PRECISION_CHOICES = (*PRECISIONS, "all")
# --precision -> the ONNX variants it builds (FP32 is always built: it is the reference).
VARIANTS = {"fp32": ("fp32",), "fp16": ("fp32", "fp16"), "int8": ("fp32", "int8_qdq", "int8_cpu"),
            "all": ("fp32", "fp16", "int8_qdq", "int8_cpu")}
# Plans are built from the graph of their precision that targets TensorRT.
PLAN_SOURCES = {"fp32": "fp32", "fp16": "fp16", "int8": "int8_qdq"}


def _option(argument: str) -> str:
    return "--" + argument.replace("_", "-")


def valid_arguments(mode: str) -> tuple[str, ...]:
    """The arguments that apply to ``mode`` (a key of :data:`EXPORT_MODES`), its own first."""
    spec = EXPORT_MODES[mode]
    found = list(spec.arguments)
    for output in EXPORT_FORMATS.values():
        if output.format in spec.writes:
            found += [a for a in output.arguments if a not in found]
    return tuple(found)


def check_arguments(mode: str, given: Iterable[str]) -> None:
    """One-line GrmpError when an argument in ``given`` does not apply to ``mode``, naming the
    arguments that do."""
    valid = valid_arguments(mode)
    stray = [a for a in given if a not in valid]
    if stray:
        options = ", ".join(_option(a) for a in stray)
        raise GrmpError(f"{options} {'does' if len(stray) == 1 else 'do'} not apply to --format {mode} "
                        f"(it reads {EXPORT_MODES[mode].reads}); it takes {', '.join(_option(a) for a in valid)}")


def plan_name(precision: str, flavour_name: str = "tensorrt") -> str:
    """The bundle file name of the plan of ``precision`` for a TensorRT flavour."""
    key = "rtx_plan" if flavour_name == "tensorrt-rtx" else "plan"
    return EXPORT_FORMATS[key].file.replace("<precision>", precision)


def formats_table() -> str:
    """:data:`EXPORT_FORMATS` as a plain-text table (for --help and the README)."""
    rows = [("File", "--format", "--precision", "Targets", "Arguments")]
    for key, spec in EXPORT_FORMATS.items():
        precision = spec.precision + ("*" if key == "fp32" else "")
        rows.append((spec.file, spec.format, precision, ", ".join(spec.targets),
                     ", ".join(_option(a)[2:] for a in spec.arguments) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("* FP32 is always built: it is the reference of every gate. Plans are built from the")
    lines.append("  FP32, FP16 or INT8 QDQ graph of their precision.")
    lines.append("Each --format also takes the arguments of what it reads (any other is an error):")
    modes: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for mode, spec in EXPORT_MODES.items():
        modes.setdefault((spec.reads, spec.arguments), []).append(mode)
    for (reads, arguments), names in modes.items():
        lines.append(f"  {' / '.join(names)} ({reads}): " + ", ".join(_option(a)[2:] for a in arguments))
    return "\n".join(lines)
