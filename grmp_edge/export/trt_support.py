"""Static check that an ONNX graph is one TensorRT 10's ONNX parser accepts, run on a CPU.

The facts below restate NVIDIA's operator matrix for TensorRT 10.0 (onnx-tensorrt
``docs/operators.md``): the opset range, the data types, the supported operators with the types each
takes, and every restriction that can be decided from the graph alone (attributes, constant inputs,
ranks). What only the builder can decide (kernel availability on a given GPU) is left to the build.

A value counts as an "initializer" when it is a graph initializer or the output of a ``Constant``
node: the parser imports both as weights.

The export's gate, :func:`gate_tensorrt_support`, prefers the real thing: where a TensorRT (or
TensorRT-RTX, which parses on machines without a GPU) imports, its own ONNX parser decides, and this
table is the check only where none does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from grmp_edge.errors import GrmpError, require

MIN_OPSET = 9
MAX_OPSET = 20
DEFAULT_DOMAINS = ("", "ai.onnx")

# Element types TensorRT takes at all. DOUBLE is cast down to FLOAT by the parser (clamped to
# +-FLT_MAX), so wherever an op takes FP32 it also takes DOUBLE.
TENSORRT_TYPES = ("DOUBLE", "FP32", "FP16", "BF16", "INT32", "INT64", "FP8", "INT8", "INT4", "UINT8", "BOOL")
# Quantized types exist only between QuantizeLinear and DequantizeLinear.
QUANTIZED_TYPES = ("INT8", "INT4", "FP8")

# op -> (element types of its data tensor, restriction as documented). Types are space-separated.
SUPPORTED_OPS: dict[str, tuple[str, str]] = {
    "Abs": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Acos": ("FP32 FP16 BF16", ""),
    "Acosh": ("FP32 FP16 BF16", ""),
    "Add": ("FP32 FP16 BF16 INT32 INT64", ""),
    "And": ("BOOL", ""),
    "ArgMax": ("FP32 FP16 BF16 INT32 INT64", ""),
    "ArgMin": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Asin": ("FP32 FP16 BF16", ""),
    "Asinh": ("FP32 FP16 BF16", ""),
    "Atan": ("FP32 FP16 BF16", ""),
    "Atanh": ("FP32 FP16 BF16", ""),
    "AveragePool": ("FP32 FP16 BF16", "2D or 3D pooling only; `dilations` must be empty or all ones"),
    "BatchNormalization": ("FP32 FP16 BF16", ""),
    "Cast": ("FP32 FP16 BF16 INT32 INT64 UINT8 BOOL", ""),
    "CastLike": ("FP32 FP16 BF16 INT32 INT64 UINT8 BOOL", ""),
    "Ceil": ("FP32 FP16 BF16", ""),
    "Celu": ("FP32 FP16 BF16", ""),
    "Clip": ("FP32 FP16 BF16", ""),
    "Concat": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "Constant": ("FP32 FP16 BF16 INT32 INT64 BOOL",
                 "`sparse_value`, `value_string` and `value_strings` attributes are unsupported"),
    "ConstantOfShape": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "Conv": ("FP32 FP16 BF16", ""),
    "ConvTranspose": ("FP32 FP16 BF16", ""),
    "Cos": ("FP32 FP16 BF16", ""),
    "Cosh": ("FP32 FP16 BF16", ""),
    "CumSum": ("FP32 FP16 BF16", "`axis` must be an initializer"),
    "DeformConv": ("FP32 FP16", "1D or 2D spatial dimensions only; begin and end `pads` must be equal"),
    "DepthToSpace": ("FP32 FP16 BF16 INT32 INT64", ""),
    "DequantizeLinear": ("INT8 FP8 INT4", "`x_zero_point` must be zero"),
    "Div": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Dropout": ("FP32 FP16 BF16", "`training_mode` must be an initializer that evaluates to False"),
    "Einsum": ("FP32 FP16 BF16", ""),
    "Elu": ("FP32 FP16 BF16", ""),
    "Equal": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Erf": ("FP32 FP16 BF16", ""),
    "Exp": ("FP32 FP16 BF16", ""),
    "Expand": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "EyeLike": ("FP32 FP16 BF16 INT32 INT64 BOOL", "`input` must have static dimensions"),
    "Flatten": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "Floor": ("FP32 FP16 BF16", ""),
    "Gather": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "GatherElements": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "GatherND": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "Gelu": ("FP32 FP16 BF16 INT8 INT32 INT64", ""),
    "Gemm": ("FP32 FP16 BF16", ""),
    "GlobalAveragePool": ("FP32 FP16 BF16", ""),
    "GlobalLpPool": ("FP32 FP16 BF16", ""),
    "GlobalMaxPool": ("FP32 FP16 BF16", ""),
    "Greater": ("FP32 FP16 BF16 INT32 INT64", ""),
    "GreaterOrEqual": ("FP32 FP16 BF16 INT32 INT64", ""),
    "GridSample": ("FP32 FP16", "input must be 4D"),
    "GroupNormalization": ("FP32 FP16 BF16", ""),
    "GRU": ("FP32 FP16 BF16", "bidirectional GRUs need the same activations in both directions"),
    "HardSigmoid": ("FP32 FP16 BF16", ""),
    "HardSwish": ("FP32 FP16 BF16", ""),
    "Hardmax": ("FP32 FP16 BF16", "the `axis` dimension of the input must be a build-time constant"),
    "Identity": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "If": ("FP32 FP16 BF16 INT32 INT64 BOOL",
           "branch outputs must have the same rank and different names"),
    "ImageScaler": ("FP32 FP16 BF16", ""),
    "InstanceNormalization": ("FP32 FP16 BF16", ""),
    "IsInf": ("FP32 FP16 BF16", ""),
    "IsNaN": ("FP32 FP16 BF16 INT32 INT64", ""),
    "LayerNormalization": ("FP32 FP16 BF16", "only the first output `Y` is supported"),
    "LeakyRelu": ("FP32 FP16 BF16", ""),
    "Less": ("FP32 FP16 BF16 INT32 INT64", ""),
    "LessOrEqual": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Log": ("FP32 FP16 BF16", ""),
    "LogSoftmax": ("FP32 FP16 BF16", ""),
    "Loop": ("FP32 FP16 BF16 INT32 INT64 BOOL",
             "scan output length cannot be dynamic; loop-carried shapes must not change"),
    "LRN": ("FP32 FP16 BF16", ""),
    "LSTM": ("FP32 FP16 BF16", "same activations in both directions; `input_forget` and `layout` must be 0"),
    "LpNormalization": ("FP32 FP16 BF16", ""),
    "LpPool": ("FP32 FP16 BF16", "`dilations` must be empty or all ones"),
    "MatMul": ("FP32 FP16 BF16", ""),
    "Max": ("FP32 FP16 BF16 INT32 INT64", ""),
    "MaxPool": ("FP32 FP16 BF16",
                "2D or 3D pooling only; the `Indices` output is unsupported; `dilations` must be empty or all ones"),
    "Mean": ("FP32 FP16 BF16 FP8 INT32 INT64", ""),
    "MeanVarianceNormalization": ("FP32 FP16 BF16", ""),
    "Min": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Mish": ("FP32 FP16", ""),
    "Mod": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Mul": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Neg": ("FP32 FP16 BF16 INT32 INT64", ""),
    "NonMaxSuppression": ("FP32 FP16", ""),
    "NonZero": ("FP32 FP16", ""),
    "Not": ("BOOL", ""),
    "OneHot": ("FP32 FP16 BF16 INT32 INT64 BOOL", "`depth` must be a build-time constant"),
    "Or": ("BOOL", ""),
    "Pad": ("FP32 FP16 BF16 INT32 INT64", "`axes` must be an initializer"),
    "ParametricSoftplus": ("FP32 FP16 BF16", ""),
    "Pow": ("FP32 FP16 BF16", ""),
    "PRelu": ("FP32 FP16 BF16", ""),
    "QuantizeLinear": ("FP32 FP16 BF16", "`y_zero_point` must be 0"),
    "RandomNormal": ("FP32 FP16 BF16", "`seed` is ignored"),
    "RandomNormalLike": ("FP32 FP16 BF16", "`seed` is ignored"),
    "RandomUniform": ("FP32 FP16 BF16", "`seed` is ignored"),
    "RandomUniformLike": ("FP32 FP16 BF16", "`seed` is ignored"),
    "Range": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Reciprocal": ("FP32 FP16 BF16", ""),
    "ReduceL1": ("FP32 FP16 BF16 INT32 INT64", "`axes` must be an initializer"),
    "ReduceL2": ("FP32 FP16 BF16 INT32 INT64", "`axes` must be an initializer"),
    "ReduceLogSum": ("FP32 FP16 BF16 INT32 INT64", "`axes` must be an initializer"),
    "ReduceLogSumExp": ("FP32 FP16 BF16 INT32 INT64", "`axes` must be an initializer"),
    "ReduceMax": ("FP32 FP16 BF16 INT32 INT64", "`axes` must be an initializer"),
    "ReduceMean": ("FP32 FP16 BF16 INT32 INT64", "`axes` must be an initializer"),
    "ReduceMin": ("FP32 FP16 BF16 INT32 INT64", "`axes` must be an initializer"),
    "ReduceProd": ("FP32 FP16 BF16 INT32 INT64", "`axes` must be an initializer"),
    "ReduceSum": ("FP32 FP16 BF16 INT32 INT64", "`axes` must be an initializer"),
    "ReduceSumSquare": ("FP32 FP16 BF16 INT32 INT64", "`axes` must be an initializer"),
    "Relu": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Reshape": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "Resize": ("FP32 FP16 BF16",
               "coordinate modes half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, asymmetric, "
               "align_corners; modes nearest, linear; nearest modes floor, ceil, round_prefer_floor, "
               "round_prefer_ceil; aspect policy stretch; `axes` an iota of the input rank; no antialiasing"),
    "ReverseSequence": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "RNN": ("FP32 FP16 BF16", "bidirectional RNNs need the same activations in both directions"),
    "RoiAlign": ("FP32 FP16", ""),
    "Round": ("FP32 FP16 BF16", ""),
    "ScaledTanh": ("FP32 FP16 BF16", ""),
    "Scan": ("FP32 FP16 BF16", ""),
    "Scatter": ("FP32 FP16 BF16 INT32 INT64", ""),
    "ScatterElements": ("FP32 FP16 BF16 INT32 INT64", ""),
    "ScatterND": ("FP32 FP16 BF16 INT32 INT64", "`reduction` is not supported"),
    "Selu": ("FP32 FP16 BF16", ""),
    "Shape": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "Shrink": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Sigmoid": ("FP32 FP16 BF16", ""),
    "Sign": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Sin": ("FP32 FP16 BF16", ""),
    "Sinh": ("FP32 FP16 BF16", ""),
    "Size": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "Slice": ("FP32 FP16 BF16 INT32 INT64 BOOL", "`axes` must be an initializer"),
    "Softmax": ("FP32 FP16 BF16", ""),
    "Softplus": ("FP32 FP16 BF16", ""),
    "Softsign": ("FP32 FP16 BF16", ""),
    "SpaceToDepth": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Split": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "Sqrt": ("FP32 FP16 BF16", ""),
    "Squeeze": ("FP32 FP16 BF16 INT32 INT64 BOOL", "`axes` must be an initializer"),
    "Sub": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Sum": ("FP32 FP16 BF16 INT32 INT64", ""),
    "Tan": ("FP32 FP16 BF16", ""),
    "Tanh": ("FP32 FP16 BF16", ""),
    "ThresholdedRelu": ("FP32 FP16 BF16", ""),
    "Tile": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "TopK": ("FP32 FP16 BF16 INT32 INT64", "`sorted` must be 1; `K` must be less than 3840"),
    "Transpose": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "Trilu": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "Unsqueeze": ("FP32 FP16 BF16 INT32 INT64 BOOL", "`axes` must be a constant tensor"),
    "Upsample": ("FP32 FP16 BF16", ""),
    "Where": ("FP32 FP16 BF16 INT32 INT64 BOOL", ""),
    "Xor": ("BOOL", ""),
}

# Listed by NVIDIA as not supported (any op in neither table is unsupported too).
UNSUPPORTED_OPS = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor",
    "BlackmanWindow", "Col2Im", "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger", "DFT",
    "Det", "DynamicQuantizeLinear", "HammingWindow", "HannWindow", "ImageDecoder", "MatMulInteger",
    "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional",
    "OptionalGetElement", "OptionalHasElement", "QLinearConv", "QLinearMatMul", "RegexFullMatch", "STFT",
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
    "SequenceMap", "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat", "StringNormalizer",
    "StringSplit", "TfIdfVectorizer", "Unique",
})

# Which input carries the element type the matrix lists (default 0); None: no data input to check
# (control flow, or an op whose listed type is that of its output).
_TYPED_INPUT: dict[str, int | None] = {
    "Where": 1, "If": None, "Loop": None, "Scan": None, "Constant": None, "ConstantOfShape": None,
    "RandomNormal": None, "RandomUniform": None, "EyeLike": 0,
}

_RESIZE_COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
_RESIZE_NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
_AXES_INPUT = {  # op -> index of the `axes` input that must be an initializer (when the opset has one)
    "Pad": 3, "Slice": 3, "Squeeze": 1, "Unsqueeze": 1, "CumSum": 1,
    **{op: 1 for op in SUPPORTED_OPS if op.startswith("Reduce")},
}
_TOPK_MAX_K = 3840
# Attributes the parser takes only some values of: op -> ((attribute, ONNX default, values it takes), ...).
ALLOWED_ATTRIBUTES: dict[str, tuple[tuple[str, Any, tuple], ...]] = {
    "Resize": (("coordinate_transformation_mode", "half_pixel", _RESIZE_COORDINATE_MODES),
               ("mode", "nearest", ("nearest", "linear")),
               ("keep_aspect_ratio_policy", "stretch", ("stretch",)),
               ("antialias", 0, (0,))),
    "TopK": (("sorted", 1, (1,)),),
    "LSTM": (("input_forget", 0, (0,)), ("layout", 0, (0,))),
    "ScatterND": (("reduction", "none", ("none",)),),
}


@dataclass(frozen=True)
class TrtProblem:
    """One reason TensorRT 10's ONNX parser would refuse a graph."""

    node: str
    op: str
    message: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op}): {self.message}"


