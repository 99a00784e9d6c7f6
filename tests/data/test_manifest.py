"""Manifest CSV: round trips, every bad row reported with its line number, helpers, `data validate`."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from grmp_edge.cli import main
from grmp_edge.images import write_rgb
from grmp_edge.data.manifest import (
    UNGROUPED,
    ManifestError,
    Record,
    groups,
    load_manifest,
    minmax_normalize,
    write_manifest,
)
from grmp_edge.errors import GrmpError


def _png(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_rgb(path, np.full((8, 8, 3), value, dtype=np.uint8))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_round_trip_keeps_fields_and_writes_relative_paths_below_the_manifest(tmp_path):
    inside = _png(tmp_path / "set" / "imgs" / "a.png")
    outside = _png(tmp_path / "elsewhere" / "b.png")
    records = [
        Record(image=inside, score=0.25, group="blur", level=3, ref="r1", split="train", raw_score=np.float64(2.5)),
        Record(image=outside, score=np.float64(1 / 3), group=None, level=None, ref=None, split="test"),
    ]
    path = write_manifest(tmp_path / "set" / "manifest.csv", records)
    lines = path.read_text().splitlines()
    assert lines[0] == "image,score,group,level,ref,split,raw_score"
    assert lines[1].startswith("imgs/a.png,0.25,blur,3,r1,train,2.5")
    assert lines[2].startswith(str(outside.resolve()) + ",")

    loaded = load_manifest(path)
    assert [r.image for r in loaded] == [inside.resolve(), outside.resolve()]
    assert loaded[1].score == 1 / 3  # exact float round trip
    assert (loaded[0].group, loaded[0].level, loaded[0].ref, loaded[0].split, loaded[0].raw_score) == (
        "blur", 3, "r1", "train", 2.5)
    assert (loaded[1].group, loaded[1].level, loaded[1].raw_score) == (None, None, None)
    assert [r.line for r in loaded] == [2, 3]


def test_optional_columns_are_only_written_when_used(tmp_path):
    path = write_manifest(tmp_path / "m.csv", [Record(image=_png(tmp_path / "a.png"), score=1.0)])
    assert path.read_text().splitlines() == ["image,score", "a.png,1.0"]


def test_header_is_case_insensitive_with_bom_and_unknown_columns_are_ignored(tmp_path):
    _png(tmp_path / "a.png")
    path = tmp_path / "m.csv"
    path.write_bytes("\ufeffImage, Score ,comment\na.png,3.5,anything\n".encode("utf-8"))
    (record,) = load_manifest(path)
    assert record.score == 3.5 and record.image == (tmp_path / "a.png").resolve()


def test_every_bad_row_is_reported_with_its_line_number(tmp_path):
    for name in ("good1.png", "nan.png", "level.png", "neg.png", "good2.png", "raw.png"):
        _png(tmp_path / name)
    path = _write(tmp_path / "m.csv", "\n".join([
        "image,score,level,raw_score",
        "good1.png,0.5,1,",
        "missing.png,0.1,,",
        "good1.png,abc,,",
        "nan.png,nan,,",
        "level.png,0.3,2.5,",
        "neg.png,0.3,-1,",
        "good2.png,0.9",
        ",0.9,,",
        "raw.png,0.9,,x",
        "good2.png,0.7,2,",
    ]) + "\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    message = str(info.value)
    assert "8 problem(s) in 10 rows" in message.splitlines()[0]
    expected = {
        3: "image not found",
        4: "score 'abc' is not a number",
        5: "score 'nan' is not finite",
        6: "level '2.5' is not an integer",
        7: "level '-1' is not an integer",
        8: "2 fields, the header has 4",
        9: "image is empty",
        10: "raw_score 'x' is not a number",
    }
    for line, what in expected.items():
        assert any(p.startswith(f"line {line}: ") and what in p for p in info.value.problems), (line, info.value.problems)
    assert not any(p.startswith(("line 2:", "line 11:")) for p in info.value.problems)
    assert all(f"line {n}:" in message for n in expected)


def test_error_lists_the_first_ten_problems_and_counts_the_rest(tmp_path):
    rows = "".join(f"missing{i}.png,0.5\n" for i in range(25))
    with pytest.raises(ManifestError) as info:
        load_manifest(_write(tmp_path / "m.csv", "image,score\n" + rows))
    message = str(info.value)
    assert len(info.value.problems) == 25
    assert "line 11:" in message and "line 12:" not in message
    assert "... and 15 more" in message


def test_drop_bad_keeps_good_rows_and_warns_with_the_count(tmp_path):
    _png(tmp_path / "a.png")
    path = _write(tmp_path / "m.csv", "image,score\na.png,1\nmissing.png,2\na.png,x\n")
    with pytest.warns(UserWarning, match="dropped 2 bad row"):
        records = load_manifest(path, drop_bad=True)
    assert [r.line for r in records] == [2]


def test_drop_bad_with_no_good_row_is_still_an_error(tmp_path):
    with pytest.raises(ManifestError, match="no usable rows"):
        load_manifest(_write(tmp_path / "m.csv", "image,score\nmissing.png,2\n"), drop_bad=True)


@pytest.mark.parametrize("text, what", [
    ("", "empty"),
    ("image,score\n", "no rows"),
    ("image,mos\na.png,1\n", "missing column 'score'"),
    ("path,score\na.png,1\n", "missing column 'image'"),
])
def test_structural_problems(tmp_path, text, what):
    _png(tmp_path / "a.png")
    with pytest.raises(ManifestError, match=what):
        load_manifest(_write(tmp_path / "m.csv", text))


def test_missing_manifest_is_a_user_error(tmp_path):
    with pytest.raises(GrmpError, match="file not found"):
        load_manifest(tmp_path / "nope.csv")


def test_check_images_decodes_each_image(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    path = _write(tmp_path / "m.csv", "image,score\na.png,1\nbroken.png,2\n")
    assert len(load_manifest(path)) == 2  # existence only
    with pytest.raises(ManifestError) as info:
        load_manifest(path, check_images=True)
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith("line 3: cannot decode image")


def test_groups_keep_first_appearance_order_and_collect_ungrouped(tmp_path):
    records = [Record(Path("/x"), 0.0, group=g) for g in ("b", None, "a", "b")]
    out = groups(records)
    assert list(out) == ["b", UNGROUPED, "a"]
    assert [len(v) for v in out.values()] == [2, 1, 1]


def test_minmax_normalize():
    assert np.allclose(minmax_normalize([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])
    assert np.allclose(minmax_normalize(np.array([7, 7])), [0.5, 0.5])
    assert minmax_normalize([]).shape == (0,)
    with pytest.raises(GrmpError):
        minmax_normalize([1.0, math.nan])


def test_write_refuses_no_records(tmp_path):
    with pytest.raises(GrmpError, match="no records"):
        write_manifest(tmp_path / "m.csv", [])


def test_cli_validate_summarises_a_good_manifest(tmp_path, capsys):
    for i in range(3):
        _png(tmp_path / f"{i}.png", value=40 * i)
    path = _write(tmp_path / "m.csv", "image,score,group,level,split\n0.png,0.1,blur,1,train\n1.png,0.9,blur,2,test\n"
                  "2.png,0.4,noise,1,train\n")
    assert main(["data", "validate", str(path), "--check-images"]) == 0
    out = capsys.readouterr().out
    assert "3 images, score 0.1 .. 0.9" in out
    assert "2 groups: blur (2), noise (1)" in out
    assert "levels: 1, 2" in out and "splits: train (2), test (1)" in out


def test_cli_validate_exits_2_with_one_line_per_problem(tmp_path, capsys):
    path = _write(tmp_path / "m.csv", "image,score\nmissing.png,1\nalso_missing.png,x\n")
    assert main(["data", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s) in 2 rows" in err
    assert "\n  line 2: image not found" in err
    assert "\n  line 3: score 'x' is not a number; image not found" in err


def test_an_image_under_an_unknown_users_home_is_a_row_problem_not_a_crash(tmp_path):
    _png(tmp_path / "good.png")
    path = _write(tmp_path / "m.csv", "image,score\ngood.png,0.5\n~grmp_no_such_user/a.png,0.4\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert any(p.startswith("line 3: ") and "no such user" in p for p in info.value.problems)
