"""The GRMP quality model: a frozen open_clip ViT with CoOp text context and VPT-deep visual prompts.

What is computed (``docs/method.md``, "The model"):

* text side - :class:`PromptLearner`: ``n_ctx`` context vectors shared by the class prompts
  ``"X X X X high quality."`` / ``"X X X X low quality."``; the frozen text transformer encodes them
  and the end-of-text token is projected and L2-normalised;
* image side - :class:`VisualPrompts`: ``P`` prompt tokens per block inserted right after the class
  token (after ``ln_pre``), each block's prompt outputs replaced by the next block's own prompts, one
  shared projection + dropout, a prompt LayerNorm after the last block, then ``ln_post`` and ``proj``;
* score - ``softmax(exp(logit_scale) * [<f, t_high>, <f, t_low>])[0]``.

The ViT forward is written against open_clip's ``VisionTransformer`` attributes, so any open_clip ViT
works. ``plain_attention=True`` spells each block's attention as MatMul/Softmax/MatMul for the ONNX and
TensorRT exporters. Backbone configs come from :mod:`grmp_edge.train.backbones`, their weights from
:mod:`grmp_edge.train.pretrained`; checkpoints are :mod:`grmp_edge.train.checkpoint`.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from grmp_edge.errors import GrmpError, require
from grmp_edge.spec import ModelSpec
from grmp_edge.train.backbones import GRMP_TINY, backbone_config, image_size_of, tokenizer_for
from grmp_edge.train.pretrained import create_backbone
from grmp_edge.train.qgr import scene_prompts

torch = require("torch")
open_clip = require("open_clip")
nn = torch.nn
F = torch.nn.functional


# --------------------------------------------------------------------------- prompts

def encode_text_embeddings(clip, embeddings: "torch.Tensor", tokens: "torch.Tensor") -> "torch.Tensor":
    """CLIP's text tower from token embeddings (so learned context can be spliced in): positional
    embedding, causal transformer, ``ln_final``, end-of-text pooling, projection, L2 norm."""
    cast = clip.transformer.get_cast_dtype()
    x = embeddings.to(cast) + clip.positional_embedding.to(cast)
    x = clip.transformer(x, attn_mask=clip.attn_mask)
    x = clip.ln_final(x)
    x = open_clip.transformer.text_global_pool(
        x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    if isinstance(clip.text_projection, nn.Linear):
        x = clip.text_projection(x)
    elif clip.text_projection is not None:
        x = x @ clip.text_projection
    return F.normalize(x, dim=-1)


class PromptLearner(nn.Module):
    """CoOp context: ``n_ctx`` vectors shared by every class prompt ``"X ... X <classname>."``.

    The class prompts' token ids are a buffer; their fixed embeddings (start token, class words,
    end token) are looked up from the frozen ``token_embedding`` on each call rather than cached, so
    they can never go stale when backbone weights are loaded after construction.
    """

    def __init__(self, clip, tokenizer, classnames: tuple[str, ...], n_ctx: int = 4):
        super().__init__()
        width = clip.token_embedding.weight.shape[1]
        self.n_ctx = n_ctx
        self.ctx = nn.Parameter(torch.empty(n_ctx, width, dtype=clip.token_embedding.weight.dtype))
        nn.init.normal_(self.ctx, std=0.02)
        placeholder = " ".join(["X"] * n_ctx)
        tokens = tokenizer([f"{placeholder} {name}." for name in classnames])
        x_id = tokenizer(["X"])[0, 1]
        if not bool((tokens[:, 1:1 + n_ctx] == x_id).all()):
            raise GrmpError("the tokenizer does not map each context placeholder to one token after <start>")
        self.register_buffer("tokens", tokens, persistent=False)

    def forward(self, clip) -> "torch.Tensor":
        """L2-normalised text features ``(n_classes, D)`` with the context spliced in."""
        embedded = clip.token_embedding(self.tokens)
        ctx = self.ctx.to(embedded.dtype).expand(embedded.shape[0], -1, -1)
        prompts = torch.cat([embedded[:, :1], ctx, embedded[:, 1 + self.n_ctx:]], dim=1)
        return encode_text_embeddings(clip, prompts, self.tokens)


class VisualPrompts(nn.Module):
    """VPT-deep prompts: ``shallow`` (P, W) for block 0 and ``deep`` (L-1, P, W) for blocks 1..L-1,
    one shared ``projection`` and ``dropout``, and the ``norm`` applied after the last block."""

    def __init__(self, n_tokens: int, width: int, layers: int, patch_area: int, dropout: float = 0.1):
        super().__init__()
        bound = math.sqrt(6.0 / float(3 * patch_area + width))
        self.shallow = nn.Parameter(torch.empty(n_tokens, width).uniform_(-bound, bound))
        self.deep = nn.Parameter(torch.empty(layers - 1, n_tokens, width).uniform_(-bound, bound))
        self.projection = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(width, eps=1e-6)  # VPT's prompt norm; LayerNorm starts at weight 1, bias 0

    @property
    def n_tokens(self) -> int:
        return self.shallow.shape[0]

    def projected(self) -> "torch.Tensor":
        """All prompts after the projection, without dropout: ``(L, P, W)`` (what export folds)."""
        return self.projection(torch.cat([self.shallow[None], self.deep], dim=0))

    def forward(self, batch: int) -> "torch.Tensor":
        """Prompts for a batch, ``(L, N, P, W)``, with dropout drawn per sample as VPT does."""
        prompts = self.projected()
        return self.dropout(prompts[:, None].expand(-1, batch, -1, -1))


def _attention_parts(attn) -> dict[str, Any]:
    """The pieces of a block's self-attention, from torch's MultiheadAttention or open_clip's Attention."""
    if isinstance(attn, nn.MultiheadAttention):
        if not attn._qkv_same_embed_dim or not attn.batch_first:
            raise GrmpError("plain attention needs a batch-first MultiheadAttention with a packed in_proj")
        return dict(weight=attn.in_proj_weight, bias=attn.in_proj_bias, heads=attn.num_heads,
                    ln_q=nn.Identity(), ln_k=nn.Identity(), head_scale=None, ln_inner=nn.Identity(),
                    out_proj=attn.out_proj)
    if isinstance(attn, open_clip.transformer.Attention):
        if attn.logit_scale is not None:
            raise GrmpError("plain attention does not support scaled cosine attention")
        return dict(weight=attn.in_proj_weight, bias=attn.in_proj_bias, heads=attn.num_heads,
                    ln_q=attn.ln_q, ln_k=attn.ln_k, head_scale=attn.head_scale, ln_inner=attn.ln_inner,
                    out_proj=attn.out_proj)
    raise GrmpError(f"plain attention does not know the attention module {type(attn).__name__}")


