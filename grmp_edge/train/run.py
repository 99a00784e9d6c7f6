"""The few-shot evaluation protocol (GRMP_SPEC section 4) and the training run that follows it.

One training run (``runs/train/<name>/``):

1. the starting model: a fresh backbone with new prompts, or ``--checkpoint``;
2. meta-prompt pre-training on the groups of the source manifests (``meta/`` checkpoint);
3. for each of R seeded splits of the target manifest into an 80 % pool and a 20 % test part: N
   training images and a separate validation sample are drawn from the pool, the meta model is
   fine-tuned with QGR (selection and lr schedule on the validation sample only) and scored on the
   test part, before (``initial``) and after fine-tuning.

Files: ``config.json`` (the plan, checked on ``--resume``), ``metrics.jsonl`` (one line per epoch),
``state.json`` (finished splits; a resumed run skips them), ``meta_state.pt`` (meta epochs),
``results.json`` (per split and mean/median/std over splits) and ``best/``, the checkpoint of the
split with the best *validation* score. Only rank 0 writes.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from grmp_edge.artifacts import atomic_write_json
from grmp_edge.errors import GrmpError
from grmp_edge.spec import read_json
from grmp_edge.train.datasets import QualityDataset, ResizedImageCache, predict_quality
from grmp_edge.train.finetune import FinetuneConfig
from grmp_edge.train.meta import MetaConfig

STAGES = ("meta", "finetune", "all")


@dataclass
class ProtocolConfig:
    """Few-shot splits: ``splits`` seeded 80/20 pool/test splits, ``shots`` training images from the
    pool, ``val_size`` further pool images for validation (None: ``max(5, shots // 4)``; 0: none, a
    fixed epoch budget)."""

    shots: int = 50
    splits: int = 10
    test_fraction: float = 0.2
    val_size: int | None = None
    seed: int = 0

    @property
    def validation_images(self) -> int:
        return max(5, self.shots // 4) if self.val_size is None else self.val_size


@dataclass
class Split:
    """Indices into the target records of one split."""

    index: int
    train: list[int]
    val: list[int]
    test: list[int]


def make_splits(n_images: int, cfg: ProtocolConfig) -> list[Split]:
    """The protocol's seeded splits of ``n_images`` records; too small a dataset is a user error."""
    if cfg.shots < 2 or cfg.splits < 1:
        raise GrmpError(f"need --shots >= 2 and --splits >= 1 (got {cfg.shots} and {cfg.splits})")
    if not 0 < cfg.test_fraction < 1:
        raise GrmpError(f"test fraction must be in (0, 1), got {cfg.test_fraction}")
    n_test = int(round(cfg.test_fraction * n_images))
    n_val = cfg.validation_images
    if n_val and n_val < 3:
        raise GrmpError(f"a validation set needs at least 3 images for a correlation (got {n_val}); use 0 for none")
    if n_test < 3 or n_images - n_test < cfg.shots + n_val:
        raise GrmpError(
            f"too few images for {cfg.shots} shots: {n_images} images give a pool of {n_images - n_test} "
            f"and a test part of {n_test} (need pool >= {cfg.shots} training + {n_val} validation, test >= 3)"
        )
    splits = []
    for r in range(cfg.splits):
        order = np.random.default_rng([cfg.seed, r]).permutation(n_images).tolist()
        test, pool = order[:n_test], order[n_test:]
        splits.append(Split(r, pool[:cfg.shots], pool[cfg.shots:cfg.shots + n_val], test))
    return splits


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
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainPlan":
        data = dict(data)
        data["meta"] = MetaConfig(**data["meta"])
        data["finetune"] = FinetuneConfig(**data["finetune"])
        data["protocol"] = ProtocolConfig(**data["protocol"])
        return cls(**data)


# Into a log file (not a terminal) rich draws no bar, so a progress line is printed at this period.
PROGRESS_EVERY_S = 30.0


class RunLog:
    """Rank 0's ``metrics.jsonl`` writer and rich progress display; when the output is not a
    terminal, a ``progress:`` line with the stage's ETA every :data:`PROGRESS_EVERY_S` seconds."""

    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled
        self.progress = None
        self.bar = None
        self._stage_started = self._last_step = time.monotonic()
        self._closed = threading.Event()
        self._heartbeat = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn())
            if not self.progress.console.is_terminal:
                self._heartbeat = threading.Thread(target=self._beat, name="progress", daemon=True)

    def __enter__(self) -> "RunLog":
        if self.progress is not None:
            self.progress.start()
        if self._heartbeat is not None:
            self._heartbeat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closed.set()
        if self.progress is not None:
            self.progress.stop()

    def _beat(self) -> None:
        while not self._closed.wait(PROGRESS_EVERY_S):
            self.progress_line()

    def progress_line(self) -> None:
        """Print where the current stage is, its elapsed time and an ETA (fine-tuning may stop early,
        so its ETA is an upper bound)."""
        if self.progress is None or self.bar is None:
            return
        task = self.progress.tasks[self.bar]
        now = time.monotonic()
        elapsed = now - self._stage_started
        if task.completed:
            # The mean step so far, times the steps left, less what the current step has already taken.
            per_step = (self._last_step - self._stage_started) / task.completed
            eta = f"ETA {max(0.0, per_step * (task.total - task.completed) - (now - self._last_step)):.0f} s"
        else:
            eta = "ETA after the first epoch"
        self.progress.console.print(f"progress: {task.description} {task.completed:.0f}/{task.total:.0f}, "
                                    f"{elapsed:.0f} s elapsed, {eta}", highlight=False, soft_wrap=True)

    def start(self, description: str, total: int) -> None:
        """Show a new bar (the previous one stays as a finished line)."""
        if self.progress is not None:
            self.bar = self.progress.add_task(description, total=total, info="")
            self._stage_started = self._last_step = time.monotonic()
            if self._heartbeat is not None:
                self.progress_line()

    def finish(self) -> None:
        if self.progress is not None and self.bar is not None:
            self.progress.update(self.bar, completed=self.progress.tasks[self.bar].total)

    def __call__(self, record: dict, **extra) -> None:
        """Append one metrics line and advance the current bar."""
        if not self.enabled:
            return
        line = {**extra, **record, "time": round(time.time(), 3)}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        if self.progress is not None and self.bar is not None:
            shown = {k: v for k, v in record.items() if k in ("loss_q", "loss_support", "val_srcc", "heldout_srcc", "lr")}
            info = " ".join(f"{k}={v:.4g}" for k, v in shown.items() if isinstance(v, float))
            self.progress.update(self.bar, advance=1, info=info)
            self._last_step = time.monotonic()

    def note(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text)


