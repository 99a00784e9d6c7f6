"""How the quickstart's training settings were chosen: a few settings side by side on its own corpus.

    python benchmarks/quickstart_settings.py     # writes benchmarks/quickstart_settings.{json,md} (~20 min)
    python benchmarks/quickstart_settings.py --rows "quickstart (chosen)" "quickstart, continual-reset"

Every row runs the quickstart's ``grmp-edge train`` command (the full preset's options, then the
row's own options appended; the last value of a repeated option wins) on the quickstart's corpus
(``--resume``: a rerun keeps finished rows and their timings are then not training times),
then scores the held-out photos with :func:`grmp_edge.quickstart.level_table` after meta
pre-training (``meta/``) and after fine-tuning (``best/``): mean per-type SRCC of score vs level,
pooled over photos / per photo, over all 25 types. The row ``cli defaults`` restores the CLI's
defaults (the paper's settings) for every option the preset changes.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import fields
from pathlib import Path


def cli_defaults() -> list[str]:
    """The CLI's own values for every training option the quickstart preset overrides."""
    from grmp_edge.train.finetune import FinetuneConfig
    from grmp_edge.train.meta import MetaConfig

    meta, ft = {f.name: f.default for f in fields(MetaConfig)}, {f.name: f.default for f in fields(FinetuneConfig)}
    return ["--meta-lr", f"{meta['inner_lr']:g}", "--meta-eps", f"{meta['eps']:g}",
            "--support-batch", str(meta["support_batch"]), "--query-batch", str(meta["query_batch"]),
            "--unfreeze-blocks", str(ft["unfreeze_blocks"]), "--lr", f"{ft['lr']:g}"]


def rows() -> dict[str, list[str]]:
    """Row name -> options appended to the full preset's ``grmp-edge train`` options."""
    default = cli_defaults()
    return {
        "quickstart (chosen)": [],
        "quickstart, release outer step 0.01": ["--meta-eps", "0.01"],
        "quickstart, outer step 0.1": ["--meta-eps", "0.1"],
        "quickstart, continual-reset": ["--meta-algo", "continual-reset"],
        "cli defaults": default,
        "cli defaults, last block": default + ["--unfreeze-blocks", "1"],
        "quickstart meta, 4 blocks at lr 1e-3": ["--unfreeze-blocks", "4", "--lr", "1e-3"],
        "quickstart meta, last block at lr 1e-3": ["--lr", "1e-3"],
        "quickstart, 2 blocks": ["--unfreeze-blocks", "2"],
        "quickstart, 8 meta epochs": ["--meta-epochs", "8"],
        "quickstart, 300 epochs": ["--epochs", "300"],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/quickstart-settings"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/quickstart_settings.json"))
    parser.add_argument("--rows", nargs="+", metavar="ROW", help="run only these rows (names as in the table)")
    args = parser.parse_args(argv)
    chosen = rows()
    unknown = sorted(set(args.rows or ()) - set(chosen))
    if unknown:
        raise SystemExit(f"unknown row(s): {', '.join(unknown)}; rows are: {', '.join(chosen)}")
    if args.rows:
        chosen = {name: extra for name, extra in chosen.items() if name in args.rows}
    os.environ["GRMP_EDGE_RUNS"] = str(args.runs)

    from rich.console import Console

    from grmp_edge.artifacts import atomic_write_json, atomic_write_text, sha256_file
    from grmp_edge.cli import main as cli
    from grmp_edge.quickstart import NAME, PRESETS, Steps, _corpus, level_table
    from grmp_edge.runs import slug
    from grmp_edge.train.bootstrap import bootstrap_weights

    console = Console()
    preset = PRESETS["full"]
    root = args.runs / NAME
    corpus = _corpus(root, preset, Steps(root, force=False), console)
    results = []
    for name, extra in chosen.items():
        run = slug(name)
        argv_train = ["train", "--data", str(corpus["fewshot"]), "--meta-data", str(corpus["meta"]), "--backbone",
                      "grmp-tiny", "--pretrained", "bootstrap", *preset.train_args(), *extra, "--name", run, "--resume"]
        console.rule(name)
        start = time.perf_counter()  # a finished row (interrupted benchmark) is resumed, not retrained
        if cli(argv_train) != 0:
            raise SystemExit(f"{name}: grmp-edge train failed")
        seconds = time.perf_counter() - start
        run_dir = args.runs / "train" / run
        trained = json.loads((run_dir / "results.json").read_text())
        row = {"row": name, "options": extra, "command": "grmp-edge " + shlex.join(argv_train),
               "train_s": round(seconds, 1), "meta_heldout_srcc": trained["meta"]["best_score"],
               "test_srcc": {"before": trained["initial_summary"]["srcc"]["mean"],
                             "after": trained["summary"]["srcc"]["mean"]},
               "test_plcc": {"before": trained["initial_summary"]["plcc"]["mean"],
                             "after": trained["summary"]["plcc"]["mean"]}}
        for stage in ("meta", "best"):
            levels = level_table(run_dir / stage, corpus["heldout"])
            row[f"level_srcc_after_{stage}"] = levels["all_mean"]
        results.append(row)
        console.print(row)
    out = {"command": ("python benchmarks/quickstart_settings.py " + shlex.join(argv)).rstrip(),
           "bootstrap_sha256": sha256_file(bootstrap_weights()), "preset": preset.train_args(), "rows": results}
    atomic_write_json(args.out, out)
    atomic_write_text(args.out.with_suffix(".md"), markdown(out))
    console.print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


def markdown(out: dict) -> str:
    """The table for the README."""
    fmt = lambda d: f"{d['pooled']:.3f} / {d['per_photo']:.3f}"  # noqa: E731
    lines = ["### Quickstart training settings (held-out per-type SRCC, pooled / per photo, all 25 types)", "",
             f"`{out['command']}`; quickstart preset options: `{' '.join(out['preset'])}`", "",
             "| row | options added | meta: held-out source SRCC | after meta | after fine-tuning "
             "| few-shot test SRCC before -> after | train s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in out["rows"]:
        lines.append(f"| {r['row']} | `{' '.join(r['options']) or '-'}` | {r['meta_heldout_srcc']:.3f} "
                     f"| {fmt(r['level_srcc_after_meta'])} | "
                     f"{fmt(r['level_srcc_after_best'])} | {r['test_srcc']['before']:.3f} -> {r['test_srcc']['after']:.3f} "
                     f"| {r['train_s']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
