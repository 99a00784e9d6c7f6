"""The backbone registry: configs GRMP cannot run are refused, tags' activations, per-backbone preprocessing."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from grmp_edge.errors import GrmpError  # noqa: E402
from grmp_edge.train.backbones import backbone_config, model_spec  # noqa: E402
from grmp_edge.train.model import build_model  # noqa: E402
from grmp_edge.train.pretrained import create_backbone  # noqa: E402


def test_non_vit_backbones_are_refused():
    with pytest.raises(GrmpError, match="ResNet image tower"):
        create_backbone("RN50", None)
    resnet = open_clip.create_model("RN50")
    with pytest.raises(GrmpError, match="VisionTransformer"):
        build_model(model_spec("grmp-tiny", None), resnet)


def test_openai_tags_get_quick_gelu():
    assert backbone_config("ViT-B-16", "openai")["quick_gelu"] is True
    assert not backbone_config("ViT-B-16", None).get("quick_gelu")


def test_crop_plans_grmp_tiny_covers_the_frame_vits_keep_the_resized_centre_crop():
    from grmp_edge.preprocess import crop_grid

    pre = model_spec("grmp-tiny", None).preprocess
    for width in (256, 341, 384, 455):  # 1:1, 4:3, 3:2 and 16:9 frames at its 256 px resize
        rows, cols = crop_grid(pre.resize, width, pre.size, pre.crops)
        assert rows * cols == pre.crops and rows * pre.size >= pre.resize and cols * pre.size >= width
    assert model_spec("ViT-B-16", None).preprocess.crops == 1
