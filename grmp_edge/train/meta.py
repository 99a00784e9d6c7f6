"""Meta-prompt pre-training: first-order meta-learning of the prompt parameters
(``docs/method.md``, "Meta-prompt pre-training").

Tasks are the groups (distortion types) of one or more source manifests. Three algorithms (:data:`ALGORITHMS`), each an inner loop per task
and a rule for the working copy after the outer step:

* ``continual`` - what the GRMP release computes. The working copy ``phi`` is copied from the meta
  weights ``theta`` once, before training, and never reset: not between tasks, not after the outer
  update, not between epochs. Per source pass, for each task (shuffled) the task is re-split 80/20
  into support/query, every support batch is followed by an Adam step on the next query batch, and
  ``theta - phi`` is recorded after the task; after the pass ``theta <- theta - eps * mean(differences)``,
  so ``theta`` trails ``phi``'s continuing trajectory at the outer rate. The inner Adam is the
  release's too: one Adam, made before training, for all tasks of the first source (its state carries
  over between tasks and epochs), and a fresh Adam for every task of each later source.
* ``continual-reset`` - the same, except that ``phi`` restarts from the new ``theta`` after every
  outer update, so the outer step only moves the prompts by ``eps`` times one pass's drift (this
  package's earlier reading of the release, kept for comparison).
* ``reptile`` - textbook Reptile: ``phi <- theta`` (and a fresh Adam) at the start of every task, inner
  steps on the support set only, the query set only scores the adapted prompts; same outer update.

Only ``model.prompt_parameters()`` train; every other tensor keeps its exact value. Model selection
uses held-out *source* tasks (a fraction of each source's groups), never a target dataset, and scores
``theta``; with no held-out tasks the last epoch is kept (a fixed budget). What the model holds on
return, and what a checkpoint saves, is ``theta`` (as the release saves its meta weights), never ``phi``.
State (``theta``, ``phi``, the first source's Adam) is saved after every epoch for resuming.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from grmp_edge.data.manifest import groups
from grmp_edge.errors import GrmpError
from grmp_edge.metrics import MetricError, srcc
from grmp_edge.train.datasets import QualityDataset, ResizedImageCache, make_loader, predict_quality
from grmp_edge.train.distributed import Runtime
from grmp_edge.train.qgr import quality_loss, qgr_step



@dataclass
class MetaConfig:
    """Meta pre-training settings; defaults are the release's (``docs/method.md``, "Meta-prompt pre-training")."""

    algo: str = "continual"
    epochs: int = 50
    support_batch: int = 75
    query_batch: int = 50
    inner_lr: float = 1e-4
    eps: float = 0.01
    support_fraction: float = 0.8
    # Fraction of each source's groups held out to select the best epoch; 0 keeps the last epoch.
    holdout_fraction: float = 0.2
    seed: int = 0
    workers: int = 0

    def check(self) -> None:
        if self.algo not in META_ALGOS:
            raise GrmpError(f"unknown meta algorithm {self.algo!r}; use one of {', '.join(META_ALGOS)}")
        if self.epochs < 0 or self.support_batch < 1 or self.query_batch < 1:
            raise GrmpError("meta epochs must be >= 0 and batch sizes >= 1")
        if not 0 < self.support_fraction < 1:
            raise GrmpError(f"support fraction must be in (0, 1), got {self.support_fraction}")
        if not 0 <= self.holdout_fraction < 1:
            raise GrmpError(f"held-out task fraction must be in [0, 1), got {self.holdout_fraction}")


@dataclass
class Task:
    """One meta task: the records of one group of one source dataset."""

    name: str
    records: list


@dataclass
class MetaResult:
    """What meta pre-training did: the epoch kept, how it was chosen, per-epoch history."""

    epochs: int
    best_epoch: int
    selection: str
    best_score: float | None
    train_tasks: list[str]
    heldout_tasks: list[str]
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def source_tasks(sources: Sequence[Sequence], names: Sequence[str] | None = None) -> list[list[Task]]:
    """Each source's records grouped into tasks; a group with fewer than 2 images is a user error."""
    out = []
    for i, records in enumerate(sources):
        label = names[i] if names else f"source{i}"
        tasks = [Task(f"{label}/{g}", recs) for g, recs in groups(records).items()]
        small = [t.name for t in tasks if len(t.records) < 2]
        if small:
            raise GrmpError(f"meta task(s) with fewer than 2 images (need a support and a query image): "
                            f"{', '.join(small[:5])}")
        out.append(tasks)
    if not any(out):
        raise GrmpError("no meta tasks: the meta-training manifests are empty")
    return out


