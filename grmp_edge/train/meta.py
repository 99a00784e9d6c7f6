"""Meta-prompt pre-training (GRMP_SPEC section 2): first-order meta-learning of the prompt parameters.

Tasks are the groups (distortion types) of one or more source manifests. Three algorithms:

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

from grmp_edge.data.manifest import groups
from grmp_edge.errors import GrmpError
from grmp_edge.metrics import MetricError, srcc
from grmp_edge.train.datasets import QualityDataset, ResizedImageCache, make_loader, predict_quality
from grmp_edge.train.distributed import Runtime
from grmp_edge.train.qgr import quality_loss, qgr_step

META_ALGOS = ("continual", "continual-reset", "reptile")


@dataclass
class MetaConfig:
    """Meta pre-training settings; defaults are the release's (section 2)."""

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


def meta_train(model, sources: Sequence[Sequence], cfg: MetaConfig, runtime: Runtime,
               source_names: Sequence[str] | None = None, state_path: Path | None = None,
               log: Callable[[dict], None] | None = None) -> MetaResult:
    """Meta pre-train ``model``'s prompt parameters on the groups of ``sources`` (lists of records).

    On return the model holds the selected meta weights. ``state_path`` (written by rank 0 after every
    epoch) makes the run resumable: an existing state file is continued from its next epoch.
    ``log`` receives one dict per epoch (rank 0 only).
    """
    cfg.check()
    spec = model.spec.preprocess
    tasks = source_tasks(sources, source_names)
    train_sources, heldout = hold_out_tasks(tasks, cfg.holdout_fraction, cfg.seed)
    selection = "heldout" if heldout else "last"
    params = list(model.prompt_parameters())
    freeze_all_but(model, params)
    runtime.broadcast_(params)
    theta = _snapshot(params)
    phi = _snapshot(params)
    # The release's inner Adam for the first source: made once, before training (later sources and
    # every reptile task get a fresh one per task).
    optimizer = torch.optim.Adam(params, lr=cfg.inner_lr)
    scaler = runtime.grad_scaler()
    cache = ResizedImageCache(spec)
    start, best_epoch, best_score, best_theta, history = 0, 0, None, _snapshot(params), []
    if state_path is not None and Path(state_path).is_file():
        state = torch.load(state_path, map_location=runtime.device, weights_only=False)
        start, best_epoch, best_score, history = state["epoch"], state["best_epoch"], state["best_score"], state["history"]
        # State files from before phi was kept end their epochs with phi == theta (every algorithm then reset it).
        theta, phi, best_theta = state["theta"], state.get("phi", state["theta"]), state["best_theta"]
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    _assign(params, phi)

    def step(images: torch.Tensor, labels: torch.Tensor, opt: torch.optim.Optimizer) -> float:
        stats = qgr_step(model, None, images.to(runtime.device, non_blocking=True),
                         labels.to(runtime.device, non_blocking=True), params, opt, lam=0.0,
                         scaler=scaler, autocast=runtime.autocast, reduce=runtime.all_reduce_mean_)
        return stats["loss_q"]

    model.train()
    for epoch in range(start, cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        # Dropout draws from torch's global generator: seeding it per epoch makes a resumed run
        # repeat exactly what an uninterrupted one does.
        torch.manual_seed(int(rng.integers(2**31)))
        losses, query_losses = [], []
        for s_index, src_tasks in enumerate(train_sources):
            if not src_tasks:
                continue
            diffs = [torch.zeros_like(t) for t in theta]
            for t_index in rng.permutation(len(src_tasks)):
                task = src_tasks[t_index]
                task_seed = int(rng.integers(2**31))
                support, query = split_task(task, cfg.support_fraction, rng)
                support_set = QualityDataset(support, spec, train=True, seed=task_seed, cache=cache)
                query_set = QualityDataset(query, spec, train=False, cache=cache)
                support_set.set_epoch(epoch)
                support_loader = make_loader(support_set, cfg.support_batch, True, task_seed, runtime, cfg.workers)
                query_loader = make_loader(query_set, cfg.query_batch, True, task_seed + 1, runtime, cfg.workers)
                if cfg.algo == "reptile":
                    _assign(params, theta)
                    opt = torch.optim.Adam(params, lr=cfg.inner_lr)
                    for images, labels in support_loader:
                        losses.append(step(images, labels, opt))
                    query_losses.append(_query_loss(model, query_loader, runtime))
                else:
                    opt = optimizer if s_index == 0 else torch.optim.Adam(params, lr=cfg.inner_lr)
                    queries = itertools.cycle(query_loader)
                    for images, labels in support_loader:
                        losses.append(step(images, labels, opt))
                        q_images, q_labels = next(queries)
                        query_losses.append(step(q_images, q_labels, opt))
                with torch.no_grad():
                    for d, t, p in zip(diffs, theta, params):
                        d += t - p
            with torch.no_grad():
                theta = [t - cfg.eps * d / len(src_tasks) for t, d in zip(theta, diffs)]
            if cfg.algo != "continual":
                _assign(params, theta)
        phi = _snapshot(params)
        score = None
        if heldout:
            _assign(params, theta)
            if runtime.is_main:
                score = heldout_score(model, heldout, spec, runtime, cache)
            score = runtime.broadcast_object(score)
            _assign(params, phi)
            model.train()
        improved = score is not None and (best_score is None or score > best_score)
        # Until some epoch has a held-out score (all held-out scores constant), keep the latest.
        if selection == "last" or improved or best_score is None:
            best_epoch, best_score, best_theta = epoch + 1, score, [t.clone() for t in theta]
        record = {"stage": "meta", "epoch": epoch + 1, "loss_support": _mean(losses),
                  "loss_query": _mean(query_losses), "heldout_srcc": score, "best_epoch": best_epoch}
        history.append(record)
        if runtime.is_main:
            if log is not None:
                log(record)
            if state_path is not None:
                _save_state(state_path, {
                    "epoch": epoch + 1, "best_epoch": best_epoch, "best_score": best_score,
                    "history": history, "theta": theta, "phi": phi, "best_theta": best_theta,
                    "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                })
        runtime.barrier()
    _assign(params, best_theta)
    model.eval()
    return MetaResult(epochs=cfg.epochs, best_epoch=best_epoch, selection=selection, best_score=best_score,
                      train_tasks=[t.name for src in train_sources for t in src],
                      heldout_tasks=[t.name for t in heldout], history=history)


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
