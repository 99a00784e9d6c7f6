"""The bootstrap's training corpus: pristine photos distorted at random strengths between the graded levels.

The graded corpus of ``grmp_edge.data.synth`` has five fixed strengths per type, so a backbone trained
on it can learn five looks per type by heart. Here every (photo, type) pair is distorted ``draws``
times at continuous strengths ``u`` in [1, 5], one draw in each of ``draws`` equal slices of that
range (level 1 is ``u = 1``, level 5 ``u = 5``; in between, the type's parameter is interpolated
between its neighbouring levels, geometrically where both are positive, since most graded parameters
roughly double per level). A build may also ask for a few draws per photo of chosen types past the
graded range, ``u`` in (5, ``MAX_STRENGTH``], where the parameter keeps the type's own last step
(``harsher``; tried for JPEG and not shipped, see the README). Each image keeps its strength, its
type, its photo, its full-reference pseudo-MOS and its photo's scene label (``grmp_edge.data.scenes``),
so the training losses can compare the same distortion across different photos.

Photos are resized as the model spec says (shorter side 256 for ``grmp-tiny``) before they are
distorted, so training crops see what inference crops see. One ``.npz`` per photo is kept in the work
folder and reused when a rerun asks for the same seed, draws, types and harsher draws.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from grmp_edge.data import distortions
from grmp_edge.data.distortions import DISTORTIONS, LEVELS, PARAMS
from grmp_edge.errors import GrmpError
from grmp_edge.spec import PreprocessSpec

# Scene index of a photo without a label (its images get no scene loss).
NO_SCENE = -1
# The harshest strength a draw may ask for: two steps past the graded level 5.
MAX_STRENGTH = LEVELS + 2


def strength_param(name: str, strength: float):
    """Type ``name``'s parameter at continuous ``strength`` in [1, ``MAX_STRENGTH``]: the graded level's
    own value at whole strengths, interpolated between neighbouring levels otherwise (geometrically when
    both are positive, linearly else); past level 5 the last step's ratio goes on (types whose last two
    values are positive only, e.g. JPEG quality 5 -> 2.5 -> 1.25). Integer parameters are rounded, to 1
    at least."""
    if not 1.0 <= strength <= MAX_STRENGTH:
        raise GrmpError(f"distortion strength must be in [1, {MAX_STRENGTH}], got {strength}")
    values = PARAMS[name]
    low = min(int(np.floor(strength)), LEVELS - 1)
    a, b, t = float(values[low - 1]), float(values[low]), strength - low
    if strength > LEVELS and not (a > 0 and b > 0):
        raise GrmpError(f"{name} has no harsher strength than level {LEVELS} (its last step is not a ratio)")
    value = a * (b / a) ** t if a > 0 and b > 0 else a + (b - a) * t
    return max(1, int(round(value))) if isinstance(values[0], int) else value


def distort_at(name: str, rgb: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """``rgb`` distorted by type ``name`` at continuous ``strength`` (see :func:`strength_param`)."""
    out = getattr(distortions, name)(np.ascontiguousarray(rgb), strength_param(name, strength), rng)
    return np.ascontiguousarray(out, dtype=np.uint8)


def stratified_strengths(draws: int, rng: np.random.Generator, low: float = 1.0,
                         high: float = LEVELS) -> np.ndarray:
    """``draws`` strengths in [``low``, ``high``] (default the graded range), one uniformly inside each
    of ``draws`` equal slices."""
    return low + (high - low) * (np.arange(draws) + rng.random(draws)) / draws


@dataclass(frozen=True)
class _PhotoJob:
    photo: Path
    index: int
    types: tuple[str, ...]
    draws: int
    seed: int
    spec: PreprocessSpec
    cache: Path
    harsher: tuple[tuple[str, int], ...] = ()  # (type, draws past level 5), sorted


def _distort_photo(job: _PhotoJob) -> dict[str, np.ndarray]:
    """Every type x draw of one photo (reused from ``job.cache`` when made with the same settings)."""
    from grmp_edge.data.fr_quality import pseudo_mos
    from grmp_edge.images import read_rgb
    from grmp_edge.preprocess import resize

    settings = np.asarray([job.seed, job.draws], np.int64)
    if job.cache.is_file():
        with np.load(job.cache) as cached:
            if (np.array_equal(cached["settings"], settings) and list(cached["types"]) == list(job.types)
                    and list(cached.get("harsher", [])) == _harsher_tags(job.harsher)):
                return {k: cached[k] for k in cached.files}
    ref = resize(read_rgb(job.photo), job.spec)
    pixels, types, strengths, quality = [ref], [""], [0.0], [1.0]
    harsher = dict(job.harsher)
    for name in job.types:
        # The graded draws first, so asking for harsher ones leaves them as they were.
        rng = np.random.default_rng([job.seed, job.index, DISTORTIONS.index(name)])
        draws = list(stratified_strengths(job.draws, rng))
        draws += list(stratified_strengths(harsher.get(name, 0), rng, LEVELS, MAX_STRENGTH))
        for strength in draws:
            image = distort_at(name, ref, float(strength), rng)
            pixels.append(image)
            types.append(name)
            strengths.append(float(strength))
            quality.append(pseudo_mos(ref, image))
    result = {"pixels": np.stack(pixels), "kinds": np.asarray(types), "strengths": np.asarray(strengths),
              "quality": np.asarray(quality), "settings": settings, "types": np.asarray(job.types),
              "harsher": np.asarray(_harsher_tags(job.harsher), dtype=str)}
    job.cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(job.cache.with_suffix(".tmp.npz"), **result)
    job.cache.with_suffix(".tmp.npz").replace(job.cache)
    return result


def _harsher_tags(harsher: tuple[tuple[str, int], ...]) -> list[str]:
    """Harsher draws as the ``type=draws`` strings a cached corpus file records."""
    return [f"{name}={count}" for name, count in harsher]


def _init_worker() -> None:
    # The pool already uses every core; OpenCV's own threads would only oversubscribe them.
    import cv2

    cv2.setNumThreads(1)


def distort_photos(photos: Sequence[Path], types: Sequence[str], draws: int, seed: int, spec: PreprocessSpec,
                   work_dir: Path, workers: int = 2,
                   harsher: Mapping[str, int] | None = None) -> list[dict[str, np.ndarray]]:
    """Per photo: its reference (row 0) and ``len(types) x draws`` distorted images, plus
    ``harsher[type]`` more of that type at strengths in (5, ``MAX_STRENGTH``], as arrays ``pixels``,
    ``kinds`` (type name, ``""`` for the reference), ``strengths`` (0 for the reference) and
    ``quality`` (pseudo-MOS, 1 for the reference). ``workers`` > 1 runs photos in fresh processes."""
    from grmp_edge.data.synth import image_ids

    harsher = dict(harsher or {})
    unknown = [t for t in [*types, *harsher] if t not in DISTORTIONS]
    if unknown or draws < 1:
        raise GrmpError(f"need known distortion types and at least one draw, got {unknown or types}, {draws}")
    if not set(harsher) <= set(types) or min(harsher.values(), default=1) < 1:
        raise GrmpError(f"harsher draws need a trained type and a count of 1 or more, got {harsher}")
    for name in harsher:
        strength_param(name, MAX_STRENGTH)  # a type without harsher strengths fails here, before any work
    jobs = [_PhotoJob(Path(p), i, tuple(types), draws, seed, spec, Path(work_dir) / f"{ref_id}.npz",
                      tuple(sorted(harsher.items())))
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
