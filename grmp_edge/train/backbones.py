"""The backbone registry: which open_clip ViTs GRMP runs on, their configs and what each implies.

A backbone is an open_clip model config name. open_clip's own configs are all known; importing this
module adds ours from ``model_configs/`` (``grmp-tiny``, the small offline backbone). Everything here
works without a network and without weights: a config, a check that the prompted forward can run it,
a randomly initialised ``CLIP`` built from it, its tokenizer, its input size and the
:class:`~grmp_edge.spec.ModelSpec` of a GRMP model on it. Where pretrained weights come from is
:mod:`grmp_edge.train.pretrained`.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

from grmp_edge.errors import GrmpError, require
from grmp_edge.spec import ModelSpec, PreprocessSpec

open_clip = require("open_clip")

MODEL_CONFIGS = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIGS)

# Our small ViT (model_configs/grmp-tiny.json); the only backbone with offline "bootstrap" weights.
GRMP_TINY = "grmp-tiny"
# Its crop plan: 96 px crops at 256 px are 3 x 5 to cover a 16:9 frame (cost and accuracy per crop
# count: benchmarks/bench_crop_plan.md, benchmarks/heldout_quality.md).
GRMP_TINY_CROPS = 15


def backbone_config(name: str, pretrained: str | None = None) -> dict[str, Any]:
    """The full open_clip model config of ``name`` as it will be built for ``pretrained``.

    OpenAI-trained tags were trained with QuickGELU while the plain config names use GELU; the
    config records QuickGELU for such tags so the weights run with the activation they learned.
    """
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        vits = [m for m in open_clip.list_models() if m.startswith("ViT-")][:6]
        raise GrmpError(f"unknown open_clip model {name!r}; try {GRMP_TINY} or one of {vits}, ...")
    if _tag_config(name, pretrained).get("quick_gelu") and not cfg.get("quick_gelu"):
        cfg["quick_gelu"] = True
    return cfg


def _tag_config(name: str, pretrained: str | None) -> dict[str, Any]:
    """open_clip's record of a pretrained tag (empty for no tag, a file or ``bootstrap``)."""
    return open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {}


def check_config(name: str, cfg: dict[str, Any]) -> None:
    """Refuse configs the prompted ViT forward cannot run (before building or downloading anything)."""
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    resnet = isinstance(vision.get("layers"), (list, tuple))
    if resnet or vision.get("timm_model_name"):
        kind = "a ResNet" if resnet else f"a timm ({vision['timm_model_name']})"
        raise GrmpError(
            f"backbone {name} has {kind} image tower; GRMP's visual prompts need an open_clip "
            f"VisionTransformer (e.g. ViT-B-16 or {GRMP_TINY})"
        )
    if cfg.get("custom_text") or text.get("hf_model_name") or text.get("hf_tokenizer_name"):
        raise GrmpError(
            f"backbone {name} has a custom/Hugging Face text tower (CustomTextCLIP), which the prompt "
            "learner does not support; use a CLIP-style ViT such as ViT-B-16"
        )
    if vision.get("attentional_pool") or vision.get("pool_type", "tok") != "tok":
        raise GrmpError(f"backbone {name} does not pool the class token; GRMP needs pool_type 'tok'")
    if vision.get("scaled_cosine_attn"):
        raise GrmpError(f"backbone {name} uses scaled cosine attention, which the export path does not support")


def clip_from_config(cfg: dict[str, Any], name: str = "backbone") -> "open_clip.CLIP":
    """Build an open_clip ``CLIP`` with random weights from a full model config (no registry, no network)."""
    check_config(name, cfg)
    cfg = copy.deepcopy(cfg)
    cfg.pop("custom_text", None)
    return open_clip.CLIP(**cfg)


def tokenizer_for(cfg: dict[str, Any]):
    """open_clip's BPE tokenizer at the config's context length (no registry lookup)."""
    text = cfg.get("text_cfg", {})
    return open_clip.tokenizer.SimpleTokenizer(
        context_length=text.get("context_length", 77), **(text.get("tokenizer_kwargs") or {})
    )


def image_size_of(cfg: dict[str, Any]) -> int:
    """The square input size of a config's vision tower."""
    size = cfg["vision_cfg"].get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if size[0] != size[1]:
            raise GrmpError(f"non-square backbone input {size} is not supported")
        size = size[0]
    return int(size)


def backbone_preprocess(name: str, pretrained: str | None, cfg: dict[str, Any]) -> PreprocessSpec:
    """CLIP preprocessing at the backbone's input size, with the pretrained tag's own mean/std where
    it declares them.

    ``grmp-tiny`` is the exception: its bootstrap learned distortions from native-resolution 96 px
    crops of 256 px images, and shrinking a whole frame to 96 px would hide the blur and noise it
    learned to see, so its spec scales the shorter side to 256 and centre-crops 96 px. One 96 px crop
    sees a seventh of a 256 px frame, so its crop plan is ``GRMP_TINY_CROPS`` native-resolution crops:
    the 3 x 5 grid that covers a 16:9 frame (and, by :func:`~grmp_edge.preprocess.crop_grid`, a 1:1,
    4:3 or 3:2 one) whole, scored in one engine batch. Other backbones keep 1, the resized centre
    crop the paper evaluates: a 224 px ViT sees the whole (resized) frame in it, and 224 px crops of a
    camera frame at native resolution are a scale it was never tuned on, at N times the cost."""
    pre = PreprocessSpec.clip(image_size_of(cfg))
    if name == GRMP_TINY:
        pre = replace(pre, resize=256, crops=GRMP_TINY_CROPS)
    tag_cfg = _tag_config(name, pretrained)
    if tag_cfg.get("mean") and tag_cfg.get("std"):
        pre = replace(pre, mean=tuple(tag_cfg["mean"]), std=tuple(tag_cfg["std"]))
    return pre


def model_spec(backbone: str = "ViT-B-16", pretrained: str | None = "openai", **fields: Any) -> ModelSpec:
    """The :class:`ModelSpec` of a GRMP model on ``backbone``: its full config and, unless
    ``fields`` sets one, :func:`backbone_preprocess`. Other ``fields`` (``n_ctx``, ``vpt_tokens``, ...)
    are passed through."""
    cfg = backbone_config(backbone, pretrained)
    if "preprocess" not in fields:
        fields["preprocess"] = backbone_preprocess(backbone, pretrained, cfg)
    return ModelSpec(backbone=backbone, pretrained=pretrained, backbone_config=cfg, **fields)
