"""What a TensorRT plan really computes: per engine layer precisions, their summary and the plan gate.

A strongly typed network fixes the precision of every tensor, but the builder still fuses layers,
moves Q/DQ scales and may dequantize weights it needs to slice, so the graph's intent and the plan
can differ. The builder reports its final engine layers in two places, both read here:

* TensorRT-RTX (no GPU needed): with ``ProfilingVerbosity.DETAILED`` its builder logs one VERBOSE
  message starting ``Layers:`` with one line per engine layer (``Name: ..., LayerType: gemm,
  Inputs: [{..., Datatype: Int8, ...}], Constants: [...], Outputs: [...], ..., Metadata: [ONNX
  Layer: /mlp/c_fc/MatMul]...``). A plan cannot be deserialised without a GPU, so this log is the
  only source on the build machine (:func:`layers_from_log`).
* TensorRT 10/11 (built on the GPU that runs it): the engine inspector's JSON of the deserialised
  plan (:func:`layers_from_inspector_json`).

A layer's precision is the widest floating type among its inputs, constants and outputs (FP32 >
FP16/BF16 > INT8/FP8): a fused kernel that reads FP32 LayerNorm weights computes the norm in FP32.
A GEMM's is the widest type among its inputs only (its bias and dequantisation scales are FP32 even
when it multiplies INT8). Layers that touch no floating or INT8 tensor (shape arithmetic) count as
``other``. Which ONNX ops a layer holds comes from its ``[ONNX Layer: <node>]`` metadata, matched
against the parsed network's layer types (the network knows which node was a LayerNormalization).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from grmp_edge.errors import GrmpError

PRECISION_ORDER = ("int8", "fp16", "fp32")  # narrowest first
# TensorRT's spellings of tensor types (builder log, inspector JSON) -> precision class
_TYPE_CLASSES = {
    "float": "fp32", "fp32": "fp32", "double": "fp32",
    "half": "fp16", "fp16": "fp16", "bfloat16": "fp16", "bf16": "fp16",
    "int8": "int8", "fp8": "int8", "int4": "int8", "fp4": "int8",
}
# Engine layer types that multiply (TensorRT-RTX's Myelin names; TensorRT 10's inspector names).
GEMM_LAYER_TYPES = {"gemm", "correlation", "matrixmultiply", "convolution", "fullyconnected"}
# Myelin names fused kernels by the ops they hold: "Fc" is a fully connected product, "_gemm_" an
# attention kernel (both products and the Softmax between them).
_GEMM_NAME = re.compile(r"_gemm_|(?:^|[a-z_])Fc(?=[A-Z_]|$)")
# Parsed-network layer types (tensorrt.LayerType member names) -> the kind this module reports.
NETWORK_KINDS = {"MATRIX_MULTIPLY": "gemm", "CONVOLUTION": "gemm", "NORMALIZATION": "layernorm",
                 "SOFTMAX": "softmax"}
KINDS = ("gemm", "layernorm", "softmax")
# The per-precision counts of a plan that its bundle entry repeats from the sidecar.
SUMMARY_COUNTS = ("layers", *KINDS)

_LOG_LINE = re.compile(
    r"Name: (?P<name>.*?), LayerType: (?P<type>\w+), Inputs: \[(?P<inputs>.*?)\], "
    r"Constants: \[(?P<constants>.*?)\], Outputs: \[(?P<outputs>.*?)\], "
    r"(?:TacticName: [^,]*, )?(?:StreamId: \d+, )?Metadata:\s*(?P<metadata>.*)$"
)
_DATATYPE = re.compile(r"Datatype: (\w+)")
_ONNX_NODE = re.compile(r"\[ONNX Layer: (.*?)\]")
_INSPECTOR_TYPE = re.compile(r"\b(FP32|FP16|BF16|Half|Float|INT8|Int8|FP8|UInt8|Int32|Int64|Bool)\b", re.I)


@dataclass(frozen=True)
class EngineLayer:
    """One layer of a built plan: its name, engine type, tensor types and the ONNX nodes it holds."""

    name: str
    type: str
    inputs: tuple[str, ...]
    constants: tuple[str, ...]
    outputs: tuple[str, ...]
    onnx_nodes: tuple[str, ...] = field(default=())

    @property
    def is_gemm(self) -> bool:
        """Does this layer multiply matrices (a GEMM, convolution or fused attention kernel)?"""
        return self.type.lower() in GEMM_LAYER_TYPES or bool(_GEMM_NAME.search(self.name))

    @property
    def precision(self) -> str:
        """``int8``, ``fp16``, ``fp32`` or ``other`` (see the module doc for the rule)."""
        types = self.inputs if self.is_gemm and self.inputs else self.inputs + self.constants + self.outputs
        classes = {_TYPE_CLASSES.get(t.lower()) for t in types} - {None}
        return max(classes, key=PRECISION_ORDER.index) if classes else "other"


def layers_from_log(messages: Iterable[str]) -> list[EngineLayer]:
    """The engine layers in TensorRT-RTX's ``Layers:`` builder message (empty if none was logged)."""
    layers = []
    for message in messages:
        if not message.startswith("Layers:"):
            continue
        for line in message.splitlines()[1:]:
            match = _LOG_LINE.match(line.strip())
            if match is None:
                continue
            layers.append(EngineLayer(
                name=match["name"], type=match["type"],
                inputs=tuple(_DATATYPE.findall(match["inputs"])),
                constants=tuple(_DATATYPE.findall(match["constants"])),
                outputs=tuple(_DATATYPE.findall(match["outputs"])),
                onnx_nodes=tuple(_ONNX_NODE.findall(match["metadata"])),
            ))
    return layers