class _Graph:
    """What the rules need to know about a graph: constants, element types, shapes, consumers."""

    def __init__(self, graph, onnx, outer: "_Graph | None" = None):
        self.onnx = onnx
        self.constants: dict[str, Any] = dict(outer.constants) if outer else {}
        self.types: dict[str, str] = dict(outer.types) if outer else {}
        self.ranks: dict[str, list] = dict(outer.ranks) if outer else {}
        for init in graph.initializer:
            self.constants[init.name] = init
            self.types[init.name] = _type_name(onnx, init.data_type)
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                self.constants[node.output[0]] = value
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            tt = vi.type.tensor_type
            if tt.elem_type:
                self.types[vi.name] = _type_name(onnx, tt.elem_type)
            if tt.HasField("shape"):
                self.ranks[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        self.io = {vi.name for vi in list(graph.input) + list(graph.output)}
        self.used = {name for node in graph.node for name in node.input if name}
        self.used |= {vi.name for vi in graph.output}

    def dims(self, node, index: int = 0) -> list | None:
        """The dimensions of a node's input (None for an unknown one), when shape inference knows them."""
        return self.ranks.get(_input(node, index))

    def array(self, name: str):
        """The value of a constant input as numpy, or None when it is not a constant."""
        proto = self.constants.get(name)
        if proto is None:
            return None
        return self.onnx.numpy_helper.to_array(proto)


def _type_name(onnx, elem_type: int) -> str:
    name = onnx.TensorProto.DataType.Name(elem_type)
    return {"FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16",
            "FLOAT8E4M3FN": "FP8", "FLOAT8E4M3FNUZ": "FP8", "FLOAT8E5M2": "FP8",
            "FLOAT8E5M2FNUZ": "FP8"}.get(name, name)


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            value = require("onnx").helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _input(node, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


def _zero_point_rule(index: int, name: str) -> Callable[[Any, _Graph], list[str]]:
    def rule(node, g: _Graph) -> list[str]:
        zp = _input(node, index)
        if not zp:
            return []
        value = g.array(zp)
        if value is None:
            return [f"`{name}` must be an initializer (TensorRT needs zero at build time)"]
        if value.any():
            return [f"`{name}` must be zero (symmetric quantization), got non-zero values"]
        return []
    return rule


def _axes_rule(node, g: _Graph) -> list[str]:
    name = _input(node, _AXES_INPUT[node.op_type])
    if name and name not in g.constants:
        return [f"input `{name}` (axes) must be an initializer"]
    return []


def _pool_rule(node, g: _Graph) -> list[str]:
    problems = []
    kernel = _attr(node, "kernel_shape") or []
    if node.op_type != "LpPool" and len(kernel) not in (2, 3):
        problems.append(f"only 2D or 3D pooling is supported, kernel_shape is {list(kernel)}")
    dilations = _attr(node, "dilations") or []
    if any(d != 1 for d in dilations):
        problems.append(f"`dilations` must be empty or all ones, got {list(dilations)}")
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1] in g.used:
        problems.append("the `Indices` output is unsupported")
    return problems


def _extra_outputs_rule(node, g: _Graph) -> list[str]:
    extra = [o for o in node.output[1:] if o and o in g.used]
    return [f"only the first output is supported, {extra} are used"] if extra else []


def _attribute_problems(node) -> list[str]:
    """The attributes of ``node`` set to a value :data:`ALLOWED_ATTRIBUTES` says the parser refuses."""
    problems = []
    for name, default, allowed in ALLOWED_ATTRIBUTES.get(node.op_type, ()):
        value = _attr(node, name, default)
        if value not in allowed:
            problems.append(f"`{name}` {value!r} is unsupported; TensorRT takes {', '.join(map(repr, allowed))}")
    return problems


def _resize_rule(node, g: _Graph) -> list[str]:
    problems = []
    nearest = _attr(node, "nearest_mode", "round_prefer_floor")
    if _attr(node, "mode", "nearest") == "nearest" and nearest not in _RESIZE_NEAREST_MODES:
        problems.append(f"nearest_mode {nearest!r} is unsupported")
    axes = _attr(node, "axes")
    if axes is not None and list(axes) != list(range(len(axes))):
        problems.append(f"`axes` must be an iota vector of the input rank, got {list(axes)}")
    elif axes is not None:
        rank = g.dims(node)
        if rank is not None and len(axes) != len(rank):
            problems.append(f"`axes` must cover all {len(rank)} input dimensions, got {list(axes)}")
    return problems


def _dropout_rule(node, g: _Graph) -> list[str]:
    name = _input(node, 2)
    if not name:
        return []
    value = g.array(name)
    if value is None:
        return ["`training_mode` must be an initializer"]
    return ["`training_mode` must evaluate to False"] if bool(value) else []


def _constant_rule(node, g: _Graph) -> list[str]:
    bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
    return [f"attribute `{bad[0]}` is unsupported"] if bad else []


def _topk_rule(node, g: _Graph) -> list[str]:
    k = g.array(_input(node, 1)) if _input(node, 1) else None
    if k is not None and int(k.reshape(-1)[0]) >= _TOPK_MAX_K:
        return [f"`K` must be less than {_TOPK_MAX_K}, got {int(k.reshape(-1)[0])}"]
    return []


def _recurrent_rule(node, g: _Graph) -> list[str]:
    acts = _attr(node, "activations")
    if _attr(node, "direction", "forward") == "bidirectional" and acts:
        half = len(acts) // 2
        if list(acts[:half]) != list(acts[half:]):
            return ["bidirectional activations must be the same in both directions"]
    return []


def _onehot_rule(node, g: _Graph) -> list[str]:
    return [] if _input(node, 1) in g.constants else ["`depth` must be a build-time constant"]


def _static_input_rule(node, g: _Graph) -> list[str]:
    dims = g.dims(node)
    if dims is not None and any(d is None for d in dims):
        return [f"`input` must have static dimensions, got {dims}"]
    return []


def _hardmax_rule(node, g: _Graph) -> list[str]:
    dims = g.dims(node)
    if dims is None:
        return []
    axis = _attr(node, "axis", -1)
    if dims[axis] is None:
        return [f"dimension {axis} of the input must be a build-time constant"]
    return []


def _grid_sample_rule(node, g: _Graph) -> list[str]:
    dims = g.dims(node)
    return [f"input must be 4D, got rank {len(dims)}"] if dims is not None and len(dims) != 4 else []


def _deform_conv_rule(node, g: _Graph) -> list[str]:
    problems = []
    pads = list(_attr(node, "pads") or [])
    half = len(pads) // 2
    if pads and pads[:half] != pads[half:]:
        problems.append(f"begin and end `pads` must be equal, got {pads}")
    dims = g.dims(node)
    if dims is not None and len(dims) - 2 not in (1, 2):
        problems.append(f"only 1D or 2D spatial inputs are supported, got rank {len(dims)}")
    return problems


RESTRICTION_CHECKS: dict[str, Callable[[Any, _Graph], list[str]]] = {
    "AveragePool": _pool_rule, "MaxPool": _pool_rule, "LpPool": _pool_rule,
    "Constant": _constant_rule,
    "DeformConv": _deform_conv_rule,
    "DequantizeLinear": _zero_point_rule(2, "x_zero_point"),
    "QuantizeLinear": _zero_point_rule(2, "y_zero_point"),
    "Dropout": _dropout_rule,
    "EyeLike": _static_input_rule,
    "GridSample": _grid_sample_rule,
    "Hardmax": _hardmax_rule,
    "LayerNormalization": _extra_outputs_rule,
    "LSTM": _recurrent_rule, "GRU": _recurrent_rule, "RNN": _recurrent_rule,
    "OneHot": _onehot_rule,
    "Resize": _resize_rule,
    "TopK": _topk_rule,
    **{op: _axes_rule for op in _AXES_INPUT},
}


def _type_problems(node, g: _Graph) -> list[str]:
    allowed = set(SUPPORTED_OPS[node.op_type][0].split())
    if "FP32" in allowed:
        allowed.add("DOUBLE")
    problems = []
    index = _TYPED_INPUT.get(node.op_type, 0)
    if index is not None:
        name = _input(node, index)
        dtype = g.types.get(name)
        if dtype is not None and dtype not in allowed:
            problems.append(f"input `{name}` is {dtype}; TensorRT takes {node.op_type} on {sorted(allowed)}")
    if node.op_type == "Cast":
        target = _type_name(g.onnx, _attr(node, "to", 1))
        if target not in allowed:
            problems.append(f"cast to {target} is unsupported")
    return problems


def _tensor_problems(graph, g: _Graph) -> list[TrtProblem]:
    """Types TensorRT has no layer for, UINT8 inside the network, quantized types outside Q/DQ."""
    problems = []
    qdq = ("QuantizeLinear", "DequantizeLinear")
    other_inputs = {name for n in graph.node if n.op_type not in qdq for name in n.input}
    for name, dtype in g.types.items():
        where = "graph input/output" if name in g.io else "tensor"
        if dtype not in TENSORRT_TYPES:
            problems.append(TrtProblem(name, "tensor", f"{where} type {dtype} is not a TensorRT type"))
        elif dtype == "UINT8" and name not in g.io:
            problems.append(TrtProblem(name, "tensor", "UINT8 is only supported as a network input or output"))
        elif dtype in QUANTIZED_TYPES and name in g.io:
            problems.append(TrtProblem(name, "tensor", f"{dtype} is a quantized type, not a network input/output type"))
        elif dtype in QUANTIZED_TYPES and name in other_inputs:
            problems.append(TrtProblem(name, "tensor", f"{dtype} tensors exist only between QuantizeLinear and DequantizeLinear"))
    return problems


def _check_graph(graph, g: _Graph) -> list[TrtProblem]:
    problems = _tensor_problems(graph, g)
    for i, node in enumerate(graph.node):
        label = node.name or f"#{i}:{node.op_type}"
        if node.domain not in DEFAULT_DOMAINS:
            problems.append(TrtProblem(label, node.op_type,
                                       f"custom domain {node.domain!r} op; TensorRT's ONNX parser has no importer for it"))
            continue
        if node.op_type in UNSUPPORTED_OPS:
            problems.append(TrtProblem(label, node.op_type, "not supported by TensorRT 10's ONNX parser"))
            continue
        if node.op_type not in SUPPORTED_OPS:
            problems.append(TrtProblem(label, node.op_type, "not in TensorRT 10's ONNX operator table"))
            continue
        messages = _type_problems(node, g) + _attribute_problems(node)
        rule = RESTRICTION_CHECKS.get(node.op_type)
        if rule is not None:
            messages += rule(node, g)
        problems += [TrtProblem(label, node.op_type, m) for m in messages]
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == attr.GRAPH else list(attr.graphs)):
                problems += _check_graph(sub, _Graph(sub, g.onnx, outer=g))
    return problems


