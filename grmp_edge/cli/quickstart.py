"""``grmp-edge quickstart``: the whole pipeline offline (:func:`grmp_edge.quickstart.run_quickstart`)."""
from __future__ import annotations

import typer


def quickstart(
    fast: bool = typer.Option(False, "--fast", help="A smoke run in under 2 minutes (fewer photos, levels, epochs)."),
    force: bool = typer.Option(False, "--force", help="Start over instead of reusing finished steps."),
) -> None:
    """Run the whole pipeline offline on an embedded default: corpus, train, export, bench, run."""
    from rich.console import Console
    from rich.rule import Rule

    from grmp_edge.quickstart import run_quickstart

    console = Console()
    result = run_quickstart(fast=fast, force=force, console=console)
    console.print(Rule("done"))
    _print_result(result, console)


def _print_result(result, console) -> None:
    """Time per step, the level table's means, where everything is, and what to try next."""
    folders, means = result.folders, result.levels.means()
    console.print(f"finished in {result.seconds / 60:.1f} min ("
                  + ", ".join(f"{k} {v / 60:.1f}" for k, v in result.step_seconds.items()) + " min)")
    console.print("per-type SRCC of score vs level on held-out photos, mean over types (pooled / per photo): "
                  + "; ".join(f"{label} {means[k]['pooled']:.3f} / {means[k]['per_photo']:.3f}"
                              for k, label in (("all", "all 25 types"), ("seen", "seen in meta"),
                                               ("unseen", "few-shot types"))))
    console.print(
        f"  corpus      {folders.root / 'corpus'}\n"
        f"  checkpoint  {folders.checkpoint}\n"
        f"  bundle      {folders.export}\n"
        f"  report      {folders.bench / 'report.md'}  (+ accuracy_vs_latency.png)\n"
        f"  video run   {folders.run / 'frames.jsonl'}  (+ score_timeline.png)\n"
        f"  per-type    {folders.root / 'level_srcc.json'}  (timings and means: summary.json)\n\n"
        "Next:\n"
        "  train on your data with a real CLIP:  grmp-edge data import koniq LABELS --images DIR --out koniq.csv\n"
        "                                        grmp-edge train --data koniq.csv --meta-data kadid.csv "
        "--backbone ViT-B-16 --pretrained openai\n"
        "  export and build engines on a Jetson: grmp-edge export --precision all, copy the bundle, then on the "
        "device: grmp-edge export --engine --onnx BUNDLE/model_fp16.onnx\n"
        "  score a camera:                      grmp-edge run --camera 0   (or --source csi://0)"
    )