def layers_from_inspector_json(text: str) -> list[EngineLayer]:
    """The engine layers of TensorRT 10/11's ``IEngineInspector`` JSON (``LayerInformationFormat.JSON``,
    built with ``ProfilingVerbosity.DETAILED``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GrmpError(f"TensorRT's engine inspector wrote unreadable JSON: {exc}") from None

    def types(tensors) -> tuple[str, ...]:
        found = []
        for tensor in tensors or ():
            match = _INSPECTOR_TYPE.search(str(tensor.get("Format/Datatype", "")))
            if match:
                found.append(match.group(1))
        return tuple(found)

    layers = []
    for entry in data.get("Layers", []):
        if not isinstance(entry, Mapping):  # LAYER_NAMES_ONLY verbosity lists bare names
            raise GrmpError("the plan was built without detailed profiling verbosity; no layer types to read")
        layers.append(EngineLayer(
            name=str(entry.get("Name", "")), type=str(entry.get("LayerType", "")),
            inputs=types(entry.get("Inputs")), constants=(), outputs=types(entry.get("Outputs")),
            onnx_nodes=tuple(_ONNX_NODE.findall(str(entry.get("Metadata", "")))),
        ))
    return layers


def network_kinds(network) -> tuple[dict[str, str], dict[str, str]]:
    """From a parsed ``INetworkDefinition``: ``{onnx node: kind}`` for its GEMMs, LayerNorms and
    Softmaxes, and ``{onnx node: precision}`` of the type each of those takes in the graph."""
    kinds, asked = {}, {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = NETWORK_KINDS.get(layer.type.name)
        if kind is None:
            continue
        nodes = _ONNX_NODE.findall(getattr(layer, "metadata", "") or "") or [layer.name]
        tensor = layer.get_input(0)
        precision = _TYPE_CLASSES.get(tensor.dtype.name.lower(), "other") if tensor is not None else "other"
        for node in nodes:
            kinds[node] = kind
            asked[node] = precision
    return kinds, asked


@dataclass
class LayerSummary:
    """What a plan computes: engine layers per precision, and per precision its GEMMs, LayerNorms and
    Softmaxes; ``non_int8_gemms`` names the GEMM layers not in INT8 (for the INT8 gate)."""

    layers: dict[str, int]
    gemm: dict[str, int]
    layernorm: dict[str, int]
    softmax: dict[str, int]
    non_int8_gemms: list[str]

    def to_dict(self) -> dict:
        """The ``layers`` of a plan's sidecar."""
        return {"layers": self.layers, "gemm": self.gemm, "layernorm": self.layernorm, "softmax": self.softmax,
                "non_int8_gemms": self.non_int8_gemms}


def summarize(layers: list[EngineLayer], kinds: Mapping[str, str]) -> LayerSummary:
    """Count engine layers per precision, and per precision the GEMMs, LayerNorms and Softmaxes.

    A LayerNorm or Softmax counts in every engine layer whose ONNX nodes include one (fusion can
    split a norm over two kernels); GEMMs are the engine layers that multiply.
    """
    counts = {p: 0 for p in (*PRECISION_ORDER, "other")}
    per_kind: dict[str, dict[str, int]] = {k: {} for k in KINDS}
    non_int8 = []
    for layer in layers:
        precision = layer.precision
        counts[precision] += 1
        held = {kinds.get(node) for node in layer.onnx_nodes}
        if layer.is_gemm:
            per_kind["gemm"][precision] = per_kind["gemm"].get(precision, 0) + 1
            if precision != "int8":
                non_int8.append(layer.name)
        for kind in ("layernorm", "softmax"):
            if kind in held:
                per_kind[kind][precision] = per_kind[kind].get(precision, 0) + 1
    return LayerSummary(layers=counts, **per_kind, non_int8_gemms=non_int8)


def plan_gate_problems(precision: str, layers: list[EngineLayer], kinds: Mapping[str, str],
                       asked: Mapping[str, str]) -> list[str]:
    """Why a plan does not compute what its graph asked; empty when it does.

    An INT8 plan fails when no GEMM runs INT8 (TensorRT ignored the Q/DQ nodes) or when a GEMM that
    holds INT8 weights multiplies them in a wider type. An FP16 plan fails when a LayerNorm the graph
    keeps in FP32 runs in an engine layer that is not FP32. A plan with no layer information fails.
    """
    if not layers:
        return ["the builder reported no layer information"]
    problems = []
    if precision == "int8":
        gemms = [layer for layer in layers if layer.is_gemm]
        if not any(layer.precision == "int8" for layer in gemms):
            problems.append("no GEMM runs in INT8")
        wide = [layer.name for layer in gemms if layer.precision != "int8"
                and any(_TYPE_CLASSES.get(t.lower()) == "int8" for t in layer.constants)]
        if wide:
            problems.append(f"GEMMs with INT8 weights run wider: {', '.join(wide[:6])}")
    if precision == "fp16":
        kept = {node for node, kind in kinds.items() if kind == "layernorm" and asked.get(node) == "fp32"}
        left = sorted({layer.name for layer in layers if layer.precision != "fp32" and kept & set(layer.onnx_nodes)})
        if left:
            problems.append(f"LayerNorms the graph keeps in FP32 run in FP16: {', '.join(left[:6])}")
    return problems


def precision_cell(counts: Mapping[str, int] | None) -> str:
    """``"10 int8 / 4 fp32"`` for a per-precision count (``-`` when empty), for tables."""
    if not counts:
        return "-"
    return " / ".join(f"{counts[p]} {p}" for p in (*PRECISION_ORDER, "other") if counts.get(p))
