"""QGR: the per-tensor rule on hand-made gradients, the losses, and one real step on grmp-tiny."""
from __future__ import annotations

import pytest
import torch

from grmp_edge.train.qgr import gradient_cosine, qgr_combine, quality_loss, semantic_loss

torch.set_num_threads(1)  # the test machines are shared; oversubscribed threads are 5x slower


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_aligned_gradient_loses_lambda_times_its_projection():
    g_q, g_s = t(3.0, 4.0), t(1.0, 0.0)  # <g_q, g_s> = 3 > 0, ||g_s||^2 = 1
    (out,) = qgr_combine([g_q], [g_s], lam=5.0)
    assert torch.allclose(out, t(3.0 - 5.0 * 3.0, 4.0))


def test_lambda_one_removes_the_semantic_component_exactly():
    g_q, g_s = t(2.0, 1.0, -1.0), t(1.0, 1.0, 0.0)
    (out,) = qgr_combine([g_q], [g_s], lam=1.0)
    assert torch.dot(out, g_s).abs() < 1e-6
    assert torch.allclose(out, g_q - 1.5 * g_s)


def test_opposed_gradients_are_left_alone():
    g_q, g_s = t(1.0, 2.0), t(-1.0, -1.0)
    (out,) = qgr_combine([g_q], [g_s], lam=5.0)
    assert torch.equal(out, g_q)


def test_orthogonal_gradients_are_left_alone():
    g_q, g_s = t(0.0, 2.0), t(3.0, 0.0)
    (out,) = qgr_combine([g_q], [g_s], lam=5.0)
    assert torch.equal(out, g_q)


def test_zero_semantic_gradient_keeps_the_quality_gradient():
    g_q = t(1.0, -2.0)
    (out,) = qgr_combine([g_q], [torch.zeros(2)], lam=5.0)
    assert torch.equal(out, g_q)
    assert torch.isfinite(out).all()


def test_lambda_zero_is_plain_fine_tuning():
    g_q, g_s = t(3.0, 4.0), t(1.0, 1.0)
    (out,) = qgr_combine([g_q], [g_s], lam=0.0)
    assert torch.equal(out, g_q)


def test_missing_gradients_count_as_zero():
    g = t(1.0, 1.0)
    out = qgr_combine([None, g, None], [g, None, None], lam=5.0)
    assert torch.equal(out[0], torch.zeros(2))  # no quality gradient: nothing to step, even if g_s exists
    assert torch.equal(out[1], g)  # no semantic gradient: the quality gradient as it is
    assert out[2] is None


def test_rule_is_applied_per_tensor_not_globally():
    # Tensor 0 conflicts, tensor 1 does not, although the concatenated gradients are opposed.
    g_q = [t(1.0), t(1.0)]
    g_s = [t(1.0), t(-10.0)]
    out = qgr_combine(g_q, g_s, lam=2.0)
    assert torch.allclose(out[0], t(-1.0))
    assert torch.equal(out[1], t(1.0))


def test_rule_is_positively_homogeneous_so_loss_scaled_gradients_combine_exactly():
    g_q = [torch.randn(5, 3), torch.randn(7)]
    g_s = [torch.randn(5, 3), torch.randn(7)]
    scale = 2.0 ** 16
    plain = qgr_combine(g_q, g_s, lam=5.0)
    scaled = qgr_combine([g * scale for g in g_q], [g * scale for g in g_s], lam=5.0)
    for a, b in zip(plain, scaled):
        assert torch.allclose(a * scale, b, rtol=1e-5, atol=1e-3)


def test_mismatched_lists_are_refused():
    with pytest.raises(ValueError):
        qgr_combine([t(1.0)], [], lam=1.0)


def test_quality_loss_is_soft_label_bce_of_the_high_quality_probability():
    logits = t(2.0, 0.5, -1.0, 1.0).reshape(2, 2)
    q = t(0.8, 0.1)
    p = logits.softmax(-1)[:, 0]
    expected = -(q * p.log() + (1 - q) * (1 - p).log()).mean()
    assert torch.allclose(quality_loss(logits, q), expected, atol=1e-6)


