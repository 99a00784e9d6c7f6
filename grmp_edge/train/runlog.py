"""A training run's progress: ``metrics.jsonl`` and what the user sees while it trains.

On a terminal a rich progress bar per stage; into a log file (no terminal, e.g. a batch job) rich draws
nothing, so a ``progress:`` line with the stage's elapsed time and ETA is printed periodically instead.
Only rank 0 logs.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path


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
        """Show the current bar as complete (fine-tuning may stop before its last epoch)."""
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
        """Print a line above the bars (nothing on the ranks that do not log)."""
        if self.progress is not None:
            self.progress.console.print(text)
