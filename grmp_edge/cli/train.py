"""``grmp-edge train`` and ``grmp-edge eval``.

Torch and open_clip are imported inside the command bodies so ``grmp-edge --help`` stays instant.
The same command runs on CPU, one GPU, or several under torchrun::

    torchrun --nproc_per_node 4 -m grmp_edge.cli train --data koniq.csv --meta-data kadid.csv
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from grmp_edge.errors import GrmpError

_HELP_PANEL_META = "Meta pre-training"
_HELP_PANEL_FT = "Fine-tuning and protocol"


def train(
    data: Optional[Path] = typer.Option(None, "--data", help="Target manifest: few-shot splits are drawn from it."),
    meta_data: List[Path] = typer.Option([], "--meta-data", help="Source manifest(s) whose groups are the meta tasks (repeatable). Without it the groups of --data are used (quick-trial mode)."),
    backbone: Optional[str] = typer.Option(None, help="open_clip ViT config name (grmp-tiny for the small offline model) [default: ViT-B-16, or the --checkpoint's]."),
    pretrained: Optional[str] = typer.Option(None, help="open_clip tag, local checkpoint file, 'bootstrap' (grmp-tiny offline weights) or 'none' (random) [default: openai, or the --checkpoint's]."),
    rebuild: bool = typer.Option(False, "--rebuild", help="With --pretrained bootstrap: rebuild the bootstrap weights on this machine (~10 CPU min) into the cache, and use them from then on."),
    stage: Optional[str] = typer.Option(None, help="meta | finetune | all (default: all, or finetune when --checkpoint is given)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Start from this checkpoint folder (e.g. a run's meta/) instead of a fresh backbone."),
    meta_algo: str = typer.Option("continual", help="continual (the release's: the working copy is never reset), continual-reset (restarts it from the meta weights after every outer step) or reptile (textbook).", rich_help_panel=_HELP_PANEL_META),
    meta_epochs: Optional[int] = typer.Option(None, help="Meta pre-training epochs. [default: per backbone, see above]", rich_help_panel=_HELP_PANEL_META),
    meta_lr: Optional[float] = typer.Option(None, help="Inner Adam learning rate. [default: per backbone, see above]", rich_help_panel=_HELP_PANEL_META),
    meta_eps: Optional[float] = typer.Option(None, help="Outer step size: theta <- theta - eps * mean(theta - phi). [default: per backbone, see above]", rich_help_panel=_HELP_PANEL_META),
    support_batch: Optional[int] = typer.Option(None, help="Support batch size. [default: per backbone, see above]", rich_help_panel=_HELP_PANEL_META),
    query_batch: Optional[int] = typer.Option(None, help="Query batch size. [default: per backbone, see above]", rich_help_panel=_HELP_PANEL_META),
    holdout_fraction: float = typer.Option(0.2, help="Fraction of each source's groups held out to pick the meta epoch (0: keep the last).", rich_help_panel=_HELP_PANEL_META),
    lam: float = typer.Option(5.0, "--lam", help="QGR lambda (0 = plain fine-tuning).", rich_help_panel=_HELP_PANEL_FT),
    shots: Optional[int] = typer.Option(None, help="Labelled training images per split. [default: per backbone, see above]", rich_help_panel=_HELP_PANEL_FT),
    splits: Optional[int] = typer.Option(None, help="Random 80/20 pool/test splits. [default: per backbone, see above]", rich_help_panel=_HELP_PANEL_FT),
    val_size: Optional[int] = typer.Option(None, help="Validation images drawn from the pool besides the shots (default max(5, shots/4); 0: fixed epoch budget).", rich_help_panel=_HELP_PANEL_FT),
    epochs: Optional[int] = typer.Option(None, help="Maximum fine-tuning epochs per split. [default: per backbone, see above]", rich_help_panel=_HELP_PANEL_FT),
    lr: Optional[float] = typer.Option(None, help="Fine-tuning SGD learning rate. [default: per backbone, see above]", rich_help_panel=_HELP_PANEL_FT),
    batch_size: int = typer.Option(64, help="Fine-tuning batch (the whole training set when it fits).", rich_help_panel=_HELP_PANEL_FT),
    patience: int = typer.Option(30, help="lr x0.3 once more than this many epochs in a row bring no better validation score.", rich_help_panel=_HELP_PANEL_FT),
    unfreeze_blocks: Optional[int] = typer.Option(None, help="Last blocks of both towers trained in fine-tuning. [default: per backbone, see above]", rich_help_panel=_HELP_PANEL_FT),
    vpt_tokens: Optional[int] = typer.Option(None, help="Visual prompt tokens per block. [default: per backbone, see above]"),
    n_ctx: int = typer.Option(4, help="Learned text context vectors."),
    preprocess: str = typer.Option("clip", help="clip (CLIP's resize/crop/statistics) or release (244/224 square resize, ImageNet statistics)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    precision: str = typer.Option("auto", help="auto (bf16 or fp16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16."),
    workers: int = typer.Option(0, help="DataLoader worker processes."),
    seed: int = typer.Option(0, help="Seed of splits, initialisation and augmentation."),
    name: Optional[str] = typer.Option(None, help="Run folder name under runs/train/ (default exp, exp2, ...)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run --name (or the latest run): finished meta epochs and splits are kept."),
) -> None:
    """Meta-prompt pre-train and QGR fine-tune a GRMP quality model under the few-shot protocol.

    Writes runs/train/<name>/: best/ (checkpoint), meta/, results.json, metrics.jsonl, config.json.

    Options marked "per backbone" default to the paper's ViT-B/16 schedule (50 meta epochs, up to
    2000 fine-tuning epochs, 100 prompt tokens, 10 splits), except on grmp-tiny, which gets its own
    tuned schedule, the quickstart's (a few meta epochs, 16 prompt tokens, one split: minutes on a CPU).
    config.json records the values used.
    """
    options = dict(locals())  # every option by name; _plan reads them
    from rich.console import Console

    from grmp_edge.train.run import run_plan
    from grmp_edge.train.summary import print_results

    result = run_plan(_plan(options), name=name, resume=resume, device=device, precision=precision,
                      rebuild_bootstrap=rebuild, echo=typer.echo)
    if result is not None:  # the other torchrun ranks only help
        print_results(result, Console())


# The options a checkpoint fixes: it is a trained model of one backbone with one prompt size.
MODEL_FIELDS = ("backbone", "pretrained", "vpt_tokens", "n_ctx", "preprocess")
# Each numeric option's range (NaN and infinity are out of every range).
RANGES = {"meta_epochs": (0, 100_000), "meta_lr": (1e-12, 10.0), "meta_eps": (0.0, 1.0),
          "support_batch": (1, 65_536), "query_batch": (1, 65_536), "lam": (0.0, 1e6), "shots": (2, 10_000_000),
          "splits": (1, 10_000), "val_size": (0, 10_000_000), "epochs": (0, 1_000_000), "lr": (1e-12, 10.0),
          "batch_size": (1, 65_536), "patience": (0, 1_000_000), "unfreeze_blocks": (0, 1000),
          "vpt_tokens": (0, 10_000), "n_ctx": (1, 64), "workers": (0, 256), "seed": (0, 2**32 - 1)}


def _plan(options: dict):
    """The :class:`~grmp_edge.train.run.TrainPlan` the options describe: a checkpoint fixes the model
    options, the backbone's schedule fills the schedule options left out, every number is range-checked."""
    from dataclasses import fields

    from grmp_edge.limits import check_range
    from grmp_edge.train.run import TrainPlan
    from grmp_edge.train.schedules import Schedule, default_schedule

    checkpoint = options["checkpoint"]
    if checkpoint is not None and not (checkpoint / "spec.json").is_file():
        raise GrmpError(f"--checkpoint {checkpoint} is not a checkpoint folder (no spec.json)")
    o = {**options, **_model_fields(checkpoint, **{k: options[k] for k in MODEL_FIELDS})}
    for key, value in default_schedule(o["backbone"]).to_dict().items():
        o[key] = value if o[key] is None else o[key]
    for key, (low, high) in RANGES.items():
        check_range(f"--{key.replace('_', '-')}", o[key], low, high)
    pretrained = o["pretrained"]
    schedule = Schedule(**{f.name: o[f.name] for f in fields(Schedule)})
    return TrainPlan.scheduled(
        schedule, data=str(o["data"]) if o["data"] else None, meta_data=[str(m) for m in o["meta_data"]],
        seed=o["seed"], workers=o["workers"], stage=o["stage"] or ("finetune" if checkpoint else "all"),
        backbone=o["backbone"], pretrained=None if pretrained is None or pretrained.lower() == "none" else pretrained,
        checkpoint=str(checkpoint) if checkpoint else None, n_ctx=o["n_ctx"], preprocess=o["preprocess"],
        meta_options={"algo": o["meta_algo"], "holdout_fraction": o["holdout_fraction"]},
        finetune_options={"lam": o["lam"], "batch_size": o["batch_size"], "patience": o["patience"]},
        protocol_options={"val_size": o["val_size"]},
    )