def _load(model):
    onnx = require("onnx", "export")
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise GrmpError(f"ONNX file not found: {path}")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # protobuf raises several unrelated types on a corrupt file
            raise GrmpError(f"cannot read ONNX file {path}: {exc}") from None
    return onnx, model


def check_tensorrt_support(model) -> list[TrtProblem]:
    """Every reason TensorRT 10's ONNX parser would refuse ``model`` (a path or an ``onnx.ModelProto``).

    Checks the default-domain opset (9..20), custom-domain ops, ops missing from or marked unsupported
    in the operator matrix, the element types each op takes, UINT8 and quantized types outside their
    allowed places, and every restriction decidable from the graph. Returns an empty list when clean.
    """
    onnx, model = _load(model)
    problems = []
    opsets = {o.domain: o.version for o in model.opset_import}
    version = opsets.get("", opsets.get("ai.onnx"))
    if version is None or not MIN_OPSET <= version <= MAX_OPSET:
        problems.append(TrtProblem("model", "opset",
                                   f"default-domain opset {version} is outside TensorRT 10's {MIN_OPSET}..{MAX_OPSET}"))
    # Shape inference gives the element types of intermediate tensors; it never changes the graph.
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    problems += _check_graph(inferred.graph, _Graph(inferred.graph, onnx))
    return problems


