"""Checkpoints: a folder with ``spec.json`` (the :class:`~grmp_edge.spec.ModelSpec`, the backbone's
full config included) and ``model.safetensors`` (the whole state dict), so a model is rebuilt from
the folder alone, offline.
"""
from __future__ import annotations

from pathlib import Path

from grmp_edge.artifacts import atomic_write
from grmp_edge.errors import GrmpError, require
from grmp_edge.spec import ModelSpec
from grmp_edge.train.backbones import clip_from_config
from grmp_edge.train.model import GRMPModel

CHECKPOINT_SPEC = "spec.json"
CHECKPOINT_WEIGHTS = "model.safetensors"


def save_checkpoint(model: GRMPModel, folder: str | Path) -> Path:
    """Write ``spec.json`` + ``model.safetensors`` (full state dict) atomically; returns the folder.
    The weights go first so a present ``spec.json`` always has its weights beside it."""
    save_file = require("safetensors.torch").save_file
    folder = Path(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(folder / CHECKPOINT_WEIGHTS, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    model.spec.save(folder / CHECKPOINT_SPEC)
    return folder


def load_checkpoint(folder: str | Path, device: str = "cpu") -> GRMPModel:
    """Rebuild a :class:`GRMPModel` from a checkpoint folder (never downloads); returned in eval mode."""
    load_file = require("safetensors.torch").load_file
    folder = Path(folder)
    spec = ModelSpec.load(folder / CHECKPOINT_SPEC)
    if not spec.backbone_config:
        raise GrmpError(f"{folder / CHECKPOINT_SPEC} has no backbone_config; it cannot be rebuilt offline")
    weights = folder / CHECKPOINT_WEIGHTS
    if not weights.is_file():
        raise GrmpError(f"checkpoint weights not found: {weights}")
    model = GRMPModel(spec, clip_from_config(spec.backbone_config, spec.backbone))
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except Exception as exc:  # safetensors raises its own error type for corrupt files
        raise GrmpError(f"{weights} does not match its spec.json: {str(exc).splitlines()[0][:200]}") from None
    return model.to(device).eval()
