"""The declarative specs that travel with every model: plain dataclasses <-> JSON.

* :class:`PreprocessSpec` - how a decoded RGB image becomes the model's input. The training
  transform, the exported graph (cast/scale/normalise) and the edge runtime's numpy/cv2 code are all
  generated from it, so preprocessing cannot drift between them.
* :class:`ModelSpec` - everything needed to rebuild a GRMP quality model exactly (stored as
  ``spec.json`` beside each checkpoint).
* :class:`BundleManifest` - the ``manifest.json`` of an exported bundle.

This module imports neither torch nor numpy: it is read by the trainer, the compiler and the
Jetson runtime alike.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from grmp_edge.errors import GrmpError

BUNDLE_SCHEMA_VERSION = 1

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZE_MODES = ("shortest", "square")
INTERPOLATIONS = ("area", "bilinear", "bicubic")
# Most crops one frame may be cut into: they go to the engine as one batch.
MAX_CROPS = 1024

# The exported graph's interface, shared by export, every backend and the Triton model config.
INPUT_NAME = "image"    # uint8 RGB, (N, H, W, 3): normalisation is inside the graph
OUTPUT_NAME = "score"   # float32 (N,): quality in [0, 1], higher is better
# The precisions a bundle can hold graphs and plans in.
PRECISIONS = ("fp32", "fp16", "int8")


def _from_dict(cls, data: dict[str, Any]):
    """Build a dataclass from a dict, ignoring unknown keys and converting lists to tuples."""
    known = {f.name for f in fields(cls)}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
    return cls(**kwargs)


@dataclass(frozen=True)
class PreprocessSpec:
    """How an RGB uint8 image becomes a ``size x size`` model input.

    ``resize_mode="shortest"`` scales the shorter side to ``resize`` keeping the aspect ratio (CLIP's
    policy); ``"square"`` scales both sides to ``resize`` ignoring aspect (the GRMP release's 244 px
    policy). A centre ``size`` crop follows (random crops and flips are training augmentations only),
    then ``(x / 255 - mean) / std`` per RGB channel.

    ``crops`` is the model's default crop plan, what ``run``, ``bench`` and ``eval`` score a frame with
    unless ``--crops`` says otherwise: 1 = the resized centre crop above; N > 1 = N crops of ``size`` at
    the frame's native resolution spread over it
    (:func:`~grmp_edge.preprocess.native_crops`), scored in one engine batch and averaged.
    Specs written before the plan existed read as 1.
    """

    size: int = 224
    resize: int = 224
    resize_mode: str = "shortest"
    interpolation: str = "area"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    policy: str = "clip"
    crops: int = 1

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise GrmpError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise GrmpError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.resize < self.size:
            raise GrmpError(f"resize ({self.resize}) must be >= crop size ({self.size})")
        if not isinstance(self.crops, int) or isinstance(self.crops, bool) or not 1 <= self.crops <= MAX_CROPS:
            raise GrmpError(f"preprocess crops must be a whole number in 1..{MAX_CROPS}, got {self.crops!r}")

    @classmethod
    def clip(cls, size: int = 224) -> "PreprocessSpec":
        """CLIP's own policy: shorter side to ``size``, centre crop, CLIP statistics."""
        return cls(size=size, resize=size, resize_mode="shortest", mean=CLIP_MEAN, std=CLIP_STD, policy="clip")

    @classmethod
    def release(cls, size: int = 224) -> "PreprocessSpec":
        """The GRMP release's policy: square resize to 244/224 of the crop, ImageNet statistics."""
        return cls(size=size, resize=round(size * 244 / 224), resize_mode="square",
                   mean=IMAGENET_MEAN, std=IMAGENET_STD, policy="release")

    @classmethod
    def named(cls, policy: str, size: int) -> "PreprocessSpec":
        """The spec of a named policy (``clip`` or ``release``) at a crop size."""
        if policy == "clip":
            return cls.clip(size)
        if policy == "release":
            return cls.release(size)
        raise GrmpError(f"unknown preprocessing policy {policy!r}; use 'clip' or 'release'")

    def crop_plan(self, crops: int | None = None) -> tuple[int, str]:
        """The crops per frame to score and where that count came from: ``crops`` (a ``--crops``
        option) when given, else the model's plan."""
        if crops is None:
            return self.crops, "the model's crop plan"
        return crops, f"--crops; the model's crop plan is {self.crops}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessSpec":
        return _from_dict(cls, data)


