"""The GRMP model: prompted ViT forward, plain attention, prompt learner, the model's own checks."""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from grmp_edge.errors import GrmpError  # noqa: E402
from grmp_edge.spec import PreprocessSpec  # noqa: E402
from grmp_edge.train.backbones import clip_from_config, model_spec, tokenizer_for  # noqa: E402
from grmp_edge.train.model import build_model  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**fields):
    torch.manual_seed(0)
    return build_model(model_spec("grmp-tiny", None, **fields)).eval()


def images(n, size=96, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def block_lengths(model):
    """Record the sequence length every vision block sees."""
    lengths = []
    for block in model.clip.visual.transformer.resblocks:
        block.register_forward_hook(lambda mod, args, out: lengths.append(out.shape[1]))
    return lengths


def test_vit_b16_random_builds_and_scores_with_297_tokens():
    torch.manual_seed(0)
    model = build_model(model_spec("ViT-B-16", None)).eval()
    lengths = block_lengths(model)
    with torch.no_grad():
        logits = model(images(1, 224))
    assert logits.shape == (1, 2)
    assert lengths == [1 + 100 + 196] * 12
    assert model.spec.backbone_config["vision_cfg"]["patch_size"] == 16


def test_grmp_tiny_outputs():
    model = tiny()
    lengths = block_lengths(model)
    x = images(3)
    with torch.no_grad():
        features = model.encode_image(x)
        quality = model.quality(x)
        scenes = model.scene_logits(x)
    assert features.shape == (3, 128)
    assert torch.allclose(features.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert quality.shape == (3,) and bool(((quality > 0) & (quality < 1)).all())
    assert scenes.shape == (3, 9)
    assert model.text_features().shape == (2, 128)
    assert lengths == [1 + 100 + 144] * 4 * 3  # three image forwards above
    assert model.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)
    # the fp16 weights of the whole backbone stay under the 20 MB budget
    assert sum(p.numel() for p in model.clip.parameters()) * 2 < 20e6


def test_without_prompts_the_forward_is_open_clips_own():
    model = tiny(vpt_tokens=0)
    model.visual_prompts.norm = torch.nn.Identity()
    x = images(2)
    with torch.no_grad():
        ours = model.encode_image(x)
        theirs = model.clip.encode_image(x, normalize=True)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_prompts_change_the_features_and_precomputed_prompts_match_eval_mode():
    model = tiny()
    x = images(2)
    with torch.no_grad():
        before = model.encode_image(x)
        same = model.encode_image(x, prompts=model.visual_prompts.projected())
        model.visual_prompts.deep[-1].add_(1.0)
        after = model.encode_image(x)
    assert torch.allclose(before, same, atol=1e-6)
    assert not torch.allclose(before, after, atol=1e-3)


def test_dropout_acts_in_training_only():
    model = tiny()
    x = images(1)
    model.train()
    with torch.no_grad():
        a, b = model.encode_image(x), model.encode_image(x)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("variant", ["default", "quickgelu", "custom-block"])
def test_plain_attention_matches_native(variant):
    spec = model_spec("grmp-tiny", None)
    cfg = copy.deepcopy(spec.backbone_config)
    if variant == "quickgelu":
        cfg["quick_gelu"] = True
    if variant == "custom-block":
        cfg["vision_cfg"].update(ls_init_value=0.5, qk_norm=True, scale_heads=True, scale_attn_inner=True,
                                 scale_attn=True, scale_fc=True)
    spec.backbone_config = cfg
    torch.manual_seed(0)
    model = build_model(spec, clip_from_config(cfg)).eval()
    if variant == "quickgelu":
        assert any(isinstance(m, open_clip.transformer.QuickGELU) for m in model.clip.visual.modules())
    if variant == "custom-block":
        assert isinstance(model.clip.visual.transformer.resblocks[0],
                          open_clip.transformer.CustomResidualAttentionBlock)
    x = images(2)
    prompts = model.visual_prompts.projected()
    with torch.no_grad():
        native = model.encode_image(x, prompts=prompts)
        plain = model.encode_image(x, prompts=prompts, plain_attention=True)
    assert torch.allclose(native, plain, atol=1e-5)


def test_context_is_spliced_where_the_placeholders_were():
    model = tiny()
    clip = model.clip
    x_id = tokenizer_for(model.spec.backbone_config)(["X"])[0, 1]
    with torch.no_grad():
        model.prompt_learner.ctx.copy_(clip.token_embedding.weight[x_id].expand(4, -1))
        spliced = model.text_features()
        literal = clip.encode_text(model.prompt_learner.tokens, normalize=True)
    assert torch.allclose(spliced, literal, atol=1e-6)


def test_prompt_parameters_are_the_only_trainable_ones():
    model = tiny()
    width, layers, tokens = 128, 4, 100
    expected = 4 * 128 + tokens * width * layers + width * width + width + 2 * width
    assert sum(p.numel() for p in model.prompt_parameters()) == expected
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.prompt_parameters()}
    finetune = model.finetune_parameters(k=2)
    block = sum(p.numel() for p in model.clip.visual.transformer.resblocks[0].parameters())
    norms = 4 * width
    assert sum(p.numel() for p in finetune) == 4 * 128 + 4 * block + norms
    assert model.prompt_learner.ctx in finetune


def test_preprocess_size_must_match_the_backbone():
    spec = model_spec("grmp-tiny", None, preprocess=PreprocessSpec.clip(224))
    with pytest.raises(GrmpError, match=r"PreprocessSpec.clip\(96\)"):
        build_model(spec)
