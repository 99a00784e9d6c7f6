"""Export a folded quality model to ONNX, check the graph's contract, and gate it against PyTorch.

Exporter choice: torch 2.14's default ``torch.onnx.export`` is the torch.export-based (dynamo)
exporter, which needs ``onnxscript`` (not a dependency of this project) and targets opset 18 first.
The TorchScript exporter (``dynamo=False``) still ships, exports this model at any opset from 13 to
20, writes ``nn.LayerNorm`` as one ``LayerNormalization`` node from opset 17 on and uses no custom
domain, so it is used here with the opset pinned. Attention stays plain MatMul / Softmax / MatMul because the folded model runs the
tower with ``plain_attention=True``.
"""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grmp_edge.artifacts import atomic_write
from grmp_edge.preprocess import check_image_batch
from grmp_edge.errors import GrmpError, require
from grmp_edge.spec import INPUT_NAME
from grmp_edge.export.gates import run_onnx

DEFAULT_OPSET = 17
MIN_OPSET = 13  # the TorchScript exporter's floor for this graph (Softmax/Unsqueeze semantics)
MAX_OPSET = 20  # ONNX Runtime's static quantiser and TensorRT 10's parser both stop at 20
LAYERNORM_OPSET = 17  # first opset with LayerNormalization; below it LayerNorm is decomposed

PARITY_TOLERANCE = 1e-4
MIN_PARITY_IMAGES = 64

EMBEDDING_NAME = "embedding"
METADATA_MODEL_SPEC = "grmp_edge.model_spec"
METADATA_PREPROCESS = "grmp_edge.preprocess"
METADATA_OUTPUTS = "grmp_edge.outputs"

# Fused attention ops that TensorRT's parser or ONNX Runtime's quantiser would not treat as plain ops.
FUSED_ATTENTION_OPS = {"Attention", "MultiHeadAttention", "ScaledDotProductAttention", "GroupQueryAttention"}


def check_opset(opset: int) -> int:
    """Return ``opset`` if the export supports it, else raise a one-line GrmpError."""
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise GrmpError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET} "
                        f"(ONNX Runtime quantisation and TensorRT 10 stop at {MAX_OPSET}), got {opset}")
    return int(opset)


def check_onnx_model(model, failure: str) -> None:
    """Run ``onnx.checker`` with ``full_check`` (shape inference included); a failure is one GrmpError
    line, ``failure: <first line of the checker's message>``."""
    onnx = require("onnx", "export")
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise GrmpError(f"{failure}: {str(exc).splitlines()[0]}") from None


def _torch_to_onnx(folded, opset: int):
    """Trace ``folded`` with the TorchScript exporter and return the ModelProto."""
    torch = require("torch", "train")
    onnx = require("onnx", "export")
    outputs = folded.output_names
    # Batch 2 in the example input so that nothing specialises on a batch of one.
    example = torch.zeros(2, folded.image_size, folded.image_size, 3, dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The exporter warns that it is the legacy path, and the tracer that shapes become constants
        # (the spatial ones are meant to); neither is actionable here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            folded.eval(), (example,), buffer, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *outputs]},
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


def simplify_graph(model):
    """Simplify with onnxslim (constant folding, dead-node and redundant-Shape removal)."""
    onnxslim = require("onnxslim", "export")
    try:
        return onnxslim.slim(model)
    except Exception as exc:  # onnxslim raises plain exceptions from its passes
        raise GrmpError(f"onnxslim failed ({exc}); export again with --no-simplify") from None


def graph_contract_problems(model, folded) -> list[str]:
    """What in ``model`` breaks the bundle's graph contract for ``folded``'s export (empty if none).

    The contract: one ``image`` uint8 input (batch, S, S, 3) with only the batch axis dynamic; the
    folded model's outputs, batch-dynamic; only the default ONNX domain; no fused attention op; as many
    ``LayerNormalization`` nodes as the tower has LayerNorms (opset >= 17) and one ``Softmax`` per block.
    """
    onnx = require("onnx", "export")
    problems = []
    opsets = {o.domain: o.version for o in model.opset_import}
    if set(opsets) - {"", "ai.onnx"}:
        problems.append(f"custom opset domains {sorted(set(opsets) - {'', 'ai.onnx'})}")
    opset = opsets.get("", opsets.get("ai.onnx", 0))
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        problems.append(f"custom-domain ops {custom}")
    fused = sorted({n.op_type for n in model.graph.node if n.op_type in FUSED_ATTENTION_OPS})
    if fused:
        problems.append(f"fused attention ops {fused}")

    def dims(value_info) -> list:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in value_info.type.tensor_type.shape.dim]

    inputs = list(model.graph.input)
    size = folded.image_size
    if [i.name for i in inputs] != [INPUT_NAME]:
        problems.append(f"inputs are {[i.name for i in inputs]}, expected ['{INPUT_NAME}']")
    else:
        image = inputs[0]
        if image.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            problems.append("input 'image' is not uint8")
        shape = dims(image)
        if len(shape) != 4 or isinstance(shape[0], int) or shape[1:] != [size, size, 3]:
            problems.append(f"input 'image' has shape {shape}, expected [batch, {size}, {size}, 3]")
    outputs = {o.name: o for o in model.graph.output}
    if list(outputs) != folded.output_names:
        problems.append(f"outputs are {list(outputs)}, expected {folded.output_names}")
    for name, value_info in outputs.items():
        shape = dims(value_info)
        if value_info.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"output {name!r} is not float32")
        if not shape or isinstance(shape[0], int) or any(not isinstance(d, int) for d in shape[1:]):
            problems.append(f"output {name!r} has shape {shape}; only the batch axis may be dynamic")
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    expected = dict(folded.expected_op_counts())
    if opset < LAYERNORM_OPSET:
        expected.pop("LayerNormalization", None)
    for op, n in expected.items():
        if counts.get(op, 0) != n:
            problems.append(f"{counts.get(op, 0)} {op} nodes, expected {n}")
    return problems