def _model_fields(checkpoint: Optional[Path], **given) -> dict:
    """backbone, pretrained, vpt_tokens, n_ctx and preprocess: the checkpoint's when one is given (a
    value given that differs is refused), else the options (None: the backbone's default)."""
    if checkpoint is None:
        return {**given, "backbone": given["backbone"] or "ViT-B-16", "pretrained": given["pretrained"] or "openai"}
    from grmp_edge.spec import ModelSpec

    spec = ModelSpec.load(checkpoint / "spec.json")
    saved = {"backbone": spec.backbone, "pretrained": spec.pretrained, "vpt_tokens": spec.vpt_tokens,
             "n_ctx": spec.n_ctx, "preprocess": spec.preprocess.policy}
    defaults = {"n_ctx": 4, "preprocess": "clip"}  # the options' own defaults, which are not a choice
    for key, value in given.items():
        if value is not None and value != defaults.get(key) and value != saved[key]:
            raise GrmpError(f"--{key.replace('_', '-')} {value} differs from the checkpoint's {saved[key]} "
                            f"({checkpoint}); a checkpoint fixes its model, drop the option")
    return saved


def evaluate(
    data: Path = typer.Option(..., "--data", help="Manifest to score."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint folder (default: the latest train run's best/)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    crops: Optional[int] = typer.Option(None, "--crops", help="Score each image as N native-resolution crops averaged, as `run --crops N` does; 1 = the resized centre crop. Default: the checkpoint's crop plan."),
) -> None:
    """Score a manifest with a checkpoint and print SRCC, KRCC, PLCC (raw and logistic) and RMSE."""
    from rich.console import Console
    from rich.table import Table

    from grmp_edge.limits import check_range
    from grmp_edge.runs import latest_run
    from grmp_edge.spec import MAX_CROPS
    from grmp_edge.train.evaluate import evaluate_checkpoint

    check_range("--batch-size", batch_size, 1, 65_536)
    check_range("--crops", crops, 1, MAX_CROPS)
    if checkpoint is None:
        checkpoint = latest_run("train", "best/spec.json") / "best"
    scored = evaluate_checkpoint(checkpoint, data, device=device, batch_size=batch_size, crops=crops)
    how = "the checkpoint's crop plan" if crops is None else "--crops"
    table = Table(title=f"{checkpoint} on {data} ({scored.n} images, {scored.crops} crop(s) each: {how})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for metric, value in scored.metrics.items():
        table.add_row(metric, f"{value:.4f}")
    Console().print(table)
