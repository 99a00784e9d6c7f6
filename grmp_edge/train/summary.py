"""What a finished training run prints: the test metrics over splits, the kept checkpoint, the next command.

``grmp-edge train`` and the quickstart both print a run this way.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from grmp_edge.train.run import TrainResult


def print_results(result: "TrainResult", console: "Console") -> None:
    """The run's test metrics (or, for a meta-only run, the kept meta epoch), its best checkpoint and
    the export command that uses it."""
    best = result.run_dir / "best"
    if result.summary is not None:
        console.print(metrics_table(result.summary, f"test metrics over {len(result.splits)} split(s)",
                                    result.initial_summary))
    elif result.meta is not None:
        meta = result.meta
        console.print(f"meta pre-training: kept epoch {meta.best_epoch} of {meta.epochs} ({meta.selection})")
    console.print(f"best checkpoint: {best}")
    console.print(f"next: grmp-edge export --checkpoint {best}")


def metrics_table(summary: dict, title: str, initial: dict | None = None) -> "Table":
    """Mean, median and std of each metric over splits, with the mean before fine-tuning when known."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("metric", "mean", "median", "std"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    if initial:
        table.add_column("mean before fine-tuning", justify="right")
    for metric, stats in summary.items():
        row = [metric, f"{stats['mean']:.4f}", f"{stats['median']:.4f}", f"{stats['std']:.4f}"]
        if initial:
            row.append(f"{initial[metric]['mean']:.4f}")
        table.add_row(*row)
    return table
