"""Build a KADID-10k-like synthetic corpus: pristine photos x 25 distortion types x graded levels.

Layout of ``out_dir``::

    ref/<id>.png                  each pristine image, shorter side resized to ``size`` (aspect kept)
    dist/<id>_<type>_<level>.png  its distorted copies
    manifest.csv                  one row per distorted image: image, score (pseudo-MOS), group (type),
                                  level (1..5), ref (<id>)
    synth.json                    the settings the folder was made with (size, seed)

Scores are :func:`grmp_edge.data.fr_quality.pseudo_mos` of each distorted image against its reference.
Work is split into (image, type) jobs run on a process pool; each level's random generator is seeded
from ``(seed, image index, type index)``, so every output is reproducible on its own and the levels
of one image and type share their random draws and differ in strength only. Files that already
exist and decode are kept (a killed run resumes where it stopped); the manifest is written last.
"""
from __future__ import annotations

import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from grmp_edge.data.distortions import DISTORTIONS, LEVELS, apply
from grmp_edge.data.fr_quality import pseudo_mos
from grmp_edge.images import list_images, read_rgb, write_rgb
from grmp_edge.data.manifest import Record, write_manifest
from grmp_edge.errors import GrmpError
from grmp_edge.spec import PreprocessSpec

MANIFEST_NAME = "manifest.csv"
SETTINGS_NAME = "synth.json"
MIN_SIZE = 32  # the similarity measures need an 11 px window at their coarsest scale


@dataclass(frozen=True)
class _Job:
    """All distorted levels of one (image, type) pair."""

    ref: Path
    ref_id: str
    image_index: int
    type_index: int
    dist_dir: Path
    levels: tuple[int, ...]
    seed: int