def test_semantic_loss_is_cross_entropy_to_the_teacher_distribution():
    student = torch.randn(4, 9)
    teacher = torch.softmax(torch.randn(4, 9), -1)
    expected = -(teacher * student.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(semantic_loss(student, teacher), expected)
    # Minimal (= the teacher's entropy) when the student matches the teacher.
    assert semantic_loss(teacher.log(), teacher) < semantic_loss(student, teacher)


def test_gradient_cosine():
    assert gradient_cosine([t(1.0, 0.0)], [t(2.0, 0.0)]) == pytest.approx(1.0)
    assert gradient_cosine([t(1.0, 0.0), None], [t(0.0, 1.0), t(1.0)]) == pytest.approx(0.0)


def test_qgr_step_on_grmp_tiny_writes_the_combined_gradient():
    from grmp_edge.train.meta import freeze_all_but
    from grmp_edge.train.backbones import model_spec
    from grmp_edge.train.model import build_model
    from grmp_edge.train.qgr import SceneTeacher, qgr_step

    torch.manual_seed(0)
    model = build_model(model_spec("grmp-tiny", None, vpt_tokens=2))
    params = model.finetune_parameters(1)
    freeze_all_but(model, params)
    teacher = SceneTeacher(model)
    images, labels = torch.randn(4, 3, 96, 96), torch.tensor([0.0, 0.3, 0.6, 1.0])
    # Reproduce the step by hand (dropout off so both forwards agree).
    model.eval()
    features = model.encode_image(images)
    loss_q = quality_loss(model.quality_logits(features), labels)
    loss_s = semantic_loss(model.scene_logits(images, features=features), teacher(images))
    g_q = torch.autograd.grad(loss_q, params, retain_graph=True, allow_unused=True)
    g_s = torch.autograd.grad(loss_s, params, allow_unused=True)
    expected = qgr_combine(g_q, g_s, lam=5.0)
    before = [p.detach().clone() for p in params]
    teacher_before = [p.clone() for p in teacher.parameters()]
    lr = 0.1
    stats = qgr_step(model, teacher, images, labels, params, torch.optim.SGD(params, lr=lr), lam=5.0)
    assert set(stats) == {"loss_q", "loss_s", "grad_cos"}
    assert stats["loss_q"] == pytest.approx(float(loss_q.detach()), rel=1e-5)
    for p, b, g in zip(params, before, expected):
        step = torch.zeros_like(b) if g is None else g
        assert torch.allclose(p.detach(), b - lr * step, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), teacher_before))
    assert not any(p.requires_grad for p in teacher.parameters())


# The release's nine scene prompts, written out as its code spells them (no full stop, underscore kept).
RELEASE_SCENE_PROMPTS = [
    "a photo of a animal", "a photo of a cityscape", "a photo of a human", "a photo of a indoor",
    "a photo of a landscape", "a photo of a night", "a photo of a plant", "a photo of a still_life",
    "a photo of a others",
]


def test_qgr_step_matches_the_release_computation_written_out_by_hand():
    """Pins one fine-tuning step: the scene prompt strings, the trained tensors, both losses and the
    update, each recomputed here from the release's formulas (not from the package's helpers)."""
    import copy

    from grmp_edge.train.finetune import FinetuneConfig
    from grmp_edge.train.meta import freeze_all_but
    from grmp_edge.train.backbones import model_spec, tokenizer_for
    from grmp_edge.train.model import build_model
    from grmp_edge.train.qgr import SceneTeacher, qgr_step

    torch.manual_seed(1)
    model = build_model(model_spec("grmp-tiny", None, vpt_tokens=2, vpt_dropout=0.0))
    tokens = tokenizer_for(model.spec.backbone_config)(RELEASE_SCENE_PROMPTS)
    assert torch.equal(model.scene_tokens, tokens)

    # What trains: the text context, the last k blocks of both towers, ln_post and ln_final; never the
    # visual prompts, the projections, the embeddings or logit_scale.
    k, n_blocks = 2, len(model.clip.visual.transformer.resblocks)
    last = tuple(str(i) for i in range(n_blocks - k, n_blocks))
    expected_names = {n for n, _ in model.named_parameters()
                      if n == "prompt_learner.ctx" or n.startswith(("clip.visual.ln_post.", "clip.ln_final."))
                      or any(n.startswith(f"{tower}.resblocks.{i}.") for tower in ("clip.visual.transformer",
                                                                                    "clip.transformer") for i in last)}
    params = model.finetune_parameters(k)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in params} == expected_names

    freeze_all_but(model, params)
    reference = copy.deepcopy(model.clip).eval()  # the frozen zero-shot CLIP, taken before the step
    teacher = SceneTeacher(model)
    images, labels = torch.randn(4, 3, 96, 96), torch.tensor([0.0, 0.3, 0.6, 1.0])
    lam, cfg = 5.0, FinetuneConfig()
    lr, wd = 0.5, cfg.weight_decay  # a large lr so the update dominates float noise

    model.eval()
    scale = model.clip.logit_scale.exp()
    features = model.encode_image(images)
    p_high = torch.softmax(scale * features @ model.text_features().t(), dim=-1)[:, 0]
    loss_q = -(labels * p_high.log() + (1 - labels) * (1 - p_high).log()).mean()
    with torch.no_grad():
        ref_img = torch.nn.functional.normalize(reference.encode_image(images), dim=-1)
        ref_txt = torch.nn.functional.normalize(reference.encode_text(tokens), dim=-1)
        target = torch.softmax(scale * ref_img @ ref_txt.t(), dim=-1)
    own_txt = torch.nn.functional.normalize(model.clip.encode_text(tokens), dim=-1)
    loss_s = -(target * torch.log_softmax(scale * features @ own_txt.t(), dim=-1)).sum(-1).mean()
    g_q = torch.autograd.grad(loss_q, params, retain_graph=True, allow_unused=True)
    g_s = torch.autograd.grad(loss_s, params, allow_unused=True)
    expected, projected = [], 0
    for p, gq, gs in zip(params, g_q, g_s):
        gq = torch.zeros_like(p) if gq is None else gq
        gs = torch.zeros_like(p) if gs is None else gs
        dot = float((gq * gs).sum())
        g = gq - lam * dot / float((gs * gs).sum()) * gs if dot > 0 else gq
        projected += dot > 0
        expected.append(p.detach() - lr * (g + wd * p.detach()))
    assert 0 < projected < len(params), "the step must exercise both branches of the rule"

    start = [p.detach().clone() for p in params]
    stats = qgr_step(model, teacher, images, labels, params,
                     torch.optim.SGD(params, lr=lr, weight_decay=wd), lam=lam)
    assert stats["loss_q"] == pytest.approx(float(loss_q.detach()), rel=1e-5)
    assert stats["loss_s"] == pytest.approx(float(loss_s.detach()), rel=1e-5)
    # The criterion: the whole update within 1e-4 (relative) of the release's.
    actual = torch.cat([(p.detach() - s0).flatten() for p, s0 in zip(params, start)])
    wanted = torch.cat([(e - s0).flatten() for e, s0 in zip(expected, start)])
    assert float((actual - wanted).norm() / wanted.norm()) < 1e-4