def hold_out_tasks(sources: list[list[Task]], fraction: float, seed: int) -> tuple[list[list[Task]], list[Task]]:
    """Split each source's tasks into training tasks and held-out selection tasks.

    ``round(fraction * groups)`` tasks per source (at least one when ``fraction > 0``), never all of a
    source's tasks; a single-group source keeps it for training.
    """
    rng = np.random.default_rng([seed, 7])
    train, heldout = [], []
    for tasks in sources:
        n_hold = 0
        if fraction > 0 and len(tasks) >= 2:
            n_hold = min(len(tasks) - 1, max(1, int(round(fraction * len(tasks)))))
        order = rng.permutation(len(tasks))
        hold = set(order[:n_hold].tolist())
        train.append([t for i, t in enumerate(tasks) if i not in hold])
        heldout += [t for i, t in enumerate(tasks) if i in hold]
    return train, heldout


def split_task(task: Task, fraction: float, rng: np.random.Generator) -> tuple[list, list]:
    """Random support/query split of a task (each side gets at least one image)."""
    n = len(task.records)
    n_support = min(n - 1, max(1, int(round(fraction * n))))
    order = rng.permutation(n)
    return [task.records[i] for i in order[:n_support]], [task.records[i] for i in order[n_support:]]


def heldout_score(model, tasks: Sequence[Task], spec, runtime: Runtime, cache: ResizedImageCache,
                  batch_size: int = 64) -> float | None:
    """Mean SRCC of the model's quality vs the scores over the held-out tasks (tasks with constant
    scores or predictions are skipped); None when no task can be scored."""
    values = []
    for task in tasks:
        dataset = QualityDataset(task.records, spec, train=False, cache=cache)
        pred = predict_quality(model, dataset, runtime.device, batch_size, runtime.autocast)
        try:
            values.append(srcc(pred, dataset.scores))
        except MetricError:
            continue
    return float(np.mean(values)) if values else None


