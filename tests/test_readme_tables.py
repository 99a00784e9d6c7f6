"""The README's held-out quality tables are the committed result files' own lines."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


@pytest.mark.parametrize("result_file", ["heldout_quality.json", "heldout_quality_zero_shot.json"])
def test_readme_carries_the_summary_rows_of_the_committed_held_out_results(result_file, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import heldout_quality

    result = json.loads((BENCHMARKS / result_file).read_text())
    readme = (REPO / "README.md").read_text()
    for line in heldout_quality.summary_table(result)[2:]:
        assert line in readme, f"README.md lacks this row of benchmarks/{result_file}: {line}"
