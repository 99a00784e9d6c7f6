"""The few-shot protocol's splits."""
from __future__ import annotations

import pytest

from grmp_edge.errors import GrmpError
from grmp_edge.train.protocol import ProtocolConfig, make_splits


def test_splits_are_disjoint_seeded_and_sized():
    cfg = ProtocolConfig(shots=10, splits=3, val_size=4, seed=7)
    splits = make_splits(50, cfg)
    assert len(splits) == 3
    for s in splits:
        assert (len(s.train), len(s.val), len(s.test)) == (10, 4, 10)
        assert not (set(s.train) & set(s.val) or set(s.train) & set(s.test) or set(s.val) & set(s.test))
    assert splits[0].test != splits[1].test
    again = make_splits(50, cfg)
    assert [s.train for s in again] == [s.train for s in splits]
    other = make_splits(50, ProtocolConfig(shots=10, splits=3, val_size=4, seed=8))
    assert [s.train for s in other] != [s.train for s in splits]


def test_default_validation_size_and_fixed_budget_option():
    assert ProtocolConfig(shots=50).validation_images == 12
    assert ProtocolConfig(shots=8).validation_images == 5
    assert make_splits(20, ProtocolConfig(shots=10, splits=1, val_size=0))[0].val == []


def test_too_few_images_for_the_shots_is_a_user_error():
    with pytest.raises(GrmpError, match="too few images for 50 shots"):
        make_splits(60, ProtocolConfig(shots=50))
    with pytest.raises(GrmpError, match="at least 3"):
        make_splits(60, ProtocolConfig(shots=10, val_size=2))
