"""How the quickstart's training settings were chosen: a few settings side by side on its own corpus.

    python benchmarks/quickstart_settings.py     # writes benchmarks/quickstart_settings.{json,md} (~20 min)
    python benchmarks/quickstart_settings.py --rows "quickstart (chosen)" "quickstart, continual-reset"

Every row trains as the quickstart does (the full preset's schedule, with the row's own settings in
place of the preset's; each row records the equivalent ``grmp-edge train`` command) on the
quickstart's corpus (resumed: a rerun keeps finished rows and their timings are then not training
times), then scores the held-out photos with :func:`grmp_edge.quickstart.level_table` after meta
pre-training (``meta/``) and after fine-tuning (``best/``): mean per-type SRCC of score vs level,
pooled over photos / per photo, over all 25 types. The row ``cli defaults`` restores the paper's
schedule (the CLI's defaults for other backbones) for the optimiser settings the preset changes.

``--score-on validation`` scores the bootstrap build's 8 validation photos instead (evenly spaced
CBSD68 photos, ``scripts/build_bootstrap.py --val-count 8``; never trained on, and neither the 42
held-out Kodak24 + McMaster photos nor the quickstart's own test photos), all 25 types x 5 levels: a
schedule can be chosen there without looking at either test. Each stage's entry then also counts the
types whose mean level curve rises by more than 0.02 from one level to the next.
"""
from __future__ import annotations

import argparse
import os
import shlex
import time
from dataclasses import replace
from pathlib import Path

# The paper's values of the optimiser settings grmp-tiny's schedule changes.
PAPER_OPTIMISER = ("meta_lr", "meta_eps", "support_batch", "query_batch", "unfreeze_blocks", "lr")


def rows() -> dict[str, dict]:
    """Row name -> settings in place of the full preset's: schedule fields (``grmp-edge train`` option
    names), or ``meta_algo``."""
    from grmp_edge.train.schedules import PAPER_SCHEDULE

    paper = {k: PAPER_SCHEDULE.to_dict()[k] for k in PAPER_OPTIMISER}
    return {
        "quickstart (chosen)": {},
        "quickstart, release outer step 0.01": {"meta_eps": 0.01},
        "quickstart, outer step 0.1": {"meta_eps": 0.1},
        "quickstart, continual-reset": {"meta_algo": "continual-reset"},
        "cli defaults": paper,
        "cli defaults, last block": {**paper, "unfreeze_blocks": 1},
        "quickstart meta, 4 blocks at lr 1e-3": {"unfreeze_blocks": 4, "lr": 1e-3},
        "quickstart meta, last block at lr 1e-3": {"lr": 1e-3},
        "quickstart, 2 blocks": {"unfreeze_blocks": 2},
        "quickstart, 8 meta epochs": {"meta_epochs": 8},
        "quickstart, 300 epochs": {"epochs": 300},
        "quickstart, 40 epochs": {"epochs": 40},
        "quickstart, prompts only": {"unfreeze_blocks": 0},
    }


def train_row(name: str, settings: dict, corpus, preset, runs: Path, console, scored_on: Path) -> dict:
    """Train one row (resumed if it was started before) and score it on the manifest ``scored_on``
    after each stage."""
    from grmp_edge.quickstart import level_table, schedule_args, train_model, train_plan
    from grmp_edge.runs import slug

    run = slug(name)
    schedule_settings = {k: v for k, v in settings.items() if k != "meta_algo"}
    algo = {"algo": settings["meta_algo"]} if "meta_algo" in settings else {}
    plan = train_plan(corpus, replace(preset.schedule, **schedule_settings), **algo)
    options = schedule_args(settings)
    argv = ["train", "--data", str(corpus.fewshot), "--meta-data", str(corpus.meta), "--backbone", "grmp-tiny",
            "--pretrained", "bootstrap", *preset.train_args(), *options, "--name", run, "--resume"]
    start = time.perf_counter()  # a finished row (interrupted benchmark) is resumed, not retrained
    trained = train_model(plan, resume=True, console=console, name=run)
    row = {"row": name, "options": options, "command": "grmp-edge " + shlex.join(argv),
           "train_s": round(time.perf_counter() - start, 1), "meta_heldout_srcc": trained.meta.best_score,
           "test_srcc": {"before": trained.initial_summary["srcc"]["mean"], "after": trained.summary["srcc"]["mean"]},
           "test_plcc": {"before": trained.initial_summary["plcc"]["mean"], "after": trained.summary["plcc"]["mean"]}}
    for stage in ("meta", "best"):
        table = level_table(runs / "train" / run / stage, scored_on)
        row[f"level_srcc_after_{stage}"] = table.all_mean
        row[f"rising_after_{stage}"] = table.rising
    return row


