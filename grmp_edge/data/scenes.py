"""Scene labels of the bootstrap's training photos, in QGR's nine scene classes.

QGR regularises the quality step against a frozen teacher's scene distribution; that teacher only
carries information if the backbone learned scene words. ``scene_labels.csv`` (beside this module)
names one scene per photo the bootstrap may train on, labelled by looking at each photo:

* ``cbsd68``: the 68 photos of ``<shared>/data/pristine/cbsd68``;
* ``bundled``: scikit-image's photos that :func:`grmp_edge.data.pristine.bundled_photos` returns;
* ``debian-wallpapers`` and ``gcompris``: the photographs of Debian's wallpaper packages and of
  GCompris' data package that ``scripts/debian_photos.py`` fetches (its ``debian_photos.csv`` names them).

``photo`` is the file stem, which is the reference id :func:`grmp_edge.data.synth.image_ids` gives
those photos. The held-out evaluation photos (kodak24, mcmaster) are deliberately not labelled.
"""
from __future__ import annotations

import csv
from dataclasses import fields
from pathlib import Path

from grmp_edge.errors import GrmpError
from grmp_edge.spec import ModelSpec

LABELS_CSV = Path(__file__).with_name("scene_labels.csv")
# The release's nine classes, in its order (docs/method.md, "The model"); ModelSpec's default is their one home.
SCENE_CLASSES: tuple[str, ...] = next(f.default for f in fields(ModelSpec) if f.name == "scene_classes")
COLUMNS = ("collection", "photo", "scene")


def scene_labels(path: str | Path = LABELS_CSV) -> dict[tuple[str, str], str]:
    """``{(collection, photo): scene}`` from a labels CSV (default: the committed one), every scene
    checked to be one of ``SCENE_CLASSES`` and every photo labelled once."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise GrmpError(f"{path}: columns must be {','.join(COLUMNS)}, got {reader.fieldnames}")
            rows = list(reader)
    except OSError as exc:
        raise GrmpError(f"cannot read scene labels {path}: {exc.strerror or exc}") from None
    labels: dict[tuple[str, str], str] = {}
    for line, row in enumerate(rows, start=2):
        key, scene = (row["collection"], row["photo"]), row["scene"]
        if scene not in SCENE_CLASSES:
            raise GrmpError(f"{path}:{line}: scene {scene!r} is not one of {', '.join(SCENE_CLASSES)}")
        if key in labels:
            raise GrmpError(f"{path}:{line}: {key[0]}/{key[1]} is labelled twice")
        labels[key] = scene
    return labels