def build_start_model(plan: TrainPlan, runtime):
    """The run's starting model: ``plan.checkpoint`` or a backbone with freshly initialised prompts."""
    import torch

    from grmp_edge.spec import PreprocessSpec
    from grmp_edge.train.model import build_model, create_backbone, load_checkpoint, model_spec

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


def load_target(plan: TrainPlan) -> list:
    from grmp_edge.data.manifest import load_manifest

    return load_manifest(plan.data) if plan.data else []


def check_plan(plan: TrainPlan) -> None:
    """Fail fast, before a run folder is made: manifests readable, meta tasks and few-shot splits
    possible, backbone name known."""
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.train.meta import source_tasks
    from grmp_edge.train.model import backbone_config

    target = load_target(plan)
    if plan.stage != "meta":
        make_splits(len(target), plan.protocol)
    if plan.stage != "finetune":
        source_tasks([load_manifest(m) for m in plan.meta_data] or [target])
    if not plan.checkpoint:
        backbone_config(plan.backbone, plan.pretrained)


def run_training(plan: TrainPlan, run_dir: Path, runtime, resume: bool = False, echo=print) -> dict:
    """Run ``plan`` in ``run_dir`` (see module doc); returns the results dict (also ``results.json``).

    With ``resume`` an existing run continues: finished meta epochs and splits are not redone; the
    saved ``config.json`` must describe the same plan.
    """
    import torch

    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.metrics import summarize
    from grmp_edge.train.finetune import finetune
    from grmp_edge.train.meta import meta_train
    from grmp_edge.train.model import load_checkpoint, save_checkpoint

    run_dir = Path(run_dir)
    config_path, state_path = run_dir / "config.json", run_dir / "state.json"
    _check_config(plan, config_path, resume, runtime)
    state = read_json(state_path, "run state") if resume and state_path.is_file() else {"splits": {}}
    target = load_target(plan)
    splits = make_splits(len(target), plan.protocol) if plan.stage != "meta" else []
    if plan.quick_trial:
        echo("quick-trial mode: no --meta-data, so the meta tasks are the groups of --data itself "
             "(the target's labels are seen before fine-tuning; not a clean few-shot benchmark)")
    results: dict[str, Any] = {"plan": plan.to_dict(), "quick_trial": plan.quick_trial,
                               "device": str(runtime.device), "precision": runtime.precision,
                               "world_size": runtime.world_size}
    with RunLog(run_dir / "metrics.jsonl", runtime.is_main) as log:
        model = build_start_model(plan, runtime)
        if plan.stage in ("meta", "all"):
            meta_dir = run_dir / "meta"
            if state.get("meta") and (meta_dir / "spec.json").is_file():
                model = load_checkpoint(meta_dir, device=runtime.device)
                log.note(f"resume: meta pre-training already done ({meta_dir})")
            else:
                names = plan.meta_data or [plan.data]
                sources = [load_manifest(m) for m in names]
                log.start("meta pre-training", plan.meta.epochs)
                result = meta_train(model, sources, plan.meta, runtime, source_names=[Path(n).stem for n in names],
                                    state_path=run_dir / "meta_state.pt", log=log)
                log.finish()
                if runtime.is_main:
                    save_checkpoint(model, meta_dir)
                    state["meta"] = result.to_dict()
                    atomic_write_json(state_path, state)
                runtime.barrier()
            results["meta"] = state.get("meta")
            if plan.stage == "meta":
                if runtime.is_main:
                    save_checkpoint(model, run_dir / "best")
                    atomic_write_json(run_dir / "results.json", results)
                return results
        start_state = copy.deepcopy(model.state_dict())
        # One decoded-image cache for every split: the splits reshuffle the same images.
        cache = ResizedImageCache(model.spec.preprocess)
        for split in splits:
            key = str(split.index)
            if key in state["splits"]:
                log.note(f"resume: split {split.index} already done")
                continue
            model.load_state_dict(start_state)
            torch.manual_seed(plan.seed * 1000 + split.index)
            train = [target[i] for i in split.train]
            val = [target[i] for i in split.val]
            test = [target[i] for i in split.test]
            initial = _test_metrics(model, test, runtime, cache)
            cfg = dataclasses.replace(plan.finetune, seed=plan.seed * 1000 + split.index)
            log.start(f"split {split.index + 1}/{len(splits)}", cfg.max_epochs)
            ft = finetune(model, train, val, cfg, runtime, log=lambda r: log(r, split=split.index), cache=cache)
            log.finish()
            final = _test_metrics(model, test, runtime, cache)
            if runtime.is_main:
                val_score = None if ft.best_val is None else _val_score(ft.best_val)
                entry = {"split": split.index, "n_train": len(train), "n_val": len(val), "n_test": len(test),
                         "epochs": ft.epochs, "best_epoch": ft.best_epoch, "stop_reason": ft.stop_reason,
                         "val": ft.best_val, "initial": initial, "test": final}
                best = state.get("best")
                if best is None or (val_score is not None and (best["val_score"] is None or val_score > best["val_score"])):
                    save_checkpoint(model, run_dir / "best")
                    state["best"] = {"split": split.index, "val_score": val_score}
                state["splits"][key] = entry
                atomic_write_json(state_path, state)
                log.note(f"split {split.index}: test SRCC {final['srcc']:.4f} PLCC {final['plcc']:.4f} "
                         f"(before fine-tuning {initial['srcc']:.4f}), best epoch {ft.best_epoch}")
            runtime.barrier()
    if runtime.is_main:
        done = [state["splits"][k] for k in sorted(state["splits"], key=int)]
        results["splits"] = done
        results["best_split"] = state["best"]["split"]
        results["summary"] = summarize([s["test"] for s in done])
        results["initial_summary"] = summarize([s["initial"] for s in done])
        atomic_write_json(run_dir / "results.json", results)
    return runtime.broadcast_object(results)


