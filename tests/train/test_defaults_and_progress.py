"""``grmp-edge train``'s per-backbone defaults and its progress lines in a log file."""
from __future__ import annotations

import time

from grmp_edge.quickstart import PRESETS
from grmp_edge.train import protocol
from grmp_edge.cli.train import PAPER_DEFAULTS, backbone_defaults


def test_grmp_tiny_defaults_are_the_quickstarts_and_other_backbones_get_the_papers():
    tiny, preset = backbone_defaults("grmp-tiny"), PRESETS["full"]
    assert (tiny["meta_epochs"], tiny["epochs"], tiny["vpt_tokens"], tiny["lr"]) == \
        (preset.meta_epochs, preset.epochs, preset.vpt_tokens, preset.lr)
    assert tiny["splits"] == 1 and tiny["support_batch"] == preset.meta_batch
    assert backbone_defaults("ViT-B-16") == PAPER_DEFAULTS
    assert PAPER_DEFAULTS["meta_epochs"] == 50 and PAPER_DEFAULTS["epochs"] == 2000


def test_a_log_file_gets_progress_lines_with_an_eta(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(protocol, "PROGRESS_EVERY_S", 0.05)
    with protocol.RunLog(tmp_path / "metrics.jsonl", enabled=True) as log:  # pytest's capture is no terminal
        log.start("meta pre-training", 4)
        time.sleep(0.1)
        log({"loss_q": 0.5})
        time.sleep(0.2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("progress: ")]
    assert lines[0] == "progress: meta pre-training 0/4, 0 s elapsed, ETA after the first epoch"
    assert any(line.startswith("progress: meta pre-training 1/4") and "ETA 0 s" in line for line in lines)