VALIDATION_COUNT = 8  # the bootstrap build's --val-count


def validation_manifest(workers: int = 2) -> Path:
    """The graded corpus (25 types x 5 levels, 256 px, seed 0) of the bootstrap build's validation
    photos, ``VALIDATION_COUNT`` evenly spaced CBSD68 photos: the folder ``scripts/build_bootstrap.py``
    synthesises them into (its default ``--work``), reused when the build made it."""
    from grmp_edge.artifacts import cache_root
    from grmp_edge.data.distortions import DISTORTIONS
    from grmp_edge.data.pristine import evenly_spaced, shared_pristine
    from grmp_edge.data.synth import MANIFEST_NAME, synthesize
    from grmp_edge.images import list_images

    photos = evenly_spaced(list_images(shared_pristine("cbsd68")), VALIDATION_COUNT)
    folder = cache_root() / "bootstrap" / "corpus" / f"val-cbsd68-{len(photos)}"
    if (folder / MANIFEST_NAME).is_file():
        return folder / MANIFEST_NAME
    return synthesize(photos, folder, types=list(DISTORTIONS), seed=0, workers=workers)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/quickstart-settings"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/quickstart_settings.json"))
    parser.add_argument("--rows", nargs="+", metavar="ROW", help="run only these rows (names as in the table)")
    parser.add_argument("--score-on", choices=("heldout", "validation"), default="heldout",
                        help="score the quickstart's held-out photos or the bootstrap build's validation photos")
    args = parser.parse_args(argv)
    chosen = rows()
    unknown = sorted(set(args.rows or ()) - set(chosen))
    if unknown:
        raise SystemExit(f"unknown row(s): {', '.join(unknown)}; rows are: {', '.join(chosen)}")
    if args.rows:
        chosen = {name: settings for name, settings in chosen.items() if name in args.rows}
    os.environ["GRMP_EDGE_RUNS"] = str(args.runs)

    from rich.console import Console

    from grmp_edge.artifacts import atomic_write_json, atomic_write_text, sha256_file
    from grmp_edge.quickstart import NAME, PRESETS, Steps, make_corpus
    from grmp_edge.train.bootstrap import bootstrap_weights

    console = Console()
    preset = PRESETS["full"]
    root = args.runs / NAME
    corpus = make_corpus(root, preset, Steps(root, force=False), console)
    scored_on = corpus.heldout if args.score_on == "heldout" else validation_manifest()
    results = []
    for name, settings in chosen.items():
        console.rule(name)
        results.append(train_row(name, settings, corpus, preset, args.runs, console, scored_on))
        console.print(results[-1])
    out = {"command": ("python benchmarks/quickstart_settings.py " + shlex.join(argv)).rstrip(),
           "bootstrap_sha256": sha256_file(bootstrap_weights()), "preset": preset.train_args(),
           "scored_on": args.score_on, "rows": results}
    atomic_write_json(args.out, out)
    atomic_write_text(args.out.with_suffix(".md"), markdown(out))
    console.print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


SCORED_ON = {"heldout": "the quickstart's held-out photos",
             "validation": "the bootstrap build's 8 CBSD68 validation photos"}


def markdown(out: dict) -> str:
    """The table for the README."""
    fmt = lambda d: f"{d['pooled']:.3f} / {d['per_photo']:.3f}"  # noqa: E731
    scored_on = out.get("scored_on", "heldout")
    rising = all("rising_after_best" in r for r in out["rows"])
    lines = [f"### Quickstart training settings (per-type level SRCC on {SCORED_ON[scored_on]}, pooled / per "
             "photo, all 25 types)", "",
             f"`{out['command']}`; quickstart preset options: `{' '.join(out['preset'])}`", "",
             "| row | options added | meta: held-out source SRCC | after meta | after fine-tuning "
             "| few-shot test SRCC before -> after | train s |"
             + (" rising curves after fine-tuning |" if rising else ""),
             "|---|---|---:|---:|---:|---:|---:|" + ("---|" if rising else "")]
    for r in out["rows"]:
        lines.append(f"| {r['row']} | `{' '.join(r['options']) or '-'}` | {r['meta_heldout_srcc']:.3f} "
                     f"| {fmt(r['level_srcc_after_meta'])} | "
                     f"{fmt(r['level_srcc_after_best'])} | {r['test_srcc']['before']:.3f} -> {r['test_srcc']['after']:.3f} "
                     f"| {r['train_s']:.0f} |" + (f" {', '.join(r['rising_after_best']) or '-'} |" if rising else ""))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from grmp_edge.errors import run_script

    run_script(main)