def plain_block(block, x: "torch.Tensor") -> "torch.Tensor":
    """One open_clip residual block with attention as explicit MatMul -> Softmax -> MatMul
    (batch-first ``x``), honouring layer scale (``ls_1``/``ls_2``), qk-norm, head scale, the inner
    and post-attention norms (``ln_inner``/``ln_attn``)."""
    parts = _attention_parts(block.attn)
    n, length, width = x.shape
    heads = parts["heads"]
    q, k, v = F.linear(block.ln_1(x), parts["weight"], parts["bias"]).chunk(3, dim=-1)
    q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    q, k = parts["ln_q"](q), parts["ln_k"](k)
    weights = torch.matmul(q * (width // heads) ** -0.5, k.transpose(-1, -2)).softmax(dim=-1)
    out = torch.matmul(weights, v)
    if parts["head_scale"] is not None:
        out = out * parts["head_scale"]
    out = parts["out_proj"](parts["ln_inner"](out.transpose(1, 2).reshape(n, length, width)))
    x = x + block.ls_1(getattr(block, "ln_attn", nn.Identity())(out))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


# --------------------------------------------------------------------------- model

def _check_backbone(clip, name: str) -> None:
    """Refuse a caller-made model the prompted forward cannot run."""
    visual = getattr(clip, "visual", None)
    if not isinstance(clip, open_clip.CLIP) or not isinstance(visual, open_clip.transformer.VisionTransformer):
        raise GrmpError(
            f"backbone {name} is {type(clip).__name__} with a {type(visual).__name__} image tower; GRMP needs "
            f"an open_clip CLIP with a VisionTransformer (e.g. ViT-B-16 or {GRMP_TINY})"
        )
    if visual.attn_pool is not None or visual.pool_type != "tok":
        raise GrmpError(f"backbone {name} does not pool the class token; GRMP needs pool_type 'tok'")
    if not getattr(visual.transformer, "batch_first", True):
        raise GrmpError(f"backbone {name} runs its transformer sequence-first; GRMP needs batch_first")


class GRMPModel(nn.Module):
    """Quality model: ``clip`` (frozen open_clip CLIP), ``prompt_learner`` and ``visual_prompts``."""

    def __init__(self, spec: ModelSpec, clip):
        super().__init__()
        _check_backbone(clip, spec.backbone)
        self.spec = spec
        self.clip = clip
        tokenizer = tokenizer_for(spec.backbone_config)
        self.prompt_learner = PromptLearner(clip, tokenizer, tuple(spec.classnames), spec.n_ctx)
        visual = clip.visual
        patch_h, patch_w = visual.patch_size
        self.visual_prompts = VisualPrompts(
            spec.vpt_tokens, visual.transformer.width, len(visual.transformer.resblocks),
            patch_h * patch_w, spec.vpt_dropout,
        )
        self.register_buffer("scene_tokens", tokenizer(scene_prompts(spec.scene_classes)), persistent=False)
        for p in clip.parameters():
            p.requires_grad_(False)
        self.to(next(clip.parameters()).device)

    @property
    def logit_scale(self) -> float:
        """CLIP's temperature with exp applied (~100 for OpenAI weights); frozen."""
        return float(self.clip.logit_scale.detach().exp())

    def encode_image(self, images: "torch.Tensor", prompts: "torch.Tensor | None" = None,
                     plain_attention: bool = False) -> "torch.Tensor":
        """L2-normalised image features ``(N, D)`` of normalised images ``(N, 3, S, S)``.

        ``prompts`` is a precomputed ``(L, P, W)`` tensor from ``visual_prompts.projected()`` (export
        folds it into constants); None draws them from ``visual_prompts`` (with dropout in training).
        """
        visual = self.clip.visual
        x = visual.conv1(images.to(visual.conv1.weight.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.ln_pre(visual.patch_dropout(x))
        n = x.shape[0]
        if prompts is None:
            prompts = self.visual_prompts(n)
        else:
            prompts = prompts[:, None].expand(-1, n, -1, -1)
        prompts = prompts.to(x.dtype)
        n_prompts = prompts.shape[2]
        blocks = visual.transformer.resblocks
        if prompts.shape[0] != len(blocks):
            raise GrmpError(f"visual prompts cover {prompts.shape[0]} blocks, the backbone has {len(blocks)}")
        for i, block in enumerate(blocks):
            # Block 0 gets the shallow prompts; later blocks drop the previous prompt outputs for their own.
            rest = x[:, 1:] if i == 0 else x[:, 1 + n_prompts:]
            x = torch.cat([x[:, :1], prompts[i], rest], dim=1)
            x = plain_block(block, x) if plain_attention else block(x)
        pooled = visual.ln_post(self.visual_prompts.norm(x[:, 0]))
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return F.normalize(pooled, dim=-1)

    def text_features(self) -> "torch.Tensor":
        """Normalised class text features ``(n_classes, D)``: [high, low] by default."""
        return self.prompt_learner(self.clip)

    def quality_logits(self, features: "torch.Tensor") -> "torch.Tensor":
        """``(N, n_classes)`` logits of already-encoded image features."""
        return self.clip.logit_scale.exp() * features @ self.text_features().t()

    def forward(self, images: "torch.Tensor") -> "torch.Tensor":
        """Quality logits ``(N, 2)``: scaled cosine similarity to [high, low] quality."""
        return self.quality_logits(self.encode_image(images))

    def quality(self, images: "torch.Tensor") -> "torch.Tensor":
        """Predicted quality in (0, 1), higher is better: ``softmax(logits)[:, 0]``."""
        return self(images).softmax(dim=-1)[:, 0]

    def scene_logits(self, images: "torch.Tensor", features: "torch.Tensor | None" = None) -> "torch.Tensor":
        """``(N, n_scenes)`` logits of the model's own image features against its own text encoder on
        the plain :func:`~grmp_edge.train.qgr.scene_prompts` (QGR's semantic reference); pass ``features``
        to reuse an ``encode_image`` result."""
        if features is None:
            features = self.encode_image(images)
        scenes = self.clip.encode_text(self.scene_tokens, normalize=True)
        return self.clip.logit_scale.exp() * features @ scenes.t()

    def prompt_parameters(self) -> list:
        """What meta pre-training trains: the text context and every VPT parameter."""
        return [self.prompt_learner.ctx, *self.visual_prompts.parameters()]

    def finetune_parameters(self, k: int = 4) -> list:
        """What QGR fine-tuning trains: the context, the last ``k`` blocks of both towers, ``ln_post``
        and ``ln_final``."""
        visual = self.clip.visual
        modules = [*visual.transformer.resblocks[-k:], *self.clip.transformer.resblocks[-k:],
                   visual.ln_post, self.clip.ln_final]
        return [self.prompt_learner.ctx, *(p for m in modules for p in m.parameters())]


def build_model(spec: ModelSpec, clip_model=None, device: str = "cpu") -> GRMPModel:
    """A :class:`GRMPModel` for ``spec``; the backbone is ``clip_model`` or made by
    :func:`create_backbone` from ``spec.backbone`` / ``spec.pretrained``. An empty
    ``spec.backbone_config`` is filled from the open_clip registry. Backbone parameters are frozen."""
    if not spec.backbone_config:
        spec = replace(spec, backbone_config=backbone_config(spec.backbone, spec.pretrained))
    size = image_size_of(spec.backbone_config)
    if spec.preprocess.size != size:
        raise GrmpError(
            f"preprocess size {spec.preprocess.size} does not match {spec.backbone}'s {size} px input; "
            f"use PreprocessSpec.clip({size}) (model_spec() fills it)"
        )
    if clip_model is None:
        clip_model = create_backbone(spec.backbone, spec.pretrained, device)
    return GRMPModel(spec, clip_model).to(device)
