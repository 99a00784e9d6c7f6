"""The committed scene labels of the bootstrap's training photos."""
from __future__ import annotations

import pytest

from grmp_edge.data.pristine import shared_pristine
from grmp_edge.data.scenes import SCENE_CLASSES, scene_labels
from grmp_edge.errors import GrmpError

# Written out from docs/method.md ("The model": the release's prompts), not imported: the order is the contract.
RELEASE_SCENES = ("animal", "cityscape", "human", "indoor", "landscape", "night", "plant", "still_life", "others")


def test_scene_classes_are_the_releases_in_order():
    assert SCENE_CLASSES == RELEASE_SCENES


def test_committed_labels_parse_and_are_valid():
    labels = scene_labels()
    assert labels and set(labels.values()) <= set(RELEASE_SCENES)
    assert {collection for collection, _ in labels} == {"cbsd68", "bundled", "debian-wallpapers", "gcompris"}
    stems = [photo for _, photo in labels]
    assert len(stems) == len(set(stems)), "stems must be unique across collections (the corpus looks them up by stem)"


def test_every_cbsd68_photo_is_labelled():
    try:
        folder = shared_pristine("cbsd68")
    except GrmpError:
        pytest.skip("../shared/data/pristine/cbsd68 is not here")
    photos = {p.stem for p in folder.iterdir() if p.is_file()}
    labelled = {photo for collection, photo in scene_labels() if collection == "cbsd68"}
    assert photos == labelled


def test_every_bundled_photo_is_labelled():
    pytest.importorskip("skimage")
    from grmp_edge.data.pristine import bundled_photos

    labelled = {photo for collection, photo in scene_labels() if collection == "bundled"}
    assert {p.stem for p in bundled_photos()} <= labelled


def test_every_debian_photo_is_listed_and_labelled():
    """The photos scripts/debian_photos.py fetches are exactly the labelled ones of their collections."""
    import csv
    from pathlib import Path

    listed = Path(__file__).parents[2] / "scripts" / "debian_photos.csv"
    with listed.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    collections = {row["collection"] for row in rows}
    assert collections == {"debian-wallpapers", "gcompris"}
    labelled = {(collection, photo) for collection, photo in scene_labels() if collection in collections}
    assert {(row["collection"], row["photo"]) for row in rows} == labelled
    assert len(rows) == len(labelled)


@pytest.mark.parametrize("body, message", [
    ("collection,photo,scene\ncbsd68,1,still life\n", "not one of"),
    ("collection,photo,scene\ncbsd68,1,animal\ncbsd68,1,plant\n", "labelled twice"),
    ("collection,photo,label\ncbsd68,1,animal\n", "columns must be"),
])
def test_bad_labels_are_refused(tmp_path, body, message):
    path = tmp_path / "labels.csv"
    path.write_text(body)
    with pytest.raises(GrmpError, match=message):
        scene_labels(path)
