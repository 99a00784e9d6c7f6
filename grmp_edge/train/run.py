"""One training run: meta-prompt pre-training, then QGR fine-tuning on each few-shot split.

The library API behind ``grmp-edge train``: :func:`run_plan` takes a :class:`TrainPlan`, picks the
run folder (``runs/train/<name>/``), sets up the device (torchrun included) and returns a
:class:`TrainResult`; :func:`run_training` is the same run in a given folder on a given runtime.

1. the starting model: a fresh backbone with new prompts, or ``plan.checkpoint``;
2. meta-prompt pre-training on the groups of the source manifests (``meta/`` checkpoint);
3. for each split of :func:`~grmp_edge.train.protocol.make_splits`: the meta model is fine-tuned with
   QGR on the split's training images (selection and lr schedule on its validation images only) and
   scored on its test part, before (``initial``) and after fine-tuning.

Files: ``config.json`` (the plan, checked on resume), ``metrics.jsonl`` (one line per epoch),
``state.json`` (finished splits; a resumed run skips them), ``meta_state.pt`` (meta epochs),
``results.json`` (per split and mean/median/std over splits) and ``best/``, the checkpoint of the
split with the best *validation* score. Only rank 0 writes.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from grmp_edge.artifacts import atomic_write_json
from grmp_edge.errors import GrmpError
from grmp_edge.metrics import summarize
from grmp_edge.spec import read_json
from grmp_edge.train.datasets import ResizedImageCache
from grmp_edge.train.evaluate import score_records
from grmp_edge.train.finetune import FinetuneConfig
from grmp_edge.train.meta import MetaConfig, MetaResult
from grmp_edge.train.protocol import ProtocolConfig, Split, make_splits
from grmp_edge.train.runlog import RunLog
from grmp_edge.train.schedules import Schedule

STAGES = ("meta", "finetune", "all")
# What a failed run folder holds once it has finished work that a resume would keep.
RESUMABLE = ("state.json", "meta_state.pt", "meta", "best")


@dataclass
class TrainPlan:
    """Everything one training run does; saved as ``config.json``."""

    data: str | None
    meta_data: list[str] = field(default_factory=list)
    stage: str = "all"
    backbone: str = "ViT-B-16"
    pretrained: str | None = "openai"
    checkpoint: str | None = None
    n_ctx: int = 4
    vpt_tokens: int = 100
    preprocess: str = "clip"
    seed: int = 0
    meta: MetaConfig = field(default_factory=MetaConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise GrmpError(f"unknown stage {self.stage!r}; use one of {', '.join(STAGES)}")
        if self.stage != "meta" and not self.data:
            raise GrmpError("fine-tuning needs a target manifest (--data)")
        if self.stage != "finetune" and not (self.meta_data or self.data):
            raise GrmpError("meta pre-training needs --meta-data (or --data for a quick trial)")

    @property
    def quick_trial(self) -> bool:
        """Meta tasks taken from the target's own groups: fine for a smoke test, not a clean benchmark."""
        return self.stage != "finetune" and not self.meta_data

    def to_dict(self) -> dict[str, Any]:
        """``config.json``."""
        return asdict(self)

    @classmethod
    def scheduled(cls, schedule: Schedule, data: str | None, meta_data: Sequence[str] = (), seed: int = 0,
                  workers: int = 0, meta_options: dict | None = None, finetune_options: dict | None = None,
                  protocol_options: dict | None = None, **fields: Any) -> "TrainPlan":
        """A plan that trains on ``schedule`` (e.g. :func:`~grmp_edge.train.schedules.default_schedule`
        of its backbone) with one ``seed`` and ``workers`` for every stage. ``*_options`` set the
        stages' other settings (``meta_options={"algo": "reptile"}``), ``fields`` the plan's own
        (``backbone``, ``pretrained``, ``stage``, ``checkpoint``, ``n_ctx``, ``preprocess``)."""
        return cls(
            data=data, meta_data=list(meta_data), seed=seed, vpt_tokens=schedule.vpt_tokens, **fields,
            meta=MetaConfig(epochs=schedule.meta_epochs, support_batch=schedule.support_batch,
                            query_batch=schedule.query_batch, inner_lr=schedule.meta_lr, eps=schedule.meta_eps,
                            seed=seed, workers=workers, **(meta_options or {})),
            finetune=FinetuneConfig(lr=schedule.lr, max_epochs=schedule.epochs, unfreeze_blocks=schedule.unfreeze_blocks,
                                    seed=seed, workers=workers, **(finetune_options or {})),
            protocol=ProtocolConfig(shots=schedule.shots, splits=schedule.splits, seed=seed, **(protocol_options or {})),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainPlan":
        """The plan a ``config.json`` describes."""
        data = dict(data)
        data["meta"] = MetaConfig(**data["meta"])
        data["finetune"] = FinetuneConfig(**data["finetune"])
        data["protocol"] = ProtocolConfig(**data["protocol"])
        return cls(**data)


@dataclass
class SplitResult:
    """One split: its sizes, how fine-tuning went, its validation metrics and the test metrics
    before (``initial``) and after fine-tuning."""

    split: int
    n_train: int
    n_val: int
    n_test: int
    epochs: int
    best_epoch: int
    stop_reason: str
    val: dict | None
    initial: dict | None
    test: dict | None

    @property
    def val_score(self) -> float | None:
        """SRCC + PLCC on validation, what picks the run's best split; None without validation."""
        return None if self.val is None or self.val.get("srcc") is None else self.val["srcc"] + self.val["plcc"]

    def to_dict(self) -> dict:
        """One entry of ``results.json``'s ``splits`` (and of ``state.json``)."""
        return asdict(self)


@dataclass
class TrainResult:
    """What a run did; :meth:`to_dict` is ``results.json``. The fine-tuning fields stay None in a
    meta-only run, and ``meta`` in a fine-tuning-only run."""

    plan: TrainPlan
    device: str
    precision: str
    world_size: int
    run_dir: Path
    meta: MetaResult | None = None
    splits: list[SplitResult] | None = None
    best_split: int | None = None
    summary: dict | None = None
    initial_summary: dict | None = None

    @property
    def quick_trial(self) -> bool:
        """Whether the meta tasks were the target's own groups (see :attr:`TrainPlan.quick_trial`)."""
        return self.plan.quick_trial

    def to_dict(self) -> dict[str, Any]:
        """``results.json``."""
        out: dict[str, Any] = {"plan": self.plan.to_dict(), "quick_trial": self.quick_trial, "device": self.device,
                               "precision": self.precision, "world_size": self.world_size}
        if self.plan.stage != "finetune":
            out["meta"] = None if self.meta is None else self.meta.to_dict()
        if self.splits is not None:
            out.update(splits=[s.to_dict() for s in self.splits], best_split=self.best_split,
                       summary=self.summary, initial_summary=self.initial_summary)
        return out


@dataclass
class RunState:
    """``state.json``: the meta stage's result once done, each finished split, and the best split
    so far (``{"split": i, "val_score": s}``)."""

    path: Path
    splits: dict[str, SplitResult] = field(default_factory=dict)
    meta: MetaResult | None = None
    best: dict | None = None

    @classmethod
    def open(cls, path: Path, resume: bool) -> "RunState":
        """The saved state when resuming a run that has one, else an empty one."""
        if not (resume and path.is_file()):
            return cls(path)
        data = read_json(path, "run state")
        meta = data.get("meta")
        return cls(path, {k: SplitResult(**v) for k, v in data["splits"].items()},
                   None if meta is None else MetaResult(**meta), data.get("best"))

    def save(self) -> None:
        """Write ``state.json`` atomically (rank 0 only calls it)."""
        data: dict[str, Any] = {"splits": {k: s.to_dict() for k, s in self.splits.items()}}
        if self.meta is not None:
            data["meta"] = self.meta.to_dict()
        if self.best is not None:
            data["best"] = self.best
        atomic_write_json(self.path, data)

    def keep_if_best(self, result: SplitResult) -> bool:
        """Whether ``result`` is the best split so far by validation score (the first split always
        is; without validation scores the first one stays); records it as such."""
        score, best = result.val_score, self.best
        if best is None or (score is not None and (best["val_score"] is None or score > best["val_score"])):
            self.best = {"split": result.split, "val_score": score}
            return True
        return False


def load_target(plan: TrainPlan) -> list:
    """The target manifest's records (none for a meta-only run without ``--data``)."""
    from grmp_edge.data.manifest import load_manifest

    return load_manifest(plan.data) if plan.data else []


def check_plan(plan: TrainPlan) -> None:
    """Fail fast, before a run folder is made: settings in range, manifests readable, meta tasks and
    few-shot splits possible, backbone name known."""
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.train.backbones import backbone_config
    from grmp_edge.train.meta import source_tasks

    plan.meta.check()
    plan.finetune.check()
    target = load_target(plan)
    if plan.stage != "meta":
        make_splits(len(target), plan.protocol)
    if plan.stage != "finetune":
        source_tasks([load_manifest(m) for m in plan.meta_data] or [target])
    if not plan.checkpoint:
        backbone_config(plan.backbone, plan.pretrained)


def build_start_model(plan: TrainPlan, runtime):
    """The run's starting model: ``plan.checkpoint`` or a backbone with freshly initialised prompts."""
    import torch

    from grmp_edge.spec import PreprocessSpec
    from grmp_edge.train.backbones import model_spec
    from grmp_edge.train.checkpoint import load_checkpoint
    from grmp_edge.train.model import build_model
    from grmp_edge.train.pretrained import create_backbone

    if plan.checkpoint:
        model = load_checkpoint(plan.checkpoint, device=runtime.device)
    else:
        spec = model_spec(plan.backbone, plan.pretrained, n_ctx=plan.n_ctx, vpt_tokens=plan.vpt_tokens)
        if plan.preprocess != "clip":
            spec.preprocess = PreprocessSpec.named(plan.preprocess, spec.preprocess.size)
        torch.manual_seed(plan.seed)
        clip = create_backbone(plan.backbone, plan.pretrained, device=runtime.device)
        model = build_model(spec, clip_model=clip, device=runtime.device)
    # Every rank starts from rank 0's weights (random parts included).
    runtime.broadcast_(list(model.state_dict().values()))
    return model


def pretrain_prompts(plan: TrainPlan, model, run_dir: Path, state: RunState, runtime, log: RunLog):
    """Stage 1: meta-prompt pre-training into ``meta/``, or the ``meta/`` a resumed run already has.
    Returns the meta model."""
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.train.checkpoint import load_checkpoint, save_checkpoint
    from grmp_edge.train.meta import meta_train

    meta_dir = run_dir / "meta"
    if state.meta is not None and (meta_dir / "spec.json").is_file():
        log.note(f"resume: meta pre-training already done ({meta_dir})")
        return load_checkpoint(meta_dir, device=runtime.device)
    names = plan.meta_data or [plan.data]
    sources = [load_manifest(m) for m in names]
    log.start("meta pre-training", plan.meta.epochs)
    result = meta_train(model, sources, plan.meta, runtime, source_names=[Path(n).stem for n in names],
                        state_path=run_dir / "meta_state.pt", log=log)
    log.finish()
    if runtime.is_main:
        save_checkpoint(model, meta_dir)
        state.meta = result
        state.save()
    runtime.barrier()
    return model


def finetune_split(plan: TrainPlan, model, target: list, split: Split, n_splits: int, runtime, log: RunLog,
                   cache: ResizedImageCache) -> SplitResult:
    """Stage 2 on one split: test metrics before, QGR fine-tuning, test metrics after."""
    import torch

    from grmp_edge.train.finetune import finetune

    seed = plan.seed * 1000 + split.index
    torch.manual_seed(seed)
    train, val, test = ([target[i] for i in part] for part in (split.train, split.val, split.test))
    initial = score_records(model, test, runtime, cache)
    cfg = dataclasses.replace(plan.finetune, seed=seed)
    log.start(f"split {split.index + 1}/{n_splits}", cfg.max_epochs)
    ft = finetune(model, train, val, cfg, runtime, log=lambda r: log(r, split=split.index), cache=cache)
    log.finish()
    return SplitResult(split=split.index, n_train=len(train), n_val=len(val), n_test=len(test), epochs=ft.epochs,
                       best_epoch=ft.best_epoch, stop_reason=ft.stop_reason, val=ft.best_val, initial=initial,
                       test=score_records(model, test, runtime, cache))


def finetune_splits(plan: TrainPlan, model, target: list, splits: list[Split], run_dir: Path, state: RunState,
                    runtime, log: RunLog) -> None:
    """Stage 2: every split not finished yet, each from the same meta weights; the split with the
    best validation score is saved as ``best/``."""
    from grmp_edge.train.checkpoint import save_checkpoint

    start_state = copy.deepcopy(model.state_dict())
    # One decoded-image cache for every split: the splits reshuffle the same images.
    cache = ResizedImageCache(model.spec.preprocess)
    for split in splits:
        if str(split.index) in state.splits:
            log.note(f"resume: split {split.index} already done")
            continue
        model.load_state_dict(start_state)
        result = finetune_split(plan, model, target, split, len(splits), runtime, log, cache)
        if runtime.is_main:
            if state.keep_if_best(result):
                save_checkpoint(model, run_dir / "best")
            state.splits[str(split.index)] = result
            state.save()
            log.note(f"split {split.index}: test SRCC {result.test['srcc']:.4f} PLCC {result.test['plcc']:.4f} "
                     f"(before fine-tuning {result.initial['srcc']:.4f}), best epoch {result.best_epoch}")
        runtime.barrier()


def _summarize_splits(result: TrainResult, state: RunState) -> None:
    """The finished splits in order, the best one and the metrics' mean/median/std over them."""
    result.splits = [state.splits[k] for k in sorted(state.splits, key=int)]
    result.best_split = state.best["split"]
    result.summary = summarize([s.test for s in result.splits])
    result.initial_summary = summarize([s.initial for s in result.splits])


def run_training(plan: TrainPlan, run_dir: Path, runtime, resume: bool = False,
                 echo: Callable[[str], Any] = print) -> TrainResult:
    """Run ``plan`` in ``run_dir`` on ``runtime`` (see module doc); the result is also ``results.json``.

    With ``resume`` an existing run continues: finished meta epochs and splits are not redone; the
    saved ``config.json`` must describe the same plan.
    """
    from grmp_edge.train.checkpoint import save_checkpoint

    run_dir = Path(run_dir)
    _write_or_check_config(plan, run_dir / "config.json", resume, runtime)
    state = RunState.open(run_dir / "state.json", resume)
    target = load_target(plan)
    splits = make_splits(len(target), plan.protocol) if plan.stage != "meta" else []
    if plan.quick_trial:
        echo("quick-trial mode: no --meta-data, so the meta tasks are the groups of --data itself "
             "(the target's labels are seen before fine-tuning; not a clean few-shot benchmark)")
    result = TrainResult(plan, str(runtime.device), runtime.precision, runtime.world_size, run_dir)
    with RunLog(run_dir / "metrics.jsonl", runtime.is_main) as log:
        model = build_start_model(plan, runtime)
        if plan.stage != "finetune":
            model = pretrain_prompts(plan, model, run_dir, state, runtime, log)
            result.meta = state.meta
        if plan.stage != "meta":
            finetune_splits(plan, model, target, splits, run_dir, state, runtime, log)
    if runtime.is_main:
        if plan.stage == "meta":
            save_checkpoint(model, run_dir / "best")  # a meta-only run's best model is the meta model
        else:
            _summarize_splits(result, state)
        atomic_write_json(run_dir / "results.json", result.to_dict())
    return runtime.broadcast_object(result)


def run_plan(plan: TrainPlan, name: str | None = None, resume: bool = False, device: str = "auto",
             precision: str = "auto", rebuild_bootstrap: bool = False,
             echo: Callable[[str], Any] = print) -> TrainResult | None:
    """Check ``plan``, then run it in ``runs/train/<name>/`` (default ``exp``, ``exp2``, ...) on
    ``device`` (auto | cpu | cuda) in ``precision`` (auto | fp32 | bf16 | fp16), under torchrun too.

    With ``resume`` the run ``name`` (default: the latest) continues. ``rebuild_bootstrap`` (with
    ``plan.pretrained == "bootstrap"``) first rebuilds the bootstrap weights on this machine. A new run that fails before it
    has anything to resume leaves no folder behind to block its name. Returns the result on rank 0
    and None on the other ranks, which only help; ``echo`` prints on rank 0 only.
    """
    from grmp_edge.runs import discard_on_failure
    from grmp_edge.train.distributed import setup_runtime

    check_plan(plan)
    if rebuild_bootstrap:
        if plan.pretrained != "bootstrap":
            raise GrmpError("--rebuild rebuilds the offline bootstrap weights: use it with --pretrained bootstrap")
        from grmp_edge.train.bootstrap import bootstrap_weights

        bootstrap_weights(rebuild=True)
    runtime = setup_runtime(device, precision)
    try:
        run_dir = Path(runtime.broadcast_object(_run_dir(name, resume) if runtime.is_main else None))
        say = echo if runtime.is_main else (lambda *_: None)
        say(f"run folder: {run_dir}  (device {runtime.device}, {runtime.precision}, "
            f"{runtime.world_size} process{'es' if runtime.world_size > 1 else ''})")
        fresh = not resume and runtime.is_main
        with discard_on_failure(run_dir, keep=lambda path: not fresh or _resumable(path)):
            result = run_training(plan, run_dir, runtime, resume=resume, echo=say)
        return result if runtime.is_main else None
    finally:
        runtime.close()


def _resumable(run_dir: Path) -> bool:
    """Whether a failed run folder holds finished work that a resume would keep."""
    return any((run_dir / name).exists() for name in RESUMABLE)


def _run_dir(name: str | None, resume: bool) -> str:
    from grmp_edge.runs import latest_run, new_run_dir, slug

    if resume and not name:
        return str(latest_run("train", "config.json"))
    if resume and name:
        return str(new_run_dir("train", slug(name), exist_ok=True))
    return str(new_run_dir("train", slug(name) if name else None,
                           remedy="pick another --name, or pass --resume to continue it"))


def _write_or_check_config(plan: TrainPlan, path: Path, resume: bool, runtime) -> None:
    """Write ``config.json`` for a new run; on resume, refuse a plan that differs from the saved one."""
    current = json.loads(json.dumps(plan.to_dict()))
    if resume and path.is_file():
        saved, now = _flatten(read_json(path, "run config")), _flatten(current)
        differs = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if differs:
            raise GrmpError(f"cannot resume {path.parent}: it was started with different settings "
                            f"({', '.join(differs)}); start a new run with another --name")
        return
    if runtime.is_main:
        atomic_write_json(path, current)


def _flatten(data: dict, prefix: str = "") -> dict:
    """Nested dicts as one level of dotted keys (``meta.epochs``), for naming what differs."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out
