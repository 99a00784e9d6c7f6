"""Folding: the deployable module equals the GRMP model's quality score and holds only the image side."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from grmp_edge.errors import GrmpError  # noqa: E402
from grmp_edge.export.fold import fold_prompts  # noqa: E402
from grmp_edge.preprocess import normalize  # noqa: E402


@pytest.fixture(scope="module")
def folded(model):
    return fold_prompts(model, embedding=True)


def test_folded_score_equals_two_prompt_softmax(folded, model, crops):
    with torch.no_grad():
        expected = model.quality(torch.from_numpy(normalize(crops, model.spec.preprocess))).double().numpy()
    scores = folded.scores(crops)
    assert scores.shape == (len(crops),)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert scores.std() > 1e-3  # the crops are told apart, so the comparison means something


def test_embedding_output_is_the_normalised_feature(folded, model, crops):
    crops = torch.from_numpy(crops[:5].copy())
    with torch.no_grad():
        score, embedding = folded(crops)
    assert embedding.shape == (5, model.spec.backbone_config["embed_dim"])
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(score, torch.sigmoid(embedding @ folded.direction))


def test_only_the_image_side_is_registered(folded, model):
    names = set(folded.state_dict())
    assert {"prompts", "direction", "mean", "std"} <= names
    assert all(n.split(".")[0] in {"visual", "prompt_norm", "prompts", "direction", "mean", "std"} for n in names)
    folded_params = {id(p) for p in folded.parameters()}
    text_side = [model.clip.token_embedding, model.clip.transformer, model.prompt_learner, model.clip.ln_final]
    assert not any(id(p) in folded_params for m in text_side for p in m.parameters())
    assert model.prompt_learner.ctx.data_ptr() not in {t.data_ptr() for t in folded.state_dict().values()}
    expected = sum(p.numel() for p in model.clip.visual.parameters()) + sum(
        p.numel() for p in model.visual_prompts.norm.parameters())
    assert sum(p.numel() for p in folded.parameters()) == expected


def test_prompts_are_projected_constants_without_dropout(folded, model, crops):
    with torch.no_grad():
        torch.testing.assert_close(folded.prompts, model.visual_prompts.projected())
    crops = torch.from_numpy(crops[:4].copy())
    try:
        model.visual_prompts.dropout.train()  # even a training-mode dropout must not reach the folded graph
        with torch.no_grad():
            first, second = folded(crops)[0], folded(crops)[0]
    finally:
        model.visual_prompts.dropout.eval()
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_direction_is_scaled_text_difference(folded, model):
    with torch.no_grad():
        high, low = model.text_features()
    torch.testing.assert_close(folded.direction, model.logit_scale * (high - low))
    assert folded.output_names == ["score", "embedding"]
    counts = folded.expected_op_counts()
    assert counts["Softmax"] == len(model.clip.visual.transformer.resblocks)
    assert counts["LayerNormalization"] == 2 * counts["Softmax"] + 3  # ln_pre, ln_1/ln_2 per block, prompt norm, ln_post


def test_three_class_model_is_refused(model):
    odd = dataclasses.replace(model.spec, classnames=("high quality", "medium quality", "low quality"))
    original = model.spec
    try:
        model.spec = odd
        with pytest.raises(GrmpError, match="two class prompts"):
            fold_prompts(model)
    finally:
        model.spec = original
