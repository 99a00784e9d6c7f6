"""Per-backbone schedules: grmp-tiny trains on the quickstart's tuned schedule, others on the paper's."""
from __future__ import annotations

from grmp_edge.quickstart import PRESETS
from grmp_edge.train.schedules import PAPER_SCHEDULE, default_schedule


def test_grmp_tiny_defaults_are_the_quickstarts_and_other_backbones_get_the_papers():
    tiny, preset = default_schedule("grmp-tiny"), PRESETS["full"].schedule
    assert (tiny.meta_epochs, tiny.epochs, tiny.vpt_tokens, tiny.lr) == \
        (preset.meta_epochs, preset.epochs, preset.vpt_tokens, preset.lr)
    assert tiny.splits == 1 and tiny.support_batch == preset.support_batch
    assert tiny == preset
    assert default_schedule("ViT-B-16") == PAPER_SCHEDULE
    assert PAPER_SCHEDULE.meta_epochs == 50 and PAPER_SCHEDULE.epochs == 2000