def require_tensorrt_support(model, what: str = "graph") -> None:
    """Raise GrmpError naming every offending node when ``model`` would not parse on TensorRT 10."""
    problems = check_tensorrt_support(model)
    if problems:
        shown = "; ".join(str(p) for p in problems[:12])
        more = f" (+{len(problems) - 12} more)" if len(problems) > 12 else ""
        raise GrmpError(f"{what} is not TensorRT 10 compatible: {shown}{more}")


def gate_tensorrt_support(path: str | Path, what: str, flavour_name: str | None = None) -> str:
    """The export's TensorRT gate for one graph; returns what checked it.

    Where a TensorRT imports (``flavour_name``'s, else the first of ``tensorrt`` and
    ``tensorrt-rtx`` that does), its own ONNX parser decides, and a rejected graph is a GrmpError
    naming each rejected node and its op type; elsewhere :func:`require_tensorrt_support` checks
    the graph against this module's operator table.
    """
    import importlib

    from grmp_edge.export.tensorrt_build import parse_onnx
    from grmp_edge.runtime.plan_compat import FLAVOURS, flavour

    candidates = [flavour(flavour_name)] if flavour_name else list(FLAVOURS.values())
    for candidate in candidates:
        try:
            importlib.import_module(candidate.module)
        except Exception:  # not installed, or a broken install (OSError for missing libraries)
            continue
        return parse_onnx(path, candidate.name)
    require_tensorrt_support(path, what)
    return "TensorRT 10 operator table"
