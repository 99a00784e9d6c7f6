"""The one dataset manifest format: a CSV of image paths and quality scores (higher = better).

Columns (header names are matched case-insensitively; unknown extra columns are ignored):

========== ======== ==================================================================
column     required meaning
========== ======== ==================================================================
image      yes      path relative to the manifest's folder, or absolute
score      yes      float, higher = better (adapters store it min-max normalised to [0, 1])
group      no       task id, e.g. the distortion type (meta-training groups tasks by it)
level      no       integer distortion level (0 or more)
ref        no       id of the reference / source image the row was made from
split      no       free text, e.g. ``train`` / ``test``
raw_score  no       the dataset's own label before orientation and normalisation
========== ======== ==================================================================

:func:`load_manifest` checks every row and reports every bad one with its line number in a single
:class:`ManifestError`; rows are only skipped when the caller asks for it (``drop_bad=True``).
"""
from __future__ import annotations

import csv
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from grmp_edge.artifacts import user_path
from grmp_edge.errors import GrmpError

REQUIRED_COLUMNS = ("image", "score")
OPTIONAL_COLUMNS = ("group", "level", "ref", "split", "raw_score")
# Key of groups() for records without a group.
UNGROUPED = "ungrouped"
# How many problems an error message lists before it only counts the rest.
MAX_LISTED = 10


class ManifestError(GrmpError):
    """Bad manifest or label file; ``problems`` holds one ``"line N: what"`` string per bad row."""

    def __init__(self, source: str | os.PathLike, problems: Sequence[str], rows: int | None = None):
        self.source = str(source)
        self.problems = list(problems)
        counted = f" in {rows} rows" if rows is not None else ""
        lines = [f"{self.source}: {len(self.problems)} problem(s){counted}:"]
        lines += [f"  {p}" for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - MAX_LISTED} more")
        super().__init__("\n".join(lines))


@dataclass
class Record:
    """One labelled image. ``image`` is absolute; ``line`` is the row's line in the file it came from."""

    image: Path
    score: float
    group: str | None = None
    level: int | None = None
    ref: str | None = None
    split: str | None = None
    line: int = 0
    raw_score: float | None = None


def read_table(path: str | os.PathLike) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Read a CSV file into its stripped header and ``(line number, stripped fields)`` rows.

    Blank lines are skipped; a UTF-8 byte-order mark is ignored and non-UTF-8 files are read as
    Latin-1 (spreadsheet exports). Line numbers are physical (the header is line 1).
    """
    path = Path(path)
    if not path.is_file():
        raise GrmpError(f"file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    reader = csv.reader(text.splitlines(keepends=True))
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            fields = [f.strip() for f in fields]
            if header is None:
                header = fields
            else:
                rows.append((reader.line_num, fields))
    except csv.Error as exc:
        raise ManifestError(path, [f"line {reader.line_num}: not valid CSV ({exc})"]) from None
    if header is None:
        raise ManifestError(path, ["the file is empty (no header line)"])
    return header, rows


def column_index(header: Sequence[str], source: str | os.PathLike, wanted: dict[str, Sequence[str]],
                 optional: Iterable[str] = ()) -> dict[str, int | None]:
    """Map each key of ``wanted`` to the index of the first header name among its aliases.

    Matching ignores case and surrounding spaces. Keys in ``optional`` map to None when absent;
    a missing required key raises ManifestError naming the aliases looked for and the header found.
    """
    lowered = [h.strip().lower() for h in header]
    optional = set(optional)
    found: dict[str, int | None] = {}
    missing = []
    for key, aliases in wanted.items():
        idx = next((lowered.index(a.lower()) for a in aliases if a.lower() in lowered), None)
        if idx is None and key not in optional:
            missing.append(" or ".join(repr(a) for a in aliases))
        found[key] = idx
    if missing:
        raise ManifestError(source, [f"line 1: missing column {m} (header: {', '.join(header)})" for m in missing])
    return found


def parse_score(text: str) -> float:
    """A finite float from a CSV field, or ValueError with a short reason."""
    if text == "":
        raise ValueError("score is empty")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"score {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"score {text!r} is not finite")
    return value


def parse_level(text: str) -> int:
    """An integer >= 0 from a CSV field (``3`` or ``3.0``), or ValueError with a short reason."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"level {text!r} is not an integer") from None
    if not value.is_integer() or value < 0:
        raise ValueError(f"level {text!r} is not an integer >= 0")
    return int(value)


def _check_image(image: Path, check_images: bool) -> str | None:
    """Why ``image`` is unusable, or None."""
    if not image.is_file():
        return f"image not found: {image}"
    if check_images:
        from grmp_edge.images import read_rgb

        try:
            read_rgb(image)
        except GrmpError as exc:
            return str(exc)
    return None


