"""A run's progress lines in a log file."""
from __future__ import annotations

import time

from grmp_edge.train import runlog


def test_a_log_file_gets_progress_lines_with_an_eta(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runlog, "PROGRESS_EVERY_S", 0.05)
    with runlog.RunLog(tmp_path / "metrics.jsonl", enabled=True) as log:  # pytest's capture is no terminal
        log.start("meta pre-training", 4)
        time.sleep(0.1)
        log({"loss_q": 0.5})
        time.sleep(0.2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("progress: ")]
    assert lines[0] == "progress: meta pre-training 0/4, 0 s elapsed, ETA after the first epoch"
    assert any(line.startswith("progress: meta pre-training 1/4") and "ETA 0 s" in line for line in lines)
