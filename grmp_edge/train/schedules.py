"""Training schedules: the defaults of the options that depend on the backbone, in one table.

Every backbone trains on the paper's schedule (ViT-B/16 on real datasets: 50 meta epochs, up to 2000
fine-tuning epochs, 100 prompt tokens, 10 splits) unless this table gives it its own. ``grmp-tiny``
has its own, tuned for a few photos on a CPU in minutes: meta pre-training needs a larger inner lr
and outer step to move the prompts in 4 epochs (outer step 0.01 / 0.1 / 0.5: held-out source SRCC
0.67 / 0.77 / 0.88, ``benchmarks/quickstart_settings.md``), and fine-tuning only the last block at a
gentle lr keeps what the bootstrap and meta stage learned about the seen types (unfreezing all 4
blocks lowered the held-out per-type SRCC from 0.73 to 0.68). The quickstart's full preset trains
with it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from grmp_edge.train.backbones import GRMP_TINY


@dataclass(frozen=True)
class Schedule:
    """The backbone-dependent defaults, named as ``grmp-edge train``'s options (``meta_lr`` is
    ``--meta-lr``)."""

    meta_epochs: int
    meta_lr: float
    meta_eps: float
    support_batch: int
    query_batch: int
    shots: int
    splits: int
    epochs: int
    lr: float
    unfreeze_blocks: int
    vpt_tokens: int

    def to_dict(self) -> dict:
        """The values by option name."""
        return asdict(self)


PAPER_SCHEDULE = Schedule(meta_epochs=50, meta_lr=1e-4, meta_eps=0.01, support_batch=75, query_batch=50,
                          shots=50, splits=10, epochs=2000, lr=1e-3, unfreeze_blocks=4, vpt_tokens=100)
# Backbones with a schedule of their own; every other backbone gets PAPER_SCHEDULE.
BACKBONE_SCHEDULES = {
    GRMP_TINY: replace(PAPER_SCHEDULE, meta_epochs=4, meta_lr=1e-3, meta_eps=0.5, support_batch=8, query_batch=8,
                       splits=1, epochs=120, lr=3e-4, unfreeze_blocks=1, vpt_tokens=16),
}


def default_schedule(backbone: str) -> Schedule:
    """The schedule ``backbone`` trains on unless options say otherwise."""
    return BACKBONE_SCHEDULES.get(backbone, PAPER_SCHEDULE)