@dataclass(frozen=True)
class _RowReader:
    """Turns one data row of a manifest into a :class:`Record`, or the reasons it cannot be one."""

    header: Sequence[str]
    columns: dict[str, int | None]
    folder: Path
    check_images: bool

    def field(self, fields: list[str], key: str) -> str:
        idx = self.columns[key]
        return "" if idx is None else fields[idx]

    def image(self, fields: list[str], reasons: list[str]) -> Path | None:
        """The absolute image path (relative ones are below the manifest's folder), None when empty."""
        text = self.field(fields, "image")
        if text == "":
            reasons.append("image is empty")
            return None
        try:
            image = user_path(text)
        except GrmpError as exc:
            reasons.append(str(exc))
            return None
        return (image if image.is_absolute() else self.folder / image).resolve()

    def number(self, fields: list[str], key: str, parse, reasons: list[str], prefix: str = ""):
        """``parse`` of the field, None when it is empty and optional or does not parse (reason added)."""
        text = self.field(fields, key)
        if text == "" and key not in REQUIRED_COLUMNS:
            return None
        try:
            return parse(text)
        except ValueError as exc:
            reasons.append(f"{prefix}{exc}")
            return None

    def record(self, line: int, fields: list[str]) -> Record | str:
        """The row's record, or one ``"line N: ..."`` problem naming every reason it is unusable."""
        if len(fields) != len(self.header):
            return f"line {line}: {len(fields)} fields, the header has {len(self.header)}"
        reasons: list[str] = []
        image = self.image(fields, reasons)
        score = self.number(fields, "score", parse_score, reasons)
        level = self.number(fields, "level", parse_level, reasons)
        raw = self.number(fields, "raw_score", parse_score, reasons, prefix="raw_")
        bad_image = _check_image(image, self.check_images) if image is not None else None
        if bad_image:
            reasons.append(bad_image)
        if reasons:
            return f"line {line}: {'; '.join(reasons)}"
        return Record(image=image, score=score, group=self.field(fields, "group") or None, level=level,
                      ref=self.field(fields, "ref") or None, split=self.field(fields, "split") or None,
                      line=line, raw_score=raw)


def _read_rows(reader: _RowReader, rows: Iterable[tuple[int, list[str]]]) -> tuple[list[Record], list[str]]:
    """Every row read: the usable records and one problem line per unusable row."""
    records: list[Record] = []
    problems: list[str] = []
    for line, fields in rows:
        result = reader.record(line, fields)
        if isinstance(result, Record):
            records.append(result)
        else:
            problems.append(result)
    return records, problems


def load_manifest(path: str | os.PathLike, check_images: bool = False, drop_bad: bool = False,
                  progress: bool = False) -> list[Record]:
    """Read and validate a manifest CSV.

    Every row is checked (image file exists, score is a finite number, level is an integer >= 0,
    raw_score is a number when given; with ``check_images`` each image is also decoded) and all bad
    rows are reported together with their line numbers in one :class:`ManifestError`. With
    ``drop_bad`` the bad rows are skipped instead and a warning gives their count; a missing
    required column or a manifest without usable rows is always an error. ``progress`` shows a
    progress bar while images are decoded.
    """
    path = Path(path)
    header, rows = read_table(path)
    columns = column_index(header, path, {c: (c,) for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS},
                           optional=OPTIONAL_COLUMNS)
    if not rows:
        raise ManifestError(path, ["the manifest has a header but no rows"])
    reader = _RowReader(header, columns, path.resolve().parent, check_images)
    if progress and check_images:
        from rich.progress import track

        records, problems = _read_rows(reader, track(rows, description=f"checking {path.name}"))
    else:
        records, problems = _read_rows(reader, rows)
    if problems and not drop_bad:
        raise ManifestError(path, problems, rows=len(rows))
    if not records:
        raise ManifestError(path, ["no usable rows"] + problems, rows=len(rows))
    if problems:
        warnings.warn(f"{path}: dropped {len(problems)} bad row(s) of {len(rows)} (first: {problems[0]})",
                      stacklevel=2)
    return records


def _image_text(image: Path, folder: Path) -> str:
    """The image path as written: relative (POSIX) when under the manifest folder, else absolute."""
    image = Path(image).resolve()
    try:
        return image.relative_to(folder).as_posix()
    except ValueError:
        return str(image)


def write_manifest(path: str | os.PathLike, records: Sequence[Record]) -> Path:
    """Write records as a manifest CSV atomically and return its path.

    Optional columns are written only when some record has a value for them.
    """
    from grmp_edge.artifacts import atomic_write

    path = Path(path)
    if not records:
        raise GrmpError(f"no records to write to {path}")
    folder = path.resolve().parent
    columns = list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if any(getattr(r, c) is not None for r in records)]

    def cell(record: Record, column: str) -> str:
        if column == "image":
            return _image_text(record.image, folder)
        value = getattr(record, column)
        if value is None:
            return ""
        # repr of a Python float round-trips exactly; numpy scalars would print as np.float64(...).
        return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows([cell(r, c) for c in columns] for r in records)

    return atomic_write(path, write)


def groups(records: Iterable[Record]) -> dict[str, list[Record]]:
    """Records by group, in order of first appearance; records without a group go under UNGROUPED."""
    out: dict[str, list[Record]] = {}
    for record in records:
        out.setdefault(record.group if record.group is not None else UNGROUPED, []).append(record)
    return out


def minmax_normalize(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Scale scores linearly onto [0, 1] (float64); all-equal scores map to 0.5, NaN/inf is an error."""
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return values
    if not np.all(np.isfinite(values)):
        raise GrmpError("cannot normalise scores that contain NaN or infinity")
    low, high = values.min(), values.max()
    if high == low:
        return np.full_like(values, 0.5)
    return (values - low) / (high - low)