def export_onnx(folded, path: str | Path, opset: int = DEFAULT_OPSET, simplify: bool = True,
                metadata: dict[str, Any] | None = None) -> Path:
    """Export a :class:`~grmp_edge.export.fold.FoldedQualityModel` to ``path`` (written atomically).

    Pins ``opset``, keeps only the batch axis dynamic, optionally simplifies with onnxslim, stores the
    model spec, preprocessing spec and output names (plus ``metadata``) in ``metadata_props``, runs
    ``onnx.checker`` with ``full_check`` and the graph-contract check; raises GrmpError on any failure.
    """
    onnx = require("onnx", "export")
    opset = check_opset(opset)
    model = _torch_to_onnx(folded, opset)
    if simplify:
        model = simplify_graph(model)
    props = {
        METADATA_MODEL_SPEC: json.dumps(folded.spec.to_dict(), sort_keys=True),
        METADATA_PREPROCESS: json.dumps(folded.spec.preprocess.to_dict(), sort_keys=True),
        METADATA_OUTPUTS: json.dumps(folded.output_names),
        **{k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()},
    }
    onnx.helper.set_model_props(model, props)
    model.doc_string = "grmp-edge quality model: uint8 RGB NHWC image -> score in (0, 1)"
    check_onnx_model(model, "exported ONNX fails onnx.checker")
    problems = graph_contract_problems(model, folded)
    if problems:
        raise GrmpError("exported ONNX breaks the graph contract: " + "; ".join(problems))
    return atomic_write(path, lambda tmp: onnx.save(model, str(tmp)))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (the graph itself is not loaded)."""
    onnx = require("onnx", "export")
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


@dataclass(frozen=True)
class ParityReport:
    """The FP32 graph against the folded PyTorch model on ``n`` images: max, p99 and mean |delta score|."""

    n: int
    max_abs: float
    p99_abs: float
    mean_abs: float
    tolerance: float
    passed: bool

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ParityReport":
        """The report as the bundle manifest records it (:meth:`to_dict`'s inverse)."""
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The ``parity_fp32`` gate of the bundle manifest."""
        return asdict(self)


def parity_gate(folded, onnx_path: str | Path, images: np.ndarray, tolerance: float = PARITY_TOLERANCE,
                batch: int = 16, onnx_scores: np.ndarray | None = None) -> ParityReport:
    """Compare the folded PyTorch model (FP32) with ONNX Runtime on real ``images``; raise if they differ.

    ``images`` are (N, S, S, 3) uint8 crops made by the runtime's preprocessing, N >= 64. Batches of
    ``batch`` (with a smaller last one) also exercise the dynamic batch axis. Returns the report
    (:class:`ParityReport`); raises GrmpError with
    that report when ``max_abs > tolerance``. ``onnx_scores``: ONNX Runtime's scores of ``images`` when
    the caller already has them (the file is not run again).
    """
    check_image_batch(images, folded.image_size, what="the parity gate")
    if len(images) < MIN_PARITY_IMAGES:
        raise GrmpError(f"the parity gate needs >= {MIN_PARITY_IMAGES} real images, got {len(images)}")
    reference = folded.scores(images, batch=batch)
    if onnx_scores is None:
        onnx_scores = run_onnx(onnx_path, (images[i:i + batch] for i in range(0, len(images), batch)))
    scores = np.asarray(onnx_scores, np.float64).reshape(-1)
    if scores.shape != reference.shape:
        raise GrmpError(f"{scores.size} ONNX scores for {reference.size} parity images")
    delta = np.abs(scores - reference)
    report = ParityReport(n=int(len(images)), max_abs=float(delta.max()), p99_abs=float(np.percentile(delta, 99)),
                          mean_abs=float(delta.mean()), tolerance=float(tolerance),
                          passed=bool(delta.max() <= tolerance))
    if not report.passed:
        worst = int(delta.argmax())
        raise GrmpError(
            f"ONNX parity gate failed: max |delta score| {report.max_abs:.3g} > {tolerance:g} on "
            f"{report.n} images (p99 {report.p99_abs:.3g}, mean {report.mean_abs:.3g}; worst image "
            f"#{worst}: PyTorch {reference[worst]:.6f} vs ONNX Runtime {scores[worst]:.6f})"
        )
    return report
