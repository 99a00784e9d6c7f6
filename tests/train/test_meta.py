"""Meta-prompt pre-training on grmp-tiny (random weights) over a tiny generated corpus."""
from __future__ import annotations

import pytest
import torch

from graded_corpus import make_graded_corpus
from grmp_edge.data.manifest import Record, load_manifest
from grmp_edge.errors import GrmpError
from grmp_edge.train.distributed import setup_runtime
from grmp_edge.train.meta import MetaConfig, hold_out_tasks, meta_train, source_tasks

torch.set_num_threads(1)  # the test machines are shared; oversubscribed threads are 5x slower

KINDS = ("noise", "impulse", "speckle")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """27 images: 3 references x 3 noise kinds (the groups) x 3 levels."""
    return load_manifest(make_graded_corpus(tmp_path_factory.mktemp("meta") / "corpus", refs=3, levels=3, kinds=KINDS))


def tiny_model(seed: int = 0):
    from grmp_edge.train.backbones import model_spec
    from grmp_edge.train.model import build_model

    torch.manual_seed(seed)
    # No prompt dropout: the resume test compares two runs bit for bit.
    return build_model(model_spec("grmp-tiny", None, vpt_tokens=2, vpt_dropout=0.0))


def small(**kw) -> MetaConfig:
    base = dict(epochs=1, support_batch=4, query_batch=2, inner_lr=1e-2, eps=0.5, holdout_fraction=0.0)
    return MetaConfig(**{**base, **kw})


