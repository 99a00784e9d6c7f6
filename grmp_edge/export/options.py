"""The settings of one export, with their defaults, in one place: :class:`ExportOptions`.

``grmp-edge export`` builds one from its options, and the Python API
(:func:`grmp_edge.export.build.build_bundle`) takes one or keyword overrides of its fields. Values
no export can use are one-line GrmpErrors before any work starts; which fields apply to which
``--format`` is :mod:`grmp_edge.export.formats`' table.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from grmp_edge.errors import GrmpError
from grmp_edge.export.formats import FORMAT_CHOICES, PRECISION_CHOICES, check_arguments

MIN_NUM_CALIB = 16
MIN_NUM_EVAL = 64  # the parity gate's floor
# Calibration and eval crops are held in memory together; more than this adds nothing to a gate.
MAX_GATE_IMAGES = 100_000
MAX_PROFILE_BATCH = 4096
# The smallest default maximum batch of a plan or Triton model, and how many frames of the model's crop
# plan a default profile holds in one call (a multi-camera batch window fills it).
MIN_DEFAULT_BATCH_MAX = 8
FRAMES_PER_CALL = 4
MAX_WORKSPACE_GIB = 1024


@dataclass(frozen=True)
class ExportOptions:
    """Everything an export of a checkpoint (or a plan of an exported graph) can be told.

    ``precision``: fp32, fp16, int8 or all (FP32 is always built as the reference). ``fmt``: onnx, or
    engine to also build TensorRT plans. ``calib``: calibration/eval images (a folder or a manifest
    .csv; default: the training run's manifest, else the bundled photos). ``calib_method``: minmax,
    entropy or percentile (INT8 QDQ). ``num_calib`` / ``num_eval``: crops for calibration and for the
    parity and accuracy gates. ``opset``: 13..20. ``embedding``: also output the image embedding.
    ``simplify``: run onnxslim. ``allow_drift``: keep files that fail their accuracy or plan gate.
    ``batch_opt`` / ``batch_max`` / ``workspace_gib``: the TensorRT profile and builder workspace;
    unset, the profile follows the model's crop plan (:meth:`batch_profile`).
    ``name``: the bundle folder under runs/export (default exp, exp2, ...); ``force`` replaces it once
    the new one is complete. ``seed``: of the image sample. ``trt``: tensorrt or rtx, the flavour of
    the plans; ``sm``: the GPUs of a TensorRT-RTX plan (``"86,89,120"``).
    """

    precision: str = "fp16"
    fmt: str = "onnx"
    calib: Path | None = None
    calib_method: str = "minmax"
    num_calib: int = 64
    num_eval: int = 64
    opset: int = 17
    embedding: bool = False
    simplify: bool = True
    allow_drift: bool = False
    batch_opt: int | None = None
    batch_max: int | None = None
    workspace_gib: float = 1.0
    name: str | None = None
    seed: int = 0
    force: bool = False
    trt: str = "tensorrt"
    sm: str | None = None

    def with_overrides(self, overrides: Mapping[str, Any]) -> "ExportOptions":
        """A copy with ``overrides`` (field names) applied; GrmpError naming the fields otherwise."""
        names = [f.name for f in fields(self)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise GrmpError(f"unknown export option {', '.join(unknown)}; the options are {', '.join(names)}")
        return replace(self, **overrides)

    def changed(self) -> list[str]:
        """The fields set to something other than their default (what the caller asked for)."""
        return [f.name for f in fields(self) if getattr(self, f.name) != f.default]

    def check(self, mode: str) -> None:
        """One-line GrmpErrors for values no export can use, or fields that do not apply to ``mode``
        (``onnx``, ``engine`` or ``engine --onnx``; see :data:`grmp_edge.export.formats.EXPORT_MODES`)."""
        if self.precision not in PRECISION_CHOICES:
            raise GrmpError(f"--precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
        if self.fmt not in FORMAT_CHOICES:
            raise GrmpError(f"--format must be one of {', '.join(FORMAT_CHOICES)}, got {self.fmt!r}")
        self._check_gate_sizes()
        self._check_plan_settings()
        check_arguments(mode, [name for name in self.changed() if name != "fmt"])

    def _check_gate_sizes(self) -> None:
        from grmp_edge.export.int8 import CALIBRATION_METHODS
        from grmp_edge.export.onnx_export import check_opset
        from grmp_edge.limits import check_range

        if self.calib_method not in CALIBRATION_METHODS:
            raise GrmpError(f"--calib-method must be one of {', '.join(CALIBRATION_METHODS)}, got {self.calib_method!r}")
        if self.num_calib < MIN_NUM_CALIB:
            raise GrmpError(f"--num-calib must be >= {MIN_NUM_CALIB}, got {self.num_calib}")
        if self.num_eval < MIN_NUM_EVAL:
            raise GrmpError(f"--num-eval must be >= {MIN_NUM_EVAL} (the parity gate's floor), got {self.num_eval}")
        check_range("--num-calib", self.num_calib, high=MAX_GATE_IMAGES)
        check_range("--num-eval", self.num_eval, high=MAX_GATE_IMAGES)
        check_opset(self.opset)

    def _check_plan_settings(self) -> None:
        from grmp_edge.limits import check_range

        check_range("--batch-opt", self.batch_opt, low=1, high=MAX_PROFILE_BATCH)
        check_range("--batch-max", self.batch_max, low=1, high=MAX_PROFILE_BATCH)
        if None not in (self.batch_opt, self.batch_max):
            self.batch_profile(crops=1)  # both given: the crop plan plays no part, so check them now
        check_range("--workspace-gib", self.workspace_gib, high=MAX_WORKSPACE_GIB)
        if self.workspace_gib <= 0:
            raise GrmpError(f"--workspace-gib must be > 0, got {self.workspace_gib}")
        self.plan_target()

    def batch_profile(self, crops: int) -> tuple[int, int, int]:
        """(min, opt, max) batch of a TensorRT profile for a model whose crop plan scores ``crops``
        crops per frame: ``--batch-opt`` defaults to one frame's crops (what ``run`` sends a camera's
        frame as), ``--batch-max`` to :func:`default_batch_max`."""
        high = self.batch_max if self.batch_max is not None else default_batch_max(crops)
        opt = self.batch_opt if self.batch_opt is not None else min(crops, high)
        if opt > high:
            raise GrmpError(f"need 1 <= --batch-opt <= --batch-max, got {opt} and {high}")
        return 1, opt, high

    def plan_target(self):
        """(TensorRT flavour, compute capabilities or None) of ``trt`` and ``sm``; one-line GrmpErrors."""
        from grmp_edge.runtime.plan_compat import flavour, parse_sm_list

        plan_flavour = flavour(self.trt)
        if self.sm is not None and not plan_flavour.aot:
            raise GrmpError(f"--sm picks the GPUs of a TensorRT-RTX plan (--trt rtx); {plan_flavour.label} "
                            "builds for the GPU it runs on")
        return plan_flavour, (parse_sm_list(self.sm) if self.sm is not None else None)


def default_batch_max(crops: int) -> int:
    """The maximum batch a plan or Triton model gets unless ``--batch-max`` says: room for
    ``FRAMES_PER_CALL`` frames of the model's ``crops``-crop plan, and at least ``MIN_DEFAULT_BATCH_MAX``."""
    return min(MAX_PROFILE_BATCH, max(MIN_DEFAULT_BATCH_MAX, FRAMES_PER_CALL * crops))