@dataclass
class ModelSpec:
    """Everything that rebuilds a GRMP quality model: backbone, prompt sizes, classnames, preprocessing.

    ``backbone_config`` is the full open_clip model config (``embed_dim``, ``vision_cfg``,
    ``text_cfg``, ...) so a checkpoint rebuilds without the config registry that made it.
    ``vpt_tokens=None`` means "as many as the release uses" (100).
    """

    backbone: str = "ViT-B-16"
    pretrained: str | None = "openai"
    backbone_config: dict[str, Any] = field(default_factory=dict)
    n_ctx: int = 4
    classnames: tuple[str, ...] = ("high quality", "low quality")
    vpt_tokens: int = 100
    vpt_dropout: float = 0.1
    scene_classes: tuple[str, ...] = (
        "animal", "cityscape", "human", "indoor", "landscape", "night", "plant", "still_life", "others",
    )
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        spec = _from_dict(cls, data)
        if isinstance(spec.preprocess, dict):
            spec.preprocess = PreprocessSpec.from_dict(spec.preprocess)
        return spec

    def save(self, path: str | Path) -> Path:
        from grmp_edge.artifacts import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "ModelSpec":
        return cls.from_dict(read_json(path, "model spec"))


@dataclass
class BundleFile:
    """One file of a bundle. ``targets`` names the backends it is meant for
    (``tensorrt``, ``onnxruntime``, ``onnxruntime-cpu``, ...)."""

    path: str
    sha256: str
    precision: str
    format: str = "onnx"
    targets: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BundleFile":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class BundleManifest:
    """``manifest.json`` of an exported bundle."""

    model: ModelSpec
    files: list[BundleFile] = field(default_factory=list)
    gates: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)  # where it came from, e.g. {"checkpoint": path}
    schema_version: int = BUNDLE_SCHEMA_VERSION

    @property
    def preprocess(self) -> PreprocessSpec:
        return self.model.preprocess

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "model": self.model.to_dict(),
            "preprocess": self.model.preprocess.to_dict(),
            "files": [asdict(f) for f in self.files],
            "gates": self.gates,
            "calibration": self.calibration,
            "versions": self.versions,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BundleManifest":
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise GrmpError("bundle manifest has no integer schema_version; is this a grmp-edge bundle?")
        if version > BUNDLE_SCHEMA_VERSION:
            raise GrmpError(
                f"bundle schema {version} is newer than this grmp-edge understands "
                f"({BUNDLE_SCHEMA_VERSION}); upgrade grmp-edge on this device"
            )
        return cls(
            model=ModelSpec.from_dict(data["model"]),
            files=[BundleFile.from_dict(f) for f in data.get("files", [])],
            gates=data.get("gates", {}),
            calibration=data.get("calibration", {}),
            versions=data.get("versions", {}),
            source=data.get("source", {}),
            schema_version=version,
        )

    def save(self, path: str | Path) -> Path:
        from grmp_edge.artifacts import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "BundleManifest":
        return cls.from_dict(read_json(path, "bundle manifest"))


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """Read a JSON object, turning a missing or corrupt file into a one-line GrmpError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GrmpError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GrmpError(f"{what} {path} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise GrmpError(f"{what} {path} is not a JSON object")
    return data


def sidecar_name(plan_name: str) -> str:
    """The JSON sidecar beside a TensorRT plan: ``model_fp16.plan`` -> ``model_fp16.plan.json``."""
    return f"{plan_name}.json"
