"""The bootstrap's training corpus: pristine photos distorted at random strengths between the graded levels.

The graded corpus of ``grmp_edge.data.synth`` has five fixed strengths per type, so a backbone trained
on it can learn five looks per type by heart. Here every (photo, type) pair is distorted ``draws``
times at continuous strengths ``u`` in [1, 5], one draw in each of ``draws`` equal slices of that
range (level 1 is ``u = 1``, level 5 ``u = 5``; in between, the type's parameter is interpolated
between its neighbouring levels, geometrically where both are positive, since most graded parameters
roughly double per level). Each image keeps its strength, its type, its photo, its full-reference
pseudo-MOS and its photo's scene label (``grmp_edge.data.scenes``), so the training losses can compare
the same distortion across different photos.

Photos are resized as the model spec says (shorter side 256 for ``grmp-tiny``) before they are
distorted, so training crops see what inference crops see. One ``.npz`` per photo is kept in the work
folder and reused when a rerun asks for the same seed, draws and types.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from grmp_edge.data import distortions
from grmp_edge.data.distortions import DISTORTIONS, LEVELS, PARAMS
from grmp_edge.errors import GrmpError
from grmp_edge.spec import PreprocessSpec

# Scene index of a photo without a label (its images get no scene loss).
NO_SCENE = -1


def strength_param(name: str, strength: float):
    """Type ``name``'s parameter at continuous ``strength`` in [1, 5]: the graded level's own value at
    whole strengths, interpolated between neighbouring levels otherwise (geometrically when both are
    positive, linearly else); integer parameters are rounded."""
    if not 1.0 <= strength <= LEVELS:
        raise GrmpError(f"distortion strength must be in [1, {LEVELS}], got {strength}")
    values = PARAMS[name]
    low = min(int(np.floor(strength)), LEVELS - 1)
    a, b, t = float(values[low - 1]), float(values[low]), strength - low
    value = a * (b / a) ** t if a > 0 and b > 0 else a + (b - a) * t
    return int(round(value)) if isinstance(values[0], int) else value


def distort_at(name: str, rgb: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """``rgb`` distorted by type ``name`` at continuous ``strength`` (see :func:`strength_param`)."""
    out = getattr(distortions, name)(np.ascontiguousarray(rgb), strength_param(name, strength), rng)
    return np.ascontiguousarray(out, dtype=np.uint8)


def stratified_strengths(draws: int, rng: np.random.Generator) -> np.ndarray:
    """``draws`` strengths in [1, 5], one uniformly inside each of ``draws`` equal slices."""
    return 1.0 + (LEVELS - 1.0) * (np.arange(draws) + rng.random(draws)) / draws


@dataclass(frozen=True)
class _PhotoJob:
    photo: Path
    index: int
    types: tuple[str, ...]
    draws: int
    seed: int
    spec: PreprocessSpec
    cache: Path


def _distort_photo(job: _PhotoJob) -> dict[str, np.ndarray]:
    """Every type x draw of one photo (reused from ``job.cache`` when made with the same settings)."""
    from grmp_edge.data.fr_quality import pseudo_mos
    from grmp_edge.images import read_rgb
    from grmp_edge.preprocess import resize

    settings = np.asarray([job.seed, job.draws], np.int64)
    if job.cache.is_file():
        with np.load(job.cache) as cached:
            if np.array_equal(cached["settings"], settings) and list(cached["types"]) == list(job.types):
                return {k: cached[k] for k in cached.files}
    ref = resize(read_rgb(job.photo), job.spec)
    pixels, types, strengths, quality = [ref], [""], [0.0], [1.0]
    for name in job.types:
        rng = np.random.default_rng([job.seed, job.index, DISTORTIONS.index(name)])
        for strength in stratified_strengths(job.draws, rng):
            image = distort_at(name, ref, float(strength), rng)
            pixels.append(image)
            types.append(name)
            strengths.append(float(strength))
            quality.append(pseudo_mos(ref, image))
    result = {"pixels": np.stack(pixels), "kinds": np.asarray(types), "strengths": np.asarray(strengths),
              "quality": np.asarray(quality), "settings": settings, "types": np.asarray(job.types)}
    job.cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(job.cache.with_suffix(".tmp.npz"), **result)
    job.cache.with_suffix(".tmp.npz").replace(job.cache)
    return result


def _init_worker() -> None:
    # The pool already uses every core; OpenCV's own threads would only oversubscribe them.
    import cv2

    cv2.setNumThreads(1)


def distort_photos(photos: Sequence[Path], types: Sequence[str], draws: int, seed: int, spec: PreprocessSpec,
                   work_dir: Path, workers: int = 2) -> list[dict[str, np.ndarray]]:
    """Per photo: its reference (row 0) and ``len(types) x draws`` distorted images, as arrays
    ``pixels``, ``kinds`` (type name, ``""`` for the reference), ``strengths`` (0 for the reference)
    and ``quality`` (pseudo-MOS, 1 for the reference). ``workers`` > 1 runs photos in fresh processes."""
    from grmp_edge.data.synth import image_ids

    unknown = [t for t in types if t not in DISTORTIONS]
    if unknown or draws < 1:
        raise GrmpError(f"need known distortion types and at least one draw, got {unknown or types}, {draws}")
    jobs = [_PhotoJob(Path(p), i, tuple(types), draws, seed, spec, Path(work_dir) / f"{ref_id}.npz")
            for i, (p, ref_id) in enumerate(zip(photos, image_ids([Path(p) for p in photos])))]
    if workers <= 1:
        return [_distort_photo(job) for job in jobs]
    # Fresh interpreters, not fork: children forked from a process that has run OpenCV were seen to hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        return list(pool.map(_distort_photo, jobs))


def photo_scenes(photos: Sequence[Path], scene_classes: Sequence[str]) -> np.ndarray:
    """Index into ``scene_classes`` of each photo's committed scene label (looked up by file stem,
    unique across the labelled collections), ``NO_SCENE`` where a photo has none."""
    from grmp_edge.data.scenes import scene_labels

    by_stem = {photo: scene for (_, photo), scene in scene_labels().items()}
    return np.asarray([scene_classes.index(by_stem[Path(p).stem]) if Path(p).stem in by_stem else NO_SCENE
                       for p in photos], np.int64)
