"""The synthetic corpus builder, its CLI command and where pristine photos come from."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from grmp_edge.data.distortions import DISTORTIONS
from grmp_edge.images import read_rgb, write_rgb
from grmp_edge.data.manifest import load_manifest
from grmp_edge.data.pristine import BUNDLED_PHOTOS, bundled_photos, shared_pristine
from grmp_edge.data.synth import collect_sources, image_ids, level_strengths, synthesize
from grmp_edge.errors import GrmpError

SIZE = 48  # small references keep 125 distortions per image fast


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    """Two bundled photos, one given as a file and one inside a folder."""
    by_name = {p.stem: p for p in bundled_photos()}
    folder = tmp_path_factory.mktemp("pristine")
    coffee = read_rgb(by_name["coffee"])
    write_rgb(folder / "coffee.png", coffee[::4, ::4])
    return [by_name["chelsea"], folder]


@pytest.fixture(scope="module")
def corpus(sources, tmp_path_factory) -> Path:
    return synthesize(sources, tmp_path_factory.mktemp("corpus"), size=SIZE, seed=5, workers=1, progress=False)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "dist").iterdir())}


def test_corpus_has_every_type_and_level_per_source(corpus):
    records = load_manifest(corpus, check_images=True)
    assert len(records) == 2 * 25 * 5
    assert {r.ref for r in records} == {"chelsea", "coffee"}
    for ref in ("chelsea", "coffee"):
        mine = [r for r in records if r.ref == ref]
        assert sorted({r.group for r in mine}) == sorted(DISTORTIONS)
        assert sorted((r.group, r.level) for r in mine) == sorted((t, lv) for t in DISTORTIONS for lv in range(1, 6))
    assert all(0.0 <= r.score < 1.0 for r in records)
    assert all(r.image.name == f"{r.ref}_{r.group}_{r.level}.png" for r in records)
    # Shorter side resized to SIZE, aspect kept (chelsea is 451 x 300).
    ref = read_rgb(corpus.parent / "ref" / "chelsea.png")
    assert ref.shape == (SIZE, round(451 * SIZE / 300), 3)
    assert read_rgb(records[0].image).shape == ref.shape


@pytest.mark.timeout(180)
def test_same_seed_gives_identical_bytes_in_or_out_of_process(corpus, sources, tmp_path):
    # The pool starts after this process ran OpenCV (the corpus above): forked workers could hang
    # then, spawned ones must not.
    again = synthesize(sources, tmp_path, size=SIZE, seed=5, workers=2, progress=False)
    assert _files(again.parent) == _files(corpus.parent)
    assert again.read_text() == corpus.read_text()


def test_another_seed_gives_other_random_distortions(sources, tmp_path):
    a = synthesize(sources[:1], tmp_path / "a", size=SIZE, seed=0, types=["white_noise"], workers=1, progress=False)
    b = synthesize(sources[:1], tmp_path / "b", size=SIZE, seed=1, types=["white_noise"], workers=1, progress=False)
    assert _files(a.parent) != _files(b.parent)


def test_resume_rebuilds_missing_and_corrupt_files_only(sources, tmp_path):
    first = synthesize(sources, tmp_path, size=SIZE, types=["jpeg", "color_block"], workers=1, progress=False)
    before = _files(tmp_path)
    dist = tmp_path / "dist"
    (dist / "chelsea_jpeg_2.png").unlink()
    (dist / "coffee_color_block_5.png").write_bytes(b"not a png")
    kept = dist / "chelsea_jpeg_1.png"
    os.utime(kept, (0, 0))
    again = synthesize(sources, tmp_path, size=SIZE, types=["jpeg", "color_block"], workers=1, progress=False)
    assert _files(tmp_path) == before
    assert kept.stat().st_mtime == 0
    assert again.read_text() == first.read_text()


def test_resume_refuses_other_settings(sources, tmp_path):
    synthesize(sources[:1], tmp_path, size=SIZE, types=["jpeg"], workers=1, progress=False)
    with pytest.raises(GrmpError, match="another output folder"):
        synthesize(sources[:1], tmp_path, size=SIZE, seed=9, types=["jpeg"], workers=1, progress=False)


def test_fewer_levels_pick_evenly_among_the_five():
    assert level_strengths(5) == [1, 2, 3, 4, 5]
    assert level_strengths(3) == [1, 3, 5]
    assert level_strengths(2) == [1, 5]
    assert level_strengths(1) == [3]
    for bad in (0, 6):
        with pytest.raises(GrmpError, match="levels"):
            level_strengths(bad)


def test_levels_option_reaches_the_manifest(sources, tmp_path):
    manifest = synthesize(sources[:1], tmp_path, levels=3, size=SIZE, types=["pixelate"], workers=1, progress=False)
    assert [r.level for r in load_manifest(manifest)] == [1, 3, 5]


@pytest.mark.parametrize("kwargs, message", [
    ({"types": ["fog"]}, "unknown distortion"),
    ({"size": 16}, "at least"),
    ({"workers": 0}, "workers"),
])
def test_bad_options_are_user_errors(sources, tmp_path, kwargs, message):
    with pytest.raises(GrmpError, match=message):
        synthesize(sources, tmp_path, **kwargs)


def test_sources_are_collected_once_with_unique_ids(tmp_path):
    img = np.zeros((40, 40, 3), np.uint8)
    write_rgb(tmp_path / "a" / "x.png", img)
    write_rgb(tmp_path / "b" / "x.png", img)
    found = collect_sources([tmp_path / "a", tmp_path / "a" / "x.png", tmp_path / "b"])
    assert found == [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"]
    assert image_ids(found + [Path("my photo (1).jpg")]) == ["x", "x-2", "my_photo_1_"]
    with pytest.raises(GrmpError, match="not found"):
        collect_sources([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(GrmpError, match="no pristine images"):
        collect_sources([tmp_path / "empty"])


def test_synth_command_prints_the_manifest_and_counts(sources, tmp_path):
    import typer
    from typer.testing import CliRunner

    from grmp_edge.cli.synth import synth_command

    app = typer.Typer()
    app.command("synth")(synth_command)
    app.command("other")(lambda: None)  # two commands, so "synth" is parsed as a subcommand name
    out = tmp_path / "corpus"
    result = CliRunner().invoke(app, ["synth", "--src", str(sources[0]), "--out", str(out), "--size", str(SIZE),
                                      "--levels", "2", "--types", "jpeg, gaussian_blur", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert str(out / "manifest.csv") in result.output
    assert "4 distorted images from 1 references, 2 types x 2 levels" in result.output


def test_bundled_photos_are_natural_colour_photos():
    photos = bundled_photos()
    assert photos and all(p.is_file() and p.name in BUNDLED_PHOTOS for p in photos)
    assert {"astronaut.png", "coffee.png", "chelsea.png"} <= {p.name for p in photos}
    for p in photos:
        img = read_rgb(p)
        assert img.ndim == 3 and not np.array_equal(img[..., 0], img[..., 1])  # colour, not grey


def test_bundled_photos_without_the_files_is_a_user_error(monkeypatch, tmp_path):
    import skimage.data

    monkeypatch.setattr(skimage.data, "__file__", str(tmp_path / "__init__.py"))
    with pytest.raises(GrmpError, match=r"grmp-edge\[train\]"):
        bundled_photos()


def test_shared_pristine_finds_the_datasets(tmp_path, monkeypatch):
    (tmp_path / "shared" / "data" / "pristine" / "kodak24").mkdir(parents=True)
    assert shared_pristine("kodak24", root=tmp_path / "shared") == tmp_path / "shared" / "data" / "pristine" / "kodak24"
    monkeypatch.setenv("GRMP_EDGE_SHARED", str(tmp_path / "shared"))
    assert shared_pristine("kodak24").is_dir()
    monkeypatch.delenv("GRMP_EDGE_SHARED")
    repo = tmp_path / "repo" / "sub"
    repo.mkdir(parents=True)
    monkeypatch.chdir(repo)
    assert shared_pristine("kodak24").resolve() == (tmp_path / "shared" / "data" / "pristine" / "kodak24").resolve()
    with pytest.raises(GrmpError, match="not found"):
        shared_pristine("cbsd68")
    with pytest.raises(GrmpError, match="unknown pristine dataset"):
        shared_pristine("live")