def level_strengths(levels: int) -> list[int]:
    """Which of the five graded strengths a corpus with ``levels`` levels uses.

    5 -> all; fewer pick evenly spaced strengths including the mildest and the strongest
    (2 -> 1, 5; 3 -> 1, 3, 5; 4 -> 1, 2, 4, 5); 1 -> the middle one (3). The manifest's ``level``
    column holds the strength, so corpora with different ``levels`` stay comparable.
    """
    if not 1 <= levels <= LEVELS:
        raise GrmpError(f"levels must be between 1 and {LEVELS}, got {levels}")
    if levels == 1:
        return [(LEVELS + 1) // 2]
    return [int(v) for v in np.round(np.linspace(1, LEVELS, levels))]


def collect_sources(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files named directly or found under folders, in the given order, duplicates dropped."""
    found: list[Path] = []
    seen: set[Path] = set()
    for source in sources:
        source = Path(source)
        if source.is_dir():
            files = list_images(source)
        elif source.is_file():
            files = [source]
        else:
            raise GrmpError(f"pristine source not found: {source}")
        for f in files:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                found.append(f)
    if not found:
        raise GrmpError("no pristine images found in the given sources")
    return found


def image_ids(paths: Sequence[Path]) -> list[str]:
    """A file-name-safe id per image (its stem; repeated stems get ``-2``, ``-3``, ...)."""
    ids: list[str] = []
    used: set[str] = set()
    for path in paths:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem) or "image"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        ids.append(name)
    return ids


def _decodes(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
    """The image at ``path`` if it exists, decodes and (when given) has ``shape``; else None."""
    if not path.is_file():
        return None
    try:
        img = read_rgb(path)
    except GrmpError:
        return None
    return img if shape is None or img.shape == shape else None


def _prepare_reference(source: Path, target: Path, size: int) -> None:
    """Write the resized reference unless a decodable one of the right size is already there."""
    from grmp_edge.preprocess import resize, resized_shape

    rgb = read_rgb(source)
    spec = PreprocessSpec(size=size, resize=size, resize_mode="shortest", interpolation="area")
    shape = resized_shape(rgb.shape[0], rgb.shape[1], spec) + (3,)
    if _decodes(target, shape) is None:
        write_rgb(target, resize(rgb, spec))


def _run_job(job: _Job) -> list[tuple[Path, float, int]]:
    """Make (or reuse) every level of one (image, type) pair; return (path, score, level) rows."""
    ref = read_rgb(job.ref)
    name = DISTORTIONS[job.type_index]
    rows = []
    for level in job.levels:
        path = job.dist_dir / f"{job.ref_id}_{name}_{level}.png"
        dist = _decodes(path, ref.shape)
        if dist is None:
            rng = np.random.default_rng([job.seed, job.image_index, job.type_index])
            dist = apply(name, ref, level, rng)
            write_rgb(path, dist)
        rows.append((path, pseudo_mos(ref, dist), level))
    return rows


def _init_worker() -> None:
    # The pool already uses every core; OpenCV's own threads would only oversubscribe them.
    import cv2

    cv2.setNumThreads(1)


def _check_settings(out_dir: Path, size: int, seed: int) -> None:
    """Refuse to resume a folder made with another size or seed (its files would be reused as-is)."""
    from grmp_edge.artifacts import atomic_write_json
    from grmp_edge.spec import read_json

    settings = {"size": size, "seed": seed}
    path = out_dir / SETTINGS_NAME
    if path.is_file():
        old = read_json(path, "synthesis settings")
        if {k: old.get(k) for k in settings} != settings:
            raise GrmpError(f"{out_dir} was made with {old}, not {settings}; choose another output folder")
    else:
        atomic_write_json(path, settings)


@dataclass(frozen=True)
class _Plan:
    """What one synthesis does: the pristine images, the references made from them, and the jobs."""

    images: list[Path]
    refs: list[Path]
    ids: list[str]
    jobs: list[_Job]
    size: int


# Each job's (path, score, level) rows, keyed by (image index, type index).
_Rows = dict[tuple[int, int], list[tuple[Path, float, int]]]


def _checked_options(levels: int, size: int, types: Sequence[str] | None,
                     workers: int | None) -> tuple[tuple[int, ...], list[str], int]:
    """The strengths, distortion names and worker count the arguments ask for, or GrmpError."""
    strengths = tuple(level_strengths(levels))
    if size < MIN_SIZE:
        raise GrmpError(f"size must be at least {MIN_SIZE} px, got {size}")
    types = list(dict.fromkeys(DISTORTIONS if types is None else types))
    unknown = [t for t in types if t not in DISTORTIONS]
    if unknown or not types:
        raise GrmpError(f"unknown distortion type(s) {unknown or types}; choose from: {', '.join(DISTORTIONS)}")
    workers = min(os.cpu_count() or 1, 4) if workers is None else workers
    if workers < 1:
        raise GrmpError(f"workers must be at least 1, got {workers}")
    return strengths, types, workers


def _plan(sources: Sequence[str | os.PathLike], out_dir: Path, strengths: tuple[int, ...], size: int,
          seed: int, types: list[str]) -> _Plan:
    """Find the pristine images, prepare ``out_dir`` for them, and list one job per (image, type)."""
    images = collect_sources(sources)
    ids = image_ids(images)
    dist_dir = out_dir / "dist"
    dist_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(out_dir, size, seed)
    refs = [out_dir / "ref" / f"{i}.png" for i in ids]
    jobs = [_Job(ref, ref_id, i, DISTORTIONS.index(t), dist_dir, strengths, seed)
            for i, (ref, ref_id) in enumerate(zip(refs, ids)) for t in types]
    return _Plan(images, refs, ids, jobs, size)


def _run_here(plan: _Plan, bar, task_refs, task_jobs) -> _Rows:
    """Every reference, then every job, in this process."""
    rows: _Rows = {}
    for src, ref in zip(plan.images, plan.refs):
        _prepare_reference(src, ref, plan.size)
        bar.advance(task_refs)
    for job in plan.jobs:
        rows[job.image_index, job.type_index] = _run_job(job)
        bar.advance(task_jobs)
    return rows


def _run_pool(plan: _Plan, workers: int, bar, task_refs, task_jobs) -> _Rows:
    """Every reference, then every job, on a pool of ``workers`` fresh processes."""
    rows: _Rows = {}
    # Fresh interpreters, not fork: children forked from a process that has run OpenCV
    # (threads, locks) were seen to hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        try:
            prepared = [pool.submit(_prepare_reference, s, r, plan.size) for s, r in zip(plan.images, plan.refs)]
            for fut in as_completed(prepared):
                fut.result()
                bar.advance(task_refs)
            futures = {pool.submit(_run_job, job): job for job in plan.jobs}
            for fut in as_completed(futures):
                job = futures[fut]
                rows[job.image_index, job.type_index] = fut.result()
                bar.advance(task_jobs)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return rows


def synthesize(sources: Sequence[str | os.PathLike], out_dir: str | os.PathLike, levels: int = 5,
               size: int = 256, seed: int = 0, types: Sequence[str] | None = None,
               workers: int | None = None, progress: bool = True) -> Path:
    """Distort every pristine image with every type at every level; return the manifest path.

    ``sources``: image files and/or folders (searched recursively). ``size``: shorter side of the
    references in pixels (aspect kept, cv2 INTER_AREA). ``levels``: how many of the five graded
    strengths to use (see :func:`level_strengths`). ``types``: distortion names (default: all 25, in
    KADID order). ``workers``: processes (default ``min(cpu_count, 4)``; 1 runs in this process;
    more start fresh interpreters, so a calling script needs the usual ``if __name__ == "__main__":``
    guard). Existing decodable outputs are reused, so an interrupted call resumes.
    """
    strengths, types, workers = _checked_options(levels, size, types, workers)
    out_dir = Path(out_dir)
    plan = _plan(sources, out_dir, strengths, size, seed, types)
    with _progress_bar(progress) as bar:
        task_refs = bar.add_task("references", total=len(plan.images))
        task_jobs = bar.add_task(f"{len(plan.jobs) * len(strengths)} distorted images", total=len(plan.jobs))
        if workers == 1:
            rows = _run_here(plan, bar, task_refs, task_jobs)
        else:
            rows = _run_pool(plan, workers, bar, task_refs, task_jobs)
    # The manifest is written last, in job order, whichever order the pool finished them in.
    records = [
        Record(image=path.resolve(), score=score, group=DISTORTIONS[type_index], level=level,
               ref=plan.ids[image_index])
        for (image_index, type_index) in sorted(rows)
        for path, score, level in rows[image_index, type_index]
    ]
    return write_manifest(out_dir / MANIFEST_NAME, records)


def _progress_bar(enabled: bool):
    """A rich progress bar (hidden when ``enabled`` is False)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled)
