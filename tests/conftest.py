"""Fixtures shared by every test area."""
from __future__ import annotations

import pytest


@pytest.fixture
def tmp_runs(tmp_path, monkeypatch):
    """Point the runs/ convention at a temporary folder."""
    root = tmp_path / "runs"
    monkeypatch.setenv("GRMP_EDGE_RUNS", str(root))
    return root
