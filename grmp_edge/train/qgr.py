"""Quality-aware gradient regularisation (QGR, ``docs/method.md``, "QGR fine-tuning"): the losses and the update rule.

Fine-tuning computes two gradients for the same parameter list: ``g_q`` of the quality loss (soft-label
BCE) and ``g_s`` of a semantic loss (cross-entropy of the model's scene distribution to a frozen
zero-shot CLIP's). Per tensor, the part of ``g_q`` along ``g_s`` is removed (``lam = 1``) or reversed
(``lam > 1``) when the two agree, so the quality step does not also fit image content. Only the
direction of the semantic loss is used; it is never minimised.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Callable, ContextManager, Sequence

import torch
import torch.nn.functional as F

from grmp_edge.errors import GrmpError


def scene_prompts(scene_classes) -> list[str]:
    """QGR's scene prompts, worded as the release writes them: ``a photo of a still_life`` (no full
    stop, the underscore kept). The wording sets the semantic loss's direction: ``a photo of a still
    life.`` moved one measured QGR step 9 % away from the release's."""
    return [f"a photo of a {c}" for c in scene_classes]


def quality_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft-label BCE between ``softmax(logits)[:, 0]`` and targets in [0, 1].

    ``softmax([a, b])[0] = sigmoid(a - b)``, so the BCE is taken on the logit difference, which is
    the numerically stable form of ``-mean(q log p + (1 - q) log(1 - p))``.
    """
    return F.binary_cross_entropy_with_logits((logits[:, 0] - logits[:, 1]).float(), target.float())


def semantic_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's scene distribution to the teacher's (temperature 1), batch mean."""
    return -(teacher_probs.float() * F.log_softmax(student_logits.float(), dim=-1)).sum(dim=-1).mean()


def qgr_combine(
    g_q: Sequence[torch.Tensor | None], g_s: Sequence[torch.Tensor | None], lam: float
) -> list[torch.Tensor | None]:
    """Apply the QGR rule tensor by tensor.

    With ``d = <g_q, g_s>``: ``g = g_q - lam * (d / ||g_s||^2) * g_s`` when ``d > 0`` and
    ``||g_s|| > 0``, else ``g = g_q``. A missing (None) gradient counts as zero; an entry where both are
    missing stays None (nothing to step). The rule is positively homogeneous, ``combine(c g_q, c g_s) =
    c combine(g_q, g_s)`` for ``c > 0``, which is what lets fp16 loss-scaled gradients be combined before
    unscaling. Computed without host synchronisation (``torch.where`` instead of ``if``).
    """
    if len(g_q) != len(g_s):
        raise ValueError(f"gradient lists differ in length ({len(g_q)} vs {len(g_s)})")
    out: list[torch.Tensor | None] = []
    for gq, gs in zip(g_q, g_s):
        if gq is None and gs is None:
            out.append(None)
            continue
        if gs is None or lam == 0:
            out.append(gq)
            continue
        if gq is None:
            # A zero quality gradient has no positive overlap with anything: the result is zero.
            out.append(torch.zeros_like(gs))
            continue
        dot = (gq.float() * gs.float()).sum()
        norm2 = gs.float().pow(2).sum()
        conflict = (dot > 0) & (norm2 > 0)
        coef = torch.where(conflict, dot / torch.where(norm2 > 0, norm2, torch.ones_like(norm2)),
                           torch.zeros_like(dot))
        out.append((gq.float() - lam * coef * gs.float()).to(gq.dtype))
    return out


def gradient_cosine(g_q: Sequence[torch.Tensor | None], g_s: Sequence[torch.Tensor | None]) -> float:
    """Cosine between the concatenated quality and semantic gradients (a training diagnostic)."""
    pairs = [(gq.float(), gs.float()) for gq, gs in zip(g_q, g_s) if gq is not None and gs is not None]
    if not pairs:
        return 0.0
    dot = torch.stack([(a * b).sum() for a, b in pairs]).sum()
    norm_q = torch.stack([g.float().pow(2).sum() for g in g_q if g is not None]).sum()
    norm_s = torch.stack([g.float().pow(2).sum() for g in g_s if g is not None]).sum()
    denom = (norm_q * norm_s).sqrt()
    return float(dot / denom) if float(denom) > 0 else 0.0


class SceneTeacher(torch.nn.Module):
    """The frozen semantic reference: a zero-shot CLIP (no prompts) over the spec's scene prompts.

    Built from a deep copy of the model's plain open_clip backbone at the start of fine-tuning, so it
    keeps the backbone's weights while the model moves away from them. :meth:`forward` returns the
    teacher's scene distribution (rows sum to 1), without gradients.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.clip = copy.deepcopy(model.clip).eval()
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.logit_scale = float(model.logit_scale)
        with torch.no_grad():
            text = self.clip.encode_text(model.scene_tokens)
        self.register_buffer("text_features", F.normalize(text.float(), dim=-1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = F.normalize(self.clip.encode_image(images).float(), dim=-1)
        return torch.softmax(self.logit_scale * image @ self.text_features.T, dim=-1)


def qgr_step(
    model: torch.nn.Module,
    teacher: Callable[[torch.Tensor], torch.Tensor] | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    params: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    lam: float,
    scaler: "torch.amp.GradScaler | None" = None,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    reduce: Callable[[list[torch.Tensor]], None] | None = None,
) -> dict[str, float]:
    """One QGR update of ``params``: ``g_q``, ``g_s`` by ``torch.autograd.grad``, combine, step.

    ``teacher`` gives the frozen scene distribution; with ``lam == 0`` (plain fine-tuning) it is not
    called and ``g_s`` is not computed. ``scaler`` (fp16 only) scales both losses by the same factor;
    by homogeneity of :func:`qgr_combine` the scaled gradients are combined as they are and the
    scaler unscales the result once, checks it for overflow and skips the step if needed.
    ``reduce`` all-reduces (mean) ``g_q`` and ``g_s`` across ranks, in place, before they are combined.
    Returns the losses and the quality/semantic gradient cosine.
    """
    params = list(params)
    use_semantic = lam != 0
    if use_semantic and teacher is None:
        raise GrmpError("QGR with lambda != 0 needs the frozen scene teacher")
    with autocast():
        # One image forward serves both losses; retain_graph keeps it for the second gradient.
        features = model.encode_image(images)
        loss_q = quality_loss(model.quality_logits(features), labels)
        if use_semantic:
            loss_s = semantic_loss(model.scene_logits(images, features=features), teacher(images))
    scale = (lambda loss: scaler.scale(loss)) if scaler is not None else (lambda loss: loss)

    def gradient(loss: torch.Tensor, retain_graph: bool) -> list[torch.Tensor]:
        # A missing gradient is a zero one (the rule treats both alike), so every trainable tensor
        # gets one: SGD's weight decay treats all alike and every rank reduces the same tensor list.
        grads = torch.autograd.grad(scale(loss), params, retain_graph=retain_graph, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]

    g_q = gradient(loss_q, retain_graph=use_semantic)
    g_s = gradient(loss_s, retain_graph=False) if use_semantic else []
    if reduce is not None:
        # The rule is not linear: it must see the whole batch's gradients (as one process, or the
        # release's DataParallel, does), not each rank's share, so both are averaged before combining.
        reduce(g_q + g_s)
    grads = qgr_combine(g_q, g_s, lam) if use_semantic else g_q
    for p, g in zip(params, grads):
        p.grad = g
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    stats = {"loss_q": float(loss_q.detach())}
    if use_semantic:
        stats["loss_s"] = float(loss_s.detach())
        stats["grad_cos"] = gradient_cosine(g_q, g_s)
    return stats