def _val_score(val: dict) -> float | None:
    return None if val.get("srcc") is None else val["srcc"] + val["plcc"]


def _test_metrics(model, records: Sequence, runtime, cache: ResizedImageCache) -> dict | None:
    """All metrics of the model on the test records (rank 0; None elsewhere)."""
    if not runtime.is_main:
        return None
    from grmp_edge.metrics import evaluate

    dataset = QualityDataset(records, model.spec.preprocess, train=False, cache=cache)
    pred = predict_quality(model, dataset, runtime.device, autocast=runtime.autocast)
    return evaluate(pred, dataset.scores)


def _check_config(plan: TrainPlan, path: Path, resume: bool, runtime) -> None:
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


def evaluate_checkpoint(checkpoint_dir: str | Path, manifest: str | Path, device: str = "auto",
                        batch_size: int = 64, crops: int | None = None) -> dict[str, float]:
    """Score every image of ``manifest`` with a checkpoint as ``crops`` crops averaged (None: the
    checkpoint's crop plan): all metrics plus ``n`` and the ``crops`` used."""
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.metrics import evaluate
    from grmp_edge.train.distributed import resolve_device
    from grmp_edge.train.model import load_checkpoint

    dev = resolve_device(device)
    model = load_checkpoint(checkpoint_dir, device=dev)
    crops, _ = model.spec.preprocess.crop_plan(crops)
    dataset = QualityDataset(load_manifest(manifest), model.spec.preprocess, train=False, crops=crops)
    pred = predict_quality(model, dataset, dev, batch_size)
    return {**evaluate(pred, dataset.scores), "n": len(dataset), "crops": crops}