def freeze_all_but(model: torch.nn.Module, params: Sequence[torch.nn.Parameter]) -> None:
    """Make ``params`` the only tensors of ``model`` that require gradients."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)


def _assign(params: Sequence[torch.nn.Parameter], values: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)


def _snapshot(params: Sequence[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


class _MetaRun:
    """What meta pre-training carries from task to task and epoch to epoch: the trained prompt
    parameters (holding ``phi``, the working copy), the meta weights ``theta``, the first source's
    inner Adam, the selection so far and the history; and the one inner step every algorithm takes."""

    def __init__(self, model, cfg: MetaConfig, runtime: Runtime):
        self.model, self.cfg, self.runtime = model, cfg, runtime
        self.spec = model.spec.preprocess
        self.params = list(model.prompt_parameters())
        freeze_all_but(model, self.params)
        runtime.broadcast_(self.params)
        self.theta = _snapshot(self.params)
        self.phi = _snapshot(self.params)
        # The release's inner Adam for the first source: made once, before training (later sources and
        # every reptile task get a fresh one per task).
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.inner_lr)
        self.scaler = runtime.grad_scaler()
        self.cache = ResizedImageCache(self.spec)
        self.start, self.best_epoch, self.best_score, self.best_theta = 0, 0, None, _snapshot(self.params)
        self.history: list[dict] = []
        self.support_losses: list[float] = []
        self.query_losses: list[float] = []

    def fresh_adam(self) -> torch.optim.Optimizer:
        """A new inner Adam over the prompt parameters (no state carried over)."""
        return torch.optim.Adam(self.params, lr=self.cfg.inner_lr)

    def step(self, images: torch.Tensor, labels: torch.Tensor, opt: torch.optim.Optimizer) -> float:
        """One inner step on a batch (the quality loss only: QGR's rule with lambda 0); its loss."""
        runtime = self.runtime
        stats = qgr_step(self.model, None, images.to(runtime.device, non_blocking=True),
                         labels.to(runtime.device, non_blocking=True), self.params, opt, lam=0.0,
                         scaler=self.scaler, autocast=runtime.autocast, reduce=runtime.all_reduce_mean_)
        return stats["loss_q"]

    def resume(self, state_path: Path | None) -> None:
        """Continue from the state file of an interrupted run, if there is one."""
        if state_path is None or not Path(state_path).is_file():
            return
        state = torch.load(state_path, map_location=self.runtime.device, weights_only=False)
        self.start, self.best_epoch, self.best_score = state["epoch"], state["best_epoch"], state["best_score"]
        self.history = state["history"]
        # State files from before phi was kept end their epochs with phi == theta (every algorithm then reset it).
        self.theta, self.phi, self.best_theta = state["theta"], state.get("phi", state["theta"]), state["best_theta"]
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def save(self, state_path: Path, epoch: int) -> None:
        """Write what a resumed run needs after ``epoch`` epochs."""
        _save_state(state_path, {
            "epoch": epoch, "best_epoch": self.best_epoch, "best_score": self.best_score,
            "history": self.history, "theta": self.theta, "phi": self.phi, "best_theta": self.best_theta,
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
        })


@dataclass
class _TaskData:
    """One task's support and query batches for this epoch."""

    support: DataLoader
    query: DataLoader


def _continual_task(run: _MetaRun, task: _TaskData, first_source: bool) -> None:
    """The release's inner loop: from wherever ``phi`` is, an Adam step on each support batch, each
    followed by one on the next query batch; the first source's tasks share the run's Adam."""
    opt = run.optimizer if first_source else run.fresh_adam()
    queries = itertools.cycle(task.query)
    for images, labels in task.support:
        run.support_losses.append(run.step(images, labels, opt))
        q_images, q_labels = next(queries)
        run.query_losses.append(run.step(q_images, q_labels, opt))


def _reptile_task(run: _MetaRun, task: _TaskData, first_source: bool) -> None:
    """Textbook Reptile: ``phi`` restarts at ``theta`` with a fresh Adam, steps on the support batches
    only, and the query set only scores the adapted prompts."""
    _assign(run.params, run.theta)
    opt = run.fresh_adam()
    for images, labels in task.support:
        run.support_losses.append(run.step(images, labels, opt))
    run.query_losses.append(_query_loss(run.model, task.query, run.runtime))


@dataclass(frozen=True)
class MetaAlgorithm:
    """How an algorithm adapts the working copy to one task, and whether the working copy restarts
    from the new meta weights after each outer step."""

    adapt: Callable[[_MetaRun, _TaskData, bool], None]
    restart_after_outer_step: bool


ALGORITHMS = {
    "continual": MetaAlgorithm(_continual_task, restart_after_outer_step=False),
    "continual-reset": MetaAlgorithm(_continual_task, restart_after_outer_step=True),
    "reptile": MetaAlgorithm(_reptile_task, restart_after_outer_step=True),
}
META_ALGOS = tuple(ALGORITHMS)  # the release's first: the default


def _task_data(run: _MetaRun, task: Task, epoch: int, rng: np.random.Generator) -> _TaskData:
    """A fresh support/query split of ``task`` and its loaders (seeded from ``rng``)."""
    cfg = run.cfg
    task_seed = int(rng.integers(2**31))
    support, query = split_task(task, cfg.support_fraction, rng)
    support_set = QualityDataset(support, run.spec, train=True, seed=task_seed, cache=run.cache)
    query_set = QualityDataset(query, run.spec, train=False, cache=run.cache)
    support_set.set_epoch(epoch)
    return _TaskData(make_loader(support_set, cfg.support_batch, True, task_seed, run.runtime, cfg.workers),
                     make_loader(query_set, cfg.query_batch, True, task_seed + 1, run.runtime, cfg.workers))


def _source_pass(run: _MetaRun, algorithm: MetaAlgorithm, tasks: list[Task], first_source: bool, epoch: int,
                 rng: np.random.Generator) -> None:
    """Adapt to every task of one source in shuffled order, then the outer step:
    ``theta <- theta - eps * mean(theta - phi at each task's end)``."""
    diffs = [torch.zeros_like(t) for t in run.theta]
    for t_index in rng.permutation(len(tasks)):
        algorithm.adapt(run, _task_data(run, tasks[t_index], epoch, rng), first_source)
        with torch.no_grad():
            for d, t, p in zip(diffs, run.theta, run.params):
                d += t - p
    with torch.no_grad():
        run.theta = [t - run.cfg.eps * d / len(tasks) for t, d in zip(run.theta, diffs)]
    if algorithm.restart_after_outer_step:
        _assign(run.params, run.theta)


def _select(run: _MetaRun, heldout: Sequence[Task], epoch: int) -> float | None:
    """Score ``theta`` on the held-out tasks (rank 0) and keep it if it is the best so far; with no
    held-out tasks every epoch replaces the last. Leaves ``phi`` in the parameters."""
    score = None
    if heldout:
        _assign(run.params, run.theta)
        if run.runtime.is_main:
            score = heldout_score(run.model, heldout, run.spec, run.runtime, run.cache)
        score = run.runtime.broadcast_object(score)
        _assign(run.params, run.phi)
        run.model.train()
    improved = score is not None and (run.best_score is None or score > run.best_score)
    # Until some epoch has a held-out score (all held-out scores constant), keep the latest.
    if not heldout or improved or run.best_score is None:
        run.best_epoch, run.best_score, run.best_theta = epoch + 1, score, [t.clone() for t in run.theta]
    return score


def meta_train(model, sources: Sequence[Sequence], cfg: MetaConfig, runtime: Runtime,
               source_names: Sequence[str] | None = None, state_path: Path | None = None,
               log: Callable[[dict], None] | None = None) -> MetaResult:
    """Meta pre-train ``model``'s prompt parameters on the groups of ``sources`` (lists of records).

    On return the model holds the selected meta weights. ``state_path`` (written by rank 0 after every
    epoch) makes the run resumable: an existing state file is continued from its next epoch.
    ``log`` receives one dict per epoch (rank 0 only).
    """
    cfg.check()
    train_sources, heldout = hold_out_tasks(source_tasks(sources, source_names), cfg.holdout_fraction, cfg.seed)
    algorithm = ALGORITHMS[cfg.algo]
    run = _MetaRun(model, cfg, runtime)
    run.resume(state_path)
    _assign(run.params, run.phi)
    model.train()
    for epoch in range(run.start, cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        # Dropout draws from torch's global generator: seeding it per epoch makes a resumed run
        # repeat exactly what an uninterrupted one does.
        torch.manual_seed(int(rng.integers(2**31)))
        run.support_losses, run.query_losses = [], []
        for s_index, tasks in enumerate(train_sources):
            if tasks:
                _source_pass(run, algorithm, tasks, s_index == 0, epoch, rng)
        run.phi = _snapshot(run.params)
        score = _select(run, heldout, epoch)
        record = {"stage": "meta", "epoch": epoch + 1, "loss_support": _mean(run.support_losses),
                  "loss_query": _mean(run.query_losses), "heldout_srcc": score, "best_epoch": run.best_epoch}
        run.history.append(record)
        if runtime.is_main:
            if log is not None:
                log(record)
            if state_path is not None:
                run.save(state_path, epoch + 1)
        runtime.barrier()
    _assign(run.params, run.best_theta)
    model.eval()
    return MetaResult(epochs=cfg.epochs, best_epoch=run.best_epoch, selection="heldout" if heldout else "last",
                      best_score=run.best_score, train_tasks=[t.name for src in train_sources for t in src],
                      heldout_tasks=[t.name for t in heldout], history=run.history)


@torch.no_grad()
def _query_loss(model, loader, runtime: Runtime) -> float:
    """Mean quality loss of the adapted prompts on a query set (Reptile's task evaluation)."""
    model.eval()
    total, count = 0.0, 0
    for images, labels in loader:
        with runtime.autocast():
            loss = quality_loss(model(images.to(runtime.device)), labels.to(runtime.device))
        total += float(loss) * len(labels)
        count += len(labels)
    model.train()
    return total / max(count, 1)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _save_state(path: Path, state: dict) -> None:
    from grmp_edge.artifacts import atomic_write

    atomic_write(path, lambda tmp: torch.save(state, tmp))