def test_ranks_combine_the_mean_gradients_as_one_process_would():
    """Two ranks with half a batch each step exactly as one process with the whole batch: the rule is
    not linear, so the ranks must average g_q and g_s before combining them, not after."""
    import copy

    from grmp_edge.train.meta import freeze_all_but
    from grmp_edge.train.backbones import model_spec
    from grmp_edge.train.model import build_model
    from grmp_edge.train.qgr import SceneTeacher, qgr_step

    torch.manual_seed(2)
    model = build_model(model_spec("grmp-tiny", None, vpt_tokens=2, vpt_dropout=0.0)).eval()
    params = model.finetune_parameters(1)
    freeze_all_but(model, params)
    teacher = SceneTeacher(model)
    images, labels = torch.randn(4, 3, 96, 96), torch.tensor([0.0, 1.0, 0.4, 0.7])
    whole = copy.deepcopy(model)
    whole_params = whole.finetune_parameters(1)
    qgr_step(whole, teacher, images, labels, whole_params, torch.optim.SGD(whole_params, lr=0.5), lam=5.0)

    features = model.encode_image(images[2:])
    loss_q = quality_loss(model.quality_logits(features), labels[2:])
    loss_s = semantic_loss(model.scene_logits(images[2:], features=features), teacher(images[2:]))
    other = [torch.zeros_like(p) if g is None else g for p, g in zip(
        params * 2, [*torch.autograd.grad(loss_q, params, retain_graph=True, allow_unused=True),
                     *torch.autograd.grad(loss_s, params, allow_unused=True)])]

    own = []

    def reduce(tensors):  # rank 0's view of a two-rank mean all-reduce; rank 1 holds the second half
        assert len(tensors) == len(other)
        own.extend(t.clone() for t in tensors)
        for t, o in zip(tensors, other):
            t.copy_((t + o) / 2)

    qgr_step(model, teacher, images[:2], labels[:2], params, torch.optim.SGD(params, lr=0.5), lam=5.0, reduce=reduce)
    for a, b in zip(params, whole_params):
        assert torch.allclose(a, b, atol=1e-6)
    # The check can tell the orders apart: combining per rank, then averaging, lands elsewhere.
    n = len(params)
    per_rank = [(x + y) / 2 for x, y in zip(qgr_combine(own[:n], own[n:], 5.0), qgr_combine(other[:n], other[n:], 5.0))]
    averaged = qgr_combine([(x + y) / 2 for x, y in zip(own[:n], other[:n])],
                           [(x + y) / 2 for x, y in zip(own[n:], other[n:])], 5.0)
    assert max(float((x - y).abs().max()) for x, y in zip(per_rank, averaged)) * 0.5 > 1e-4