@pytest.mark.parametrize("algo", ["continual", "reptile"])
def test_meta_training_changes_only_the_prompt_parameters(corpus, algo):
    model = tiny_model()
    prompt_ids = {id(p) for p in model.prompt_parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    result = meta_train(model, [corpus], small(algo=algo), setup_runtime("cpu"))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    prompt_names = {names[i] for i in prompt_ids}
    assert changed, "meta training did not move any parameter"
    assert changed <= prompt_names, f"non-prompt tensors changed: {sorted(changed - prompt_names)}"
    assert "prompt_learner.ctx" in changed and "visual_prompts.shallow" in changed
    assert result.selection == "last" and result.best_epoch == 1 and len(result.history) == 1
    assert result.history[0]["loss_support"] > 0


@pytest.mark.parametrize("algo", ["continual", "reptile"])
def test_zero_outer_step_returns_the_meta_weights_not_the_working_copy(corpus, algo):
    model = tiny_model()
    before = [p.detach().clone() for p in model.prompt_parameters()]
    result = meta_train(model, [corpus], small(algo=algo, eps=0.0), setup_runtime("cpu"))
    assert result.history[0]["loss_support"] is not None  # inner steps ran
    assert all(torch.equal(a, b) for a, b in zip(before, model.prompt_parameters()))


def test_held_out_source_tasks_select_the_epoch(corpus):
    model = tiny_model()
    logged = []
    result = meta_train(model, [corpus], small(epochs=2, holdout_fraction=0.34), setup_runtime("cpu"),
                        source_names=["synth"], log=logged.append)
    assert result.selection == "heldout"
    assert len(result.heldout_tasks) == 1 and result.heldout_tasks[0].startswith("synth/")
    assert len(result.train_tasks) == 2 and not set(result.train_tasks) & set(result.heldout_tasks)
    scores = [r["heldout_srcc"] for r in logged]
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
    assert result.best_score == max(scores)
    assert result.best_epoch == 1 + scores.index(max(scores))


def test_resumed_run_matches_an_uninterrupted_one(corpus, tmp_path):
    runtime = setup_runtime("cpu")
    straight = tiny_model()
    meta_train(straight, [corpus], small(epochs=2), runtime)
    resumed = tiny_model()
    state = tmp_path / "meta_state.pt"
    first = meta_train(resumed, [corpus], small(epochs=1), runtime, state_path=state)
    resumed = tiny_model()  # a fresh process: only the state file carries over
    second = meta_train(resumed, [corpus], small(epochs=2), runtime, state_path=state)
    assert [r["epoch"] for r in second.history] == [1, 2]
    assert second.history[0] == first.history[0]
    for a, b in zip(straight.prompt_parameters(), resumed.prompt_parameters()):
        assert torch.equal(a, b)


def test_hold_out_never_takes_all_of_a_source():
    def task_list(n):
        return [[Record(image=f"{g}.png", score=0.0, group=str(g)) for _ in range(2)] for g in range(n)]

    tasks = source_tasks([sum(task_list(3), []), sum(task_list(1), [])])
    train, heldout = hold_out_tasks(tasks, 0.5, seed=0)
    assert [len(t) for t in train] == [1, 1] and len(heldout) == 2
    train, heldout = hold_out_tasks(tasks, 0.0, seed=0)
    assert [len(t) for t in train] == [3, 1] and heldout == []


def test_bad_meta_inputs_are_one_line_errors(corpus):
    lonely = [Record(image=corpus[0].image, score=1.0, group="alone")]
    with pytest.raises(GrmpError, match="fewer than 2 images"):
        source_tasks([corpus + lonely])
    with pytest.raises(GrmpError, match="unknown meta algorithm"):
        MetaConfig(algo="maml").check()


class Recorder:
    """Wraps meta.py's task split and inner step: what ``phi`` was at each task start and after each
    step, and whether each step's Adam was fresh."""

    def __init__(self, monkeypatch, params):
        import grmp_edge.train.meta as meta

        self.events, self.params = [], params
        split, step = meta.split_task, meta.qgr_step

        def split_task(task, *args):
            self.events.append(("task", task.name, self.snapshot()))
            return split(task, *args)

        def qgr_step(model, teacher, images, labels, params, optimizer, **kw):
            fresh = not optimizer.state
            out = step(model, teacher, images, labels, params, optimizer, **kw)
            self.events.append(("step", fresh, self.snapshot()))
            return out

        monkeypatch.setattr(meta, "split_task", split_task)
        monkeypatch.setattr(meta, "qgr_step", qgr_step)

    def snapshot(self):
        return [p.detach().clone() for p in self.params]

    def tasks(self):
        """(name, phi at the task's start, phi at its end, [fresh Adam per step]) in training order."""
        out = []
        for kind, a, b in self.events:
            if kind == "task":
                out.append([a, b, None, []])
            else:
                out[-1][2] = b
                out[-1][3].append(a)
        return out


@pytest.mark.parametrize("algo", ["continual", "continual-reset"])
def test_continual_trajectory_over_two_sources_and_two_epochs(corpus, monkeypatch, algo):
    """The release's algorithm, recomputed from what the inner steps did: phi is never reset (or, for
    continual-reset, restarts at theta after each pass); after each source pass theta moves by eps
    toward the mean of the task-end phis; the first source shares one Adam, later sources get a fresh
    Adam per task; the model ends holding theta."""
    model = tiny_model()
    params = list(model.prompt_parameters())
    theta = [p.detach().clone() for p in params]
    rec = Recorder(monkeypatch, params)
    sources = [[r for r in corpus if r.group != "speckle"], [r for r in corpus if r.group == "speckle"]]
    eps = 0.3
    meta_train(model, sources, small(algo=algo, epochs=2, eps=eps), setup_runtime("cpu"), source_names=["a", "b"])

    tasks = rec.tasks()
    assert [t[0].split("/")[0] for t in tasks] == ["a", "a", "b"] * 2  # two epochs of two source passes
    passes = [tasks[0:2], tasks[2:3], tasks[3:5], tasks[5:6]]
    assert torch.equal(torch.cat([x.flatten() for x in tasks[0][1]]), torch.cat([x.flatten() for x in theta]))
    previous_end = tasks[0][1]
    for k, tasks_of_pass in enumerate(passes):
        for i, (_, start, end, fresh) in enumerate(tasks_of_pass):
            if algo == "continual" or i > 0:
                assert all(torch.equal(a, b) for a, b in zip(start, previous_end)), "phi was reset"
            else:
                assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(start, theta)), "phi did not restart"
            # Source a: one Adam for the whole run; source b: a fresh Adam at each task's first step.
            fresh_first = (k == 0 and i == 0) or k % 2 == 1
            assert fresh == [fresh_first] + [False] * (len(fresh) - 1)
            previous_end = end
        ends = [end for _, _, end, _ in tasks_of_pass]
        theta = [t - eps * torch.stack([t - e[j] for e in ends]).mean(0) for j, t in enumerate(theta)]
        assert not all(torch.allclose(t, e) for t, e in zip(theta, previous_end))
    for p, t in zip(model.prompt_parameters(), theta):
        assert torch.allclose(p, t, atol=1e-6)
