"""INT8 variants: symmetric QDQ for TensorRT, and the fastest ONNX Runtime CPU form within the gate.

TensorRT wants explicit quantization: QuantizeLinear/DequantizeLinear pairs with zero point 0 on the
inputs of the GEMMs only, per-channel weights, everything else (LayerNorm, Softmax, GELU, the scoring
head) left in float so the builder picks their precision. ONNX Runtime's CPU kernels, on the other
hand, are fastest on other forms (dynamic int8 MatMulInteger, static U8S8 QLinear ops), so the CPU
file is chosen by timing the candidate forms and keeping the fastest that passes the accuracy gate.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from grmp_edge.artifacts import atomic_write
from grmp_edge.preprocess import check_image_batch
from grmp_edge.errors import GrmpError, require
from grmp_edge.export.fp16 import score_head_nodes
from grmp_edge.export.gates import GATE_DEFAULTS, GateFailed, GateResult, agreement_gate, onnx_session, run_onnx

GEMM_OPS = ("MatMul", "Gemm", "Conv")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")

# Histogram calibrators and their settings. quantize_static would run them with ORT's defaults, and
# its entropy default (128 bins searched in 128 quantized bins) has a single candidate threshold, the
# full range, i.e. min-max again. 1024 signed bins into 255 levels (int8's) searches clipping
# thresholds from 25% to 100% of the range; TensorRT's 2048 bins cost ORT's Python search 5x the time.
_HISTOGRAM_CALIBRATORS = {
    "entropy": ("Entropy", {"num_bins": 1024, "num_quantized_bins": 255, "symmetric": True}),
    "percentile": ("Percentile", {"num_bins": 2048, "percentile": 99.999, "symmetric": True}),
}

# TensorRT's explicit quantization: symmetric int8, float bias, no QDQ on GEMM outputs (the builder
# fuses the output scale into the next quantized layer itself).
_TENSORRT_QDQ_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "OpTypesToExcludeOutputQuantization": list(GEMM_OPS),
}


def _check_batches(batches: Iterable[np.ndarray], what: str) -> list[np.ndarray]:
    out = []
    for batch in batches:
        out.append(check_image_batch(np.asarray(batch), what=f"{what} data"))
    if not out:
        raise GrmpError(f"no {what} images")
    return out


def _calibration_reader(input_name: str, batches: list[np.ndarray]):
    """An onnxruntime CalibrationDataReader over uint8 NHWC batches (rewindable)."""
    quantization = require("onnxruntime.quantization", "export")

    class BatchReader(quantization.CalibrationDataReader):
        def __init__(self):
            self._next = iter(batches)

        def get_next(self):
            batch = next(self._next, None)
            return None if batch is None else {input_name: batch}

        def rewind(self):
            self._next = iter(batches)

    return BatchReader()


def _prepare(fp32_path: Path, work: Path) -> tuple[Path, str, list[str]]:
    """Shape-infer the graph for the quantiser (ORT's pre-processing, without its graph rewrites).

    Returns (prepared path, input name, scoring-head node names to leave unquantised).
    """
    onnx = require("onnx", "export")
    shape_inference = require("onnxruntime.quantization.shape_inference", "export")
    if not fp32_path.is_file():
        raise GrmpError(f"ONNX model not found: {fp32_path}")
    model = onnx.load(str(fp32_path))
    prepared = work / "prepared.onnx"
    # No optimisation: the TensorRT graph must keep standard ops only, and ORT optimises at load anyway.
    shape_inference.quant_pre_process(str(fp32_path), str(prepared), skip_optimization=True)
    return prepared, model.graph.input[0].name, score_head_nodes(model)


def _histogram_ranges(prepared: Path, work: Path, reader, method: str) -> dict:
    """Activation ranges from a histogram calibrator, as quantize_static ``TensorQuantOverrides``."""
    calibrate = require("onnxruntime.quantization.calibrate", "export")
    ort_method, options = _HISTOGRAM_CALIBRATORS[method]
    calibrator = calibrate.create_calibrator(
        str(prepared), list(GEMM_OPS), augmented_model_path=str(work / f"augmented_{method}.onnx"),
        calibrate_method=getattr(calibrate.CalibrationMethod, ort_method), extra_options=options,
    )
    # The histogram calibrators print their progress; the export shows its own.
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
    overrides = {}
    for name in ranges:
        low, high = ranges[name].range_value
        overrides[name] = [{"rmin": np.float32(low), "rmax": np.float32(high)}]
    return overrides


def tensorrt_qdq_problems(model) -> list[str]:
    """What in a QDQ graph TensorRT's explicit quantization would reject or we do not want.

    Checks: zero points all 0 and int8; every DequantizeLinear feeds only MatMul/Gemm/Conv; no
    ``com.microsoft`` contrib ops. Returns one line per problem (empty list = fine).
    """
    numpy_helper = require("onnx.numpy_helper", "export")
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    problems = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{node.name}: {node.domain}.{node.op_type} is not a standard ONNX op")
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or node.input[2] not in initializers:
            problems.append(f"{node.name}: no constant zero point")
        else:
            zero_point = numpy_helper.to_array(initializers[node.input[2]])
            if zero_point.dtype != np.int8 or np.any(zero_point != 0):
                problems.append(
                    f"{node.name}: zero point must be int8 0, got {zero_point.dtype} {zero_point.ravel()[:4]}"
                )
        if node.op_type == "DequantizeLinear":
            wrong = [c for c in consumers.get(node.output[0], []) if c.op_type not in GEMM_OPS]
            problems.extend(f"{node.name}: dequantized tensor feeds {c.op_type} {c.name}" for c in wrong)
    return problems


def quantize_int8_qdq(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calib_batches: Iterable[np.ndarray],
    method: str = "minmax",
) -> Path:
    """Symmetric per-channel INT8 QDQ graph for TensorRT, calibrated on uint8 NHWC ``calib_batches``.

    Quantizes the inputs of MatMul/Gemm/Conv only (zero point 0, int8 activations and weights,
    per-channel weights), leaves the scoring head and every other op in float, and checks the
    result with :func:`tensorrt_qdq_problems`. ``method``: "minmax", "entropy" or "percentile".
    Returns ``out_path``.
    """
    quantization = require("onnxruntime.quantization", "export")
    onnx = require("onnx", "export")
    if method not in CALIBRATION_METHODS:
        raise GrmpError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, not {method!r}")
    batches = _check_batches(calib_batches, "calibration")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".int8-") as work:
        prepared, input_name, head = _prepare(Path(fp32_path), Path(work))
        reader = _calibration_reader(input_name, batches)
        options = dict(_TENSORRT_QDQ_OPTIONS)
        if method in _HISTOGRAM_CALIBRATORS:
            # quantize_static still runs its min-max pass; the overrides replace its ranges.
            options["TensorQuantOverrides"] = _histogram_ranges(prepared, Path(work), reader, method)
            reader.rewind()
        quantized = Path(work) / "qdq.onnx"
        quantization.quantize_static(
            str(prepared),
            str(quantized),
            reader,
            quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=list(GEMM_OPS),
            per_channel=True,
            activation_type=quantization.QuantType.QInt8,
            weight_type=quantization.QuantType.QInt8,
            nodes_to_exclude=head,
            calibrate_method=quantization.CalibrationMethod.MinMax,
            extra_options=options,
        )
        problems = tensorrt_qdq_problems(onnx.load(str(quantized)))
        if problems:
            raise GrmpError("INT8 QDQ graph is not fit for TensorRT: " + "; ".join(problems[:10]))
        return atomic_write(out_path, lambda tmp: shutil.copyfile(quantized, tmp))


def _dynamic_candidate(prepared: Path, out: Path, head: list[str], input_name: str, calib) -> None:
    quantization = require("onnxruntime.quantization", "export")
    # Conv has no dynamic int8 kernel worth using; MatMulConstBOnly keeps attention's two
    # activation products in float. Per-tensor weights: per-channel ones made MatMulInteger
    # 1.7x slower on a ViT-S/16 here at the same agreement.
    quantization.quantize_dynamic(
        str(prepared), str(out), op_types_to_quantize=["MatMul", "Gemm"], per_channel=False,
        weight_type=quantization.QuantType.QInt8, nodes_to_exclude=head,
        extra_options={"MatMulConstBOnly": True},
    )


def _static_u8s8_candidate(prepared: Path, out: Path, head: list[str], input_name: str, calib) -> None:
    quantization = require("onnxruntime.quantization", "export")
    # Attention's activation products are quantized too (QLinearMatMul): 15% faster than leaving
    # them float on a ViT-S/16 here, at the same agreement.
    quantization.quantize_static(
        str(prepared), str(out), _calibration_reader(input_name, calib),
        quant_format=quantization.QuantFormat.QOperator, op_types_to_quantize=list(GEMM_OPS),
        per_channel=True, activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8, nodes_to_exclude=head,
    )


# (name, ORT quantisation form, builder(prepared, out, head, input_name, calib_batches)), tried in
# this order; a tie in latency keeps the earlier one.
CPU_CANDIDATES = (
    ("dynamic_int8", "dynamic MatMulInteger (u8 activations, s8 weights)", _dynamic_candidate),
    ("static_u8s8_qoperator", "static QLinear ops (u8 activations, s8 per-channel weights)", _static_u8s8_candidate),
)


def time_batch1(path: str | os.PathLike, image: np.ndarray, runs: int = 10, threads: int | None = None) -> float:
    """Median latency in ms of one ``(1, H, W, 3)`` image on ONNX Runtime CPU (after 2 warm-up runs)."""
    session = onnx_session(path, threads=threads)
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(image[None] if image.ndim == 3 else image[:1])}
    for _ in range(2):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


@dataclass
class CpuCandidate:
    """One INT8 form tried for ONNX Runtime CPU: its latency at batch 1 and its gate against FP32."""

    name: str
    form: str
    latency_ms: float
    speedup: float
    gate: GateResult

    def to_dict(self) -> dict[str, Any]:
        """As the bundle manifest lists it."""
        return {"name": self.name, "form": self.form, "latency_ms": self.latency_ms, "speedup": self.speedup,
                "gate": self.gate.to_dict()}


@dataclass
class Int8CpuReport:
    """Which INT8 CPU form was kept and why: every candidate, and the FP32 latency they are timed against."""

    chosen: CpuCandidate
    fp32_ms: float
    timing_runs: int
    candidates: list[CpuCandidate]

    def to_dict(self) -> dict[str, Any]:
        """The ``info`` of ``model_int8_cpu.onnx`` in the bundle manifest."""
        return {"chosen": self.chosen.name, "form": self.chosen.form, "gate": self.chosen.gate.to_dict(),
                "fp32_ms": self.fp32_ms, "timing_runs": self.timing_runs,
                "candidates": [c.to_dict() for c in self.candidates]}


def _srcc_text(gate: GateResult) -> str:
    return "undefined" if gate.srcc is None else f"{gate.srcc:.4f}"


def _pick(candidates: list[CpuCandidate], allow_drift: bool) -> CpuCandidate:
    """The fastest candidate that passes its gate; the most agreeing one under ``allow_drift``."""
    passing = [c for c in candidates if c.gate.passed]
    if passing:
        return min(passing, key=lambda c: c.latency_ms)
    if allow_drift:
        return max(candidates, key=lambda c: c.gate.srcc if c.gate.srcc is not None else -2.0)
    raise GateFailed(
        "no INT8 CPU form passes the gate: " + "; ".join(
            f"{c.name}: SRCC {_srcc_text(c.gate)} ({c.gate.status})" for c in candidates)
        + "; rerun with --allow-drift to keep the closest one"
    )


def quantize_int8_cpu(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calib_batches: Iterable[np.ndarray],
    eval_batches: Iterable[np.ndarray],
    gate: float = GATE_DEFAULTS["int8"],
    labels: Sequence[float] | None = None,
    allow_drift: bool = False,
    timing_runs: int = 10,
    threads: int | None = None,
) -> tuple[Path, Int8CpuReport]:
    """Write the INT8 form that is fastest on ONNX Runtime CPU and agrees with FP32 at ``gate`` SRCC.

    Every candidate in :data:`CPU_CANDIDATES` is built, timed at batch 1 (median of ``timing_runs``)
    and gated against the FP32 graph on ``eval_batches``. The fastest passing one is copied to
    ``out_path``. If none passes, GateFailed is raised, unless ``allow_drift``, which keeps the most
    agreeing one. Returns (out_path, report).
    """
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    calib = _check_batches(calib_batches, "calibration")
    evals = _check_batches(eval_batches, "eval")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".int8cpu-") as work:
        prepared, input_name, head = _prepare(fp32_path, Path(work))
        probe = evals[0][0]
        ref = run_onnx(fp32_path, evals, threads=threads)
        fp32_ms = time_batch1(fp32_path, probe, timing_runs, threads)
        candidates, paths = [], {}
        for name, form, build in CPU_CANDIDATES:
            paths[name] = Path(work) / f"{name}.onnx"
            build(prepared, paths[name], head, input_name, calib)
            latency = time_batch1(paths[name], probe, timing_runs, threads)
            result = agreement_gate(f"int8 cpu {name}", ref, run_onnx(paths[name], evals, threads=threads), labels, gate)
            candidates.append(CpuCandidate(name, form, latency, fp32_ms / latency, result))
        chosen = _pick(candidates, allow_drift)
        atomic_write(out_path, lambda tmp: shutil.copyfile(paths[chosen.name], tmp))
    return out_path, Int8CpuReport(chosen, fp32_ms, timing_runs, candidates)
