"""Offline bootstrap weights for ``grmp-tiny``: CLIP-style pre-training on synthetic distortions.

Without a network no pretrained CLIP can be downloaded, and GRMP adapts prompts of a backbone that
must already relate images to quality words. The bootstrap makes such a backbone from nothing: pristine
photos are distorted (``grmp_edge.data.synth``) and ``grmp-tiny`` is trained contrastively on random
native-resolution 96 px crops, each crop against two captions at once:

* its *specific* caption from the distortion metadata (level 1 -> "a high quality photo with slight
  gaussian blur", level 5 -> "a very low quality photo with severe gaussian blur", references -> "a
  pristine high quality photo"), where every pair of a batch sharing a caption counts as a positive;
* a *generic* quality caption ("a {q} photo" / "a photo of {q}", references also "a pristine photo")
  whose quality words ``q`` are graded by level and pseudo-MOS (:func:`generic_grade`), with targets
  that decay with the grade difference. These are the words GRMP's prompts and the zero-shot prompts
  ("a high quality photo" vs "a low quality photo") use, so they must mean something.

The corpus is decoded once into memory and resized by ``grmp-tiny``'s model-spec preprocessing
(shorter side 256; the crop size is the model's 96 px input), so training sees what inference sees.
Scene words (GRMP's nine scene classes) are not trained: the synthetic corpus has no scene labels.

Weights are looked up in this order: the copy shipped in ``grmp_edge/assets``, the user cache
(``~/.cache/grmp-edge/bootstrap``, root overridable with ``$GRMP_EDGE_CACHE``), else they are built
once from scikit-image's bundled photos. ``HELD_OUT_TYPES`` are the distortion types the shipped
weights never saw; ``scripts/build_bootstrap.py`` reports zero-shot quality on them separately.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from grmp_edge.artifacts import cache_root
from grmp_edge.data.distortions import DISTORTIONS
from grmp_edge.data.scenes import SCENE_CLASSES
from grmp_edge.errors import GrmpError, require
from grmp_edge.spec import PreprocessSpec
from grmp_edge.train.backbones import GRMP_TINY as BACKBONE
from grmp_edge.train.bootstrap_corpus import distort_photos, photo_scenes

torch = require("torch")
open_clip = require("open_clip")
F = torch.nn.functional

# One type per family (blur, colour, compression, noise, spatial), never used to build the shipped weights.
HELD_OUT_TYPES = ("lens_blur", "color_saturation_2", "jpeg2000", "impulse_noise", "pixelate")
SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "grmp-tiny-bootstrap.safetensors"

# (quality words, severity word) per level of the specific captions; 1 = mildest.
LEVEL_WORDS = {
    1: ("high quality", "slight"),
    2: ("good quality", "mild"),
    3: ("fair quality", "moderate"),
    4: ("low quality", "strong"),
    5: ("very low quality", "severe"),
}
PRISTINE_CAPTION = "a pristine high quality photo"
# Names whose words would not say what the distortion looks like.
TYPE_WORDS = {
    "color_saturation_1": "desaturation",
    "color_saturation_2": "oversaturation",
    "white_noise_color": "colour channel noise",
    "non_eccentricity_patch": "displaced patches",
    "jpeg": "jpeg compression",
    "jpeg2000": "jpeg2000 compression",
    "denoise": "denoising smear",
    "high_sharpen": "oversharpening",
    "contrast_change": "contrast loss",
    "quantization": "intensity quantization",
}
# Generic quality words, best first; an image's grade (index here) comes from generic_grade().
# The first and last are GRMP's class words.
GENERIC_WORDS = ("high quality", "good quality", "fair quality", "low quality")
GENERIC_TEMPLATES = ("a {} photo", "a photo of {}")
PRISTINE_GENERIC = "a pristine photo"
# Pseudo-MOS a level-1 image needs to be called "high quality" (mild levels of some types already
# show; those are "good quality", like level 2).
HIGH_SCORE = 0.9
# Generic targets: weight exp(-GRADE_DECAY * |grade difference|), so neighbouring grades are near misses.
GRADE_DECAY = 2.0
ZERO_SHOT_PROMPTS = (GENERIC_TEMPLATES[0].format(GENERIC_WORDS[0]), GENERIC_TEMPLATES[0].format(GENERIC_WORDS[-1]))
# What a first `create_backbone("grmp-tiny", "bootstrap")` without shipped weights builds.
DEFAULT_BUILD: dict[str, Any] = {"types": None, "minutes": 10.0, "steps": None, "seed": 0, "patch_dropout": 0.5}


def seen_types() -> list[str]:
    """The distortion types the shipped weights are trained on (all but ``HELD_OUT_TYPES``)."""
    return [t for t in DISTORTIONS if t not in HELD_OUT_TYPES]


def caption(distortion: str, level: int) -> str:
    """The specific caption of a distorted image, e.g. ``"a low quality photo with strong motion blur"``."""
    if level not in LEVEL_WORDS:
        raise GrmpError(f"distortion level must be 1..5 to be captioned, got {level}")
    quality, severity = LEVEL_WORDS[level]
    return f"a {quality} photo with {severity} {TYPE_WORDS.get(distortion, distortion.replace('_', ' '))}"


def generic_grade(level: int | None, score: float | None = None) -> int:
    """Index into ``GENERIC_WORDS`` of an image: references (``level`` None) and level-1 images with
    pseudo-MOS ``score`` >= ``HIGH_SCORE`` are "high quality", other level-1 and level-2 images "good
    quality", level 3 "fair quality", levels 4-5 "low quality"."""
    if level is None:
        return 0
    if level not in LEVEL_WORDS:
        raise GrmpError(f"distortion level must be 1..5 to be captioned, got {level}")
    if level == 1:
        return 0 if score is not None and score >= HIGH_SCORE else 1
    return {2: 1, 3: 2, 4: 3, 5: 3}[level]


def generic_captions(grade: int, pristine: bool = False) -> list[str]:
    """The generic captions an image of ``grade`` may get (references also "a pristine photo")."""
    texts = [t.format(GENERIC_WORDS[grade]) for t in GENERIC_TEMPLATES]
    return texts + [PRISTINE_GENERIC] if pristine else texts


# --------------------------------------------------------------------------- where the weights live

def cached_weights_path() -> Path:
    """Where a locally built copy of the bootstrap weights is kept."""
    return cache_root() / "bootstrap" / f"{BACKBONE}.safetensors"


def bootstrap_weights(rebuild: bool = False) -> Path:
    """The bootstrap weights file: a locally built copy in the cache, else the shipped copy, else
    built now (once) from the photos bundled with scikit-image, with a progress bar. ``rebuild``
    builds a fresh cached copy even when one exists (``grmp-edge train --pretrained bootstrap --rebuild``)."""
    if not rebuild:
        for path in (cached_weights_path(), SHIPPED_WEIGHTS):
            if path.is_file():
                return path
    from rich.console import Console

    from grmp_edge.data.pristine import bundled_photos

    target = cached_weights_path()
    Console(stderr=True).print(
        f"[bold]Building the {BACKBONE} bootstrap weights (~{DEFAULT_BUILD['minutes']:g} min) into {target}[/bold]")
    build_bootstrap(target, bundled_photos(), work_dir=target.parent / "corpus" / "bundled", **DEFAULT_BUILD)
    return target


# --------------------------------------------------------------------------- loss

def same_caption_targets(caption_ids: "torch.Tensor") -> "torch.Tensor":
    """``(N, N)`` row-stochastic targets: each row's mass spread evenly over the samples of the
    batch that have the same caption id (itself included)."""
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def graded_targets(grades: "torch.Tensor", decay: float = GRADE_DECAY) -> "torch.Tensor":
    """``(N, N)`` row-stochastic targets from per-sample grades: weight ``exp(-decay * |g_i - g_j|)``,
    so equal grades are full positives and neighbouring grades partial ones (ordinal soft labels)."""
    g = grades.float()
    weight = torch.exp(-decay * (g[:, None] - g[None, :]).abs())
    return weight / weight.sum(dim=1, keepdim=True)


class SoftTargetClipLoss(open_clip.loss.ClipLoss):
    """open_clip's ClipLoss against a given ``(N, N)`` target matrix in both directions instead of
    the identity. With :func:`same_caption_targets` of distinct captions this is exactly ClipLoss;
    without soft targets, two crops captioned alike would be pushed apart as negatives."""

    def forward(self, image_features, text_features, logit_scale, targets, output_dict=False):
        logits_per_image, logits_per_text = self.get_logits(image_features, text_features, logit_scale)
        targets = targets.to(logits_per_image.dtype)
        loss = (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets.T)) / 2
        return {"contrastive_loss": loss} if output_dict else loss


@dataclass(frozen=True)
class CrossPhotoLoss:
    """Weights and settings of the terms that compare images across photos, added to the two
    contrastive losses (all weights 0: the contrastive losses alone).

    ``rank``: pairwise logistic ranking (RankNet) of the zero-shot score ``<f, t_high - t_low>`` over
    every pair of the batch whose order is known (:func:`ranking_pairs`), at temperature ``tau``;
    ``spread``: the variance of the references' zero-shot scores relative to the batch's
    (:func:`pristine_spread`), pulling pristine photos of different content to one score;
    ``scene``: cross-entropy of the image against QGR's nine scene prompts ("a photo of a {c}") for
    photos with a scene label. Batches hold ``reference_share`` references and distorted images of
    ``types_per_batch`` types, so that each type meets itself on several photos and strengths (0:
    types drawn uniformly)."""

    rank: float = 1.0
    spread: float = 1.0
    scene: float = 0.5
    tau: float = 0.03
    reference_share: float = 0.1
    types_per_batch: int = 8


# What the old contrastive-only recipe is (graded corpus, no cross-photo terms).
CONTRASTIVE_ONLY = CrossPhotoLoss(rank=0.0, spread=0.0, scene=0.0, reference_share=0.05, types_per_batch=0)
# Same type: the milder image must score higher once strengths differ by this much (a quarter level).
LEVEL_MARGIN = 0.25
# Different types: ordered by full-reference pseudo-MOS when it differs by this much, at this weight
# (pseudo-MOS only roughly agrees with how bad a distortion looks, so it counts for less).
FR_MARGIN, FR_WEIGHT = 0.15, 0.25


def ranking_pairs(strengths: "torch.Tensor", kinds: "torch.Tensor", quality: "torch.Tensor") -> "torch.Tensor":
    """``(N, N)`` weights, ``w[i, j] > 0`` where image ``i`` should score above image ``j``: a
    reference (``kinds`` -1) above every distorted image; the same type at a strength lower by
    ``LEVEL_MARGIN`` or more, on any photo; another type with a pseudo-MOS higher by ``FR_MARGIN`` or
    more. Each of the three kinds of pair carries the same total weight (``FR_WEIGHT`` for the last),
    so the many reference and cross-type pairs do not drown the same-type ones."""
    ref = kinds < 0
    same = kinds[:, None] == kinds[None, :]
    by_level = same & ~ref[:, None] & (strengths[None, :] - strengths[:, None] >= LEVEL_MARGIN)
    by_reference = ref[:, None] & ~ref[None, :]
    by_quality = ~same & ~ref[:, None] & ~ref[None, :] & (quality[:, None] - quality[None, :] >= FR_MARGIN)
    weights = torch.zeros(kinds.shape * 2, device=kinds.device)
    for mask, weight in ((by_level, 1.0), (by_reference, 1.0), (by_quality, FR_WEIGHT)):
        weights = weights + weight * mask.float() / max(1, int(mask.sum()))
    return weights


def ranking_loss(scores: "torch.Tensor", pairs: "torch.Tensor", tau: float) -> "torch.Tensor":
    """Weighted mean of ``softplus(-(s_i - s_j) / tau)`` over the pairs of :func:`ranking_pairs`
    (0 when the batch has none)."""
    if not bool((pairs > 0).any()):
        return scores.sum() * 0.0
    return (pairs * F.softplus(-(scores[:, None] - scores[None, :]) / tau)).sum() / pairs.sum()


def pristine_spread(scores: "torch.Tensor", is_reference: "torch.Tensor") -> "torch.Tensor":
    """Variance of the references' scores over the variance of the whole batch's: different photos,
    one pristine score. Relative, because an absolute variance is cheapest to remove by giving every
    image one score (a first pilot collapsed the quality direction that way in 30 steps)."""
    if int(is_reference.sum()) < 2:
        return scores.sum() * 0.0
    return scores[is_reference].var(unbiased=False) / (scores.var(unbiased=False) + 1e-8)


def scene_loss(image_features, scene_features, logit_scale, scenes: "torch.Tensor") -> "torch.Tensor":
    """Cross-entropy of each labelled image against the scene prompts (``scenes`` -1: unlabelled)."""
    labelled = scenes >= 0
    if not bool(labelled.any()):
        return image_features.sum() * 0.0
    logits = logit_scale * image_features[labelled] @ scene_features.T
    return F.cross_entropy(logits, scenes[labelled])


# --------------------------------------------------------------------------- data

@dataclass
class Batch:
    """Random crops (``(N, crop, crop, 3)`` uint8), their specific and generic caption ids, and the
    corpus index of each crop's image (``picks``)."""

    crops: np.ndarray
    ids: np.ndarray
    generic: np.ndarray
    picks: np.ndarray


@dataclass
class CaptionedCorpus:
    """A corpus decoded into memory, with caption ids and what the cross-photo losses need per image.

    ``captions[id]`` is a caption's text; ``caption_ids`` is each image's specific caption,
    ``generic_ids[i]`` the generic captions image ``i`` may get, ``caption_grades`` each caption's
    generic grade (-1 for specific captions). Per image: ``strengths`` (continuous level, 0 for
    references), ``kinds`` (index into ``DISTORTIONS``, -1 for references), ``photos`` (index of its
    pristine photo), ``quality`` (pseudo-MOS, 1 for references) and ``scenes`` (index into the scene
    classes, -1 unlabelled)."""

    pixels: list[np.ndarray]
    caption_ids: np.ndarray
    generic_ids: list[np.ndarray]
    captions: list[str]
    caption_grades: np.ndarray
    is_reference: np.ndarray
    images: list[str]
    strengths: np.ndarray
    kinds: np.ndarray
    photos: np.ndarray
    quality: np.ndarray
    scenes: np.ndarray

    @classmethod
    def assemble(cls, pixels: list[np.ndarray], kinds: list[str], strengths: Sequence[float],
                 quality: Sequence[float], photos: Sequence[int], scenes: Sequence[int],
                 images: list[str]) -> "CaptionedCorpus":
        """Caption images of type ``kinds`` (``""``: a reference) at ``strengths``: the specific
        caption of the nearest graded level, the generic grade of that level and the pseudo-MOS."""
        flags = [k == "" for k in kinds]
        levels = [None if f else int(np.clip(np.rint(s), 1, 5)) for f, s in zip(flags, strengths)]
        specific = [PRISTINE_CAPTION if lvl is None else caption(k, lvl) for k, lvl in zip(kinds, levels)]
        grades = [generic_grade(lvl, q) for lvl, q in zip(levels, quality)]
        generic = [generic_captions(g, pristine=f) for g, f in zip(grades, flags)]
        generic_grades = {t: g for g in range(len(GENERIC_WORDS)) for t in generic_captions(g, pristine=g == 0)}
        captions = sorted(set(specific)) + list(generic_grades)
        index = {c: i for i, c in enumerate(captions)}
        return cls(pixels, np.asarray([index[t] for t in specific]),
                   [np.asarray([index[t] for t in texts]) for texts in generic], captions,
                   np.asarray([generic_grades.get(c, -1) for c in captions], dtype=np.int64),
                   np.asarray(flags), images, np.asarray(strengths, np.float32),
                   np.asarray([-1 if f else DISTORTIONS.index(k) for k, f in zip(kinds, flags)], np.int64),
                   np.asarray(photos, np.int64), np.asarray(quality, np.float32), np.asarray(scenes, np.int64))

    @classmethod
    def from_manifest(cls, manifest: str | Path, spec: PreprocessSpec | None = None,
                      workers: int = 2) -> "CaptionedCorpus":
        """Distorted rows of a :func:`~grmp_edge.data.synth.synthesize` manifest (the five graded
        levels) plus their references (``ref/<ref>.png`` beside it), decoded once and resized by
        ``spec`` (default: grmp-tiny's model-spec preprocessing) so that training crops come from what
        inference would crop."""
        from concurrent.futures import ThreadPoolExecutor

        from grmp_edge.images import read_rgb
        from grmp_edge.data.manifest import load_manifest
        from grmp_edge.preprocess import resize

        manifest = Path(manifest)
        records = load_manifest(manifest)
        refs = sorted({r.ref for r in records if r.ref})
        ref_images = [manifest.parent / "ref" / f"{ref}.png" for ref in refs]
        missing = [p for p in ref_images if not p.is_file()]
        if missing:
            raise GrmpError(f"reference image missing for the bootstrap corpus: {missing[0]}")
        photo = {ref: i for i, ref in enumerate(refs)}
        photos = [photo[r.ref] for r in records] + list(range(len(refs)))
        scenes = photo_scenes(ref_images, SCENE_CLASSES)
        images = [r.image for r in records] + ref_images
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL and cv2 release the GIL
            pixels = list(pool.map(lambda path: resize(read_rgb(path), spec or _tiny_spec()), images))
        return cls.assemble(pixels, [r.group for r in records] + [""] * len(refs),
                            [r.level for r in records] + [0.0] * len(refs),
                            [r.score for r in records] + [1.0] * len(refs), photos, scenes[photos],
                            [str(p) for p in images])

    @classmethod
    def from_photos(cls, photos: Sequence[str | Path], types: Sequence[str], draws: int, seed: int,
                    work_dir: str | Path, spec: PreprocessSpec | None = None, workers: int = 2,
                    harsher: dict[str, int] | None = None) -> "CaptionedCorpus":
        """Every photo resized by ``spec`` (default grmp-tiny's) and distorted with every type at
        ``draws`` random strengths (:mod:`grmp_edge.train.bootstrap_corpus`; ``harsher[type]`` more
        past level 5, captioned as level 5), plus the references."""
        photos = [Path(p) for p in photos]
        made = distort_photos(photos, types, draws, seed, spec or _tiny_spec(), Path(work_dir), workers, harsher)
        scenes = photo_scenes(photos, SCENE_CLASSES)
        index = np.concatenate([np.full(len(m["kinds"]), i) for i, m in enumerate(made)])
        kinds = [str(k) for m in made for k in m["kinds"]]
        strengths = np.concatenate([m["strengths"] for m in made])
        return cls.assemble([image for m in made for image in m["pixels"]], kinds, strengths,
                            np.concatenate([m["quality"] for m in made]), index, scenes[index],
                            [f"{photos[i].name} {k or 'pristine'} {s:.2f}" for i, k, s in zip(index, kinds, strengths)])

    def sample(self, rng: np.random.Generator, batch: int, crop: int, reference_share: float = 0.05,
               types_per_batch: int = 0) -> Batch:
        """A batch of random ``crop`` px crops, randomly flipped, with each crop's specific and
        (randomly drawn) generic caption ids. References (distinct photos while there are enough)
        make ~``reference_share`` of the batch (uniform sampling would almost never draw them); the
        distorted crops come from ``types_per_batch`` random types (0: any). Deterministic for a
        given ``rng`` state."""
        refs, dists = np.flatnonzero(self.is_reference), np.flatnonzero(~self.is_reference)
        n_ref = min(batch, max(1, round(batch * reference_share))) if len(refs) else 0
        if types_per_batch and len(dists):
            present = np.unique(self.kinds[dists])
            chosen = rng.choice(present, min(types_per_batch, len(present)), replace=False)
            dists = dists[np.isin(self.kinds[dists], chosen)]
        picks = np.concatenate([rng.choice(refs, n_ref, replace=n_ref > len(refs)),
                                rng.choice(dists, batch - n_ref)]).astype(np.int64)
        crops = np.empty((batch, crop, crop, 3), np.uint8)
        generic = np.empty(batch, np.int64)
        for i, item in enumerate(picks):
            rgb = self.pixels[item]
            h, w = rgb.shape[:2]
            if h < crop or w < crop:
                raise GrmpError(f"{self.images[item]} is {w}x{h}, smaller than the {crop} px crop")
            top, left = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
            patch = rgb[top:top + crop, left:left + crop]
            crops[i] = patch[:, ::-1] if rng.random() < 0.5 else patch
            options = self.generic_ids[item]
            generic[i] = options[rng.integers(len(options))]
        return Batch(crops, self.caption_ids[picks], generic, picks)


def _tiny_spec() -> PreprocessSpec:
    from grmp_edge.train.backbones import model_spec

    return model_spec(BACKBONE, None).preprocess


# --------------------------------------------------------------------------- training

def _param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only; gains, biases and the temperature are left alone (open_clip's rule)."""
    decay, keep = [], []
    for name, p in model.named_parameters():
        (keep if p.ndim < 2 or "logit_scale" in name or "ln" in name or "bias" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


class _Texts:
    """The token ids of every caption the trainer encodes: the corpus's, then the two zero-shot
    prompts' ids among them and QGR's scene prompts appended."""

    def __init__(self, corpus: CaptionedCorpus, device):
        from grmp_edge.train.backbones import backbone_config, tokenizer_for
        from grmp_edge.train.qgr import scene_prompts

        texts = corpus.captions + scene_prompts(SCENE_CLASSES)
        self.tokens = tokenizer_for(backbone_config(BACKBONE))(texts).to(device)
        self.grades = torch.from_numpy(corpus.caption_grades).to(device)
        zero_shot = [corpus.captions.index(p) for p in ZERO_SHOT_PROMPTS]
        self.extra = torch.tensor(zero_shot + list(range(len(corpus.captions), len(texts))), device=device)


def step_losses(clip, corpus: CaptionedCorpus, batch: Batch, texts: _Texts, recipe: CrossPhotoLoss,
                bf16: bool = False) -> dict[str, "torch.Tensor"]:
    """The loss terms of one batch: ``specific`` and ``generic`` (contrastive), and those of
    ``recipe`` with a non-zero weight (``rank``, ``spread``, ``scene``)."""
    from grmp_edge.preprocess import normalize

    device = texts.tokens.device
    n = len(batch.picks)
    ids, generic = torch.from_numpy(batch.ids).to(device), torch.from_numpy(batch.generic).to(device)
    unique, inverse = torch.unique(torch.cat([ids, generic, texts.extra]), return_inverse=True)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        image = clip.encode_image(torch.from_numpy(normalize(batch.crops, _tiny_spec())).to(device), normalize=True)
        text = clip.encode_text(texts.tokens[unique], normalize=True)[inverse]
    image, text = image.float(), text.float()
    scale, loss_fn = clip.logit_scale.exp(), SoftTargetClipLoss()
    terms = {"specific": loss_fn(image, text[:n], scale, same_caption_targets(ids)),
             "generic": loss_fn(image, text[n:2 * n], scale, graded_targets(texts.grades[generic]))}
    per_image = {k: torch.from_numpy(getattr(corpus, k)[batch.picks]).to(device)
                 for k in ("strengths", "kinds", "quality", "scenes", "is_reference")}
    scores = image @ (text[2 * n] - text[2 * n + 1])
    if recipe.rank:
        pairs = ranking_pairs(per_image["strengths"], per_image["kinds"], per_image["quality"])
        terms["rank"] = ranking_loss(scores, pairs, recipe.tau)
    if recipe.spread:
        terms["spread"] = pristine_spread(scores, per_image["is_reference"])
    if recipe.scene:
        terms["scene"] = scene_loss(image, text[2 * n + 2:], scale, per_image["scenes"])
    return terms


def total_loss(terms: dict[str, "torch.Tensor"], recipe: CrossPhotoLoss) -> "torch.Tensor":
    """The mean of the two contrastive terms plus the weighted cross-photo terms."""
    loss = (terms["specific"] + terms["generic"]) / 2
    for name in ("rank", "spread", "scene"):
        if name in terms:
            loss = loss + getattr(recipe, name) * terms[name]
    return loss


def _save_checkpoint(path: Path, clip, optimizer, rng: np.random.Generator, history: dict, seconds: float) -> None:
    """Model, optimiser, sampler state and history, so an interrupted build resumes where it stopped."""
    from grmp_edge.artifacts import atomic_write

    state = {"model": clip.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state,
             "history": history, "seconds": seconds}
    atomic_write(path, lambda tmp: torch.save(state, str(tmp)))


def _resume(path: Path | None, clip, optimizer, rng: np.random.Generator) -> tuple[dict, float]:
    """Load a checkpoint of :func:`_save_checkpoint` into ``clip``, ``optimizer`` and ``rng``;
    returns its history and seconds spent (empty and 0 when there is none)."""
    if path is None or not path.is_file():
        return {"loss": []}, 0.0
    state = torch.load(str(path), map_location="cpu", weights_only=False)  # our own file
    clip.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng.bit_generator.state = state["rng"]
    return state["history"], float(state["seconds"])


def _lr_scale(step: int, done: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay with the share of the budget ``done``."""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * done))


def _budget_done(step: int, seconds: float, steps: int | None, minutes: float | None) -> float:
    """The share of the budget spent: whichever of steps and minutes is closer to its end."""
    return max(step / steps if steps else 0.0, seconds / (minutes * 60.0) if minutes else 0.0)


@contextlib.contextmanager
def _progress_bar(enabled: bool):
    """A rich progress bar; yields ``update(done, step, loss)``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("bootstrap {task.fields[step]} steps, loss {task.fields[loss]}"), BarColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, disable=not enabled) as bar:
        task = bar.add_task("bootstrap", total=1.0, step=0, loss="-")
        yield lambda done, step, loss: bar.update(task, completed=min(done, 1.0), step=step, loss=f"{loss:.3f}")


def train_contrastive(clip, corpus: CaptionedCorpus, minutes: float | None = None, steps: int | None = None,
                      seed: int = 0, batch_size: int = 128, lr: float = 1e-3, warmup: int = 100,
                      weight_decay: float = 0.1, patch_dropout: float = 0.0, unmasked_share: float = 0.1,
                      bf16: bool = False, device: str = "cpu", progress: bool = True,
                      recipe: CrossPhotoLoss = CONTRASTIVE_ONLY, checkpoint: Path | None = None,
                      checkpoint_every: int = 100) -> dict[str, Any]:
    """Train ``clip`` in place on ``device`` until ``steps`` or ``minutes`` run out (whichever is
    first) with the terms of :func:`step_losses` combined by :func:`total_loss`. The cosine
    learning-rate schedule follows whichever budget is closer to spent, after a linear warm-up of
    ``warmup`` steps (at most a tenth of ``steps``). ``patch_dropout`` drops that share of patch tokens
    (FLIP; cheaper steps) except in the last ``unmasked_share`` of the budget, which trains on whole
    crops as evaluation sees them. ``bf16`` runs forward and backward under bfloat16 autocast.
    ``checkpoint``: a file saved every ``checkpoint_every`` steps and resumed from when it exists.
    Returns the history (``losses`` and each term per step)."""
    from grmp_edge.train.backbones import backbone_config, image_size_of

    if minutes is None and steps is None:
        raise GrmpError("give the bootstrap a budget: minutes and/or steps")
    if not 0.0 <= patch_dropout < 1.0:
        raise GrmpError(f"patch dropout must be in [0, 1), got {patch_dropout}")
    size, texts = image_size_of(backbone_config(BACKBONE)), _Texts(corpus, device)
    warmup = max(1, min(warmup, steps // 10)) if steps else warmup
    rng = np.random.default_rng(seed)
    clip.to(device).train()
    unmasked = clip.visual.patch_dropout
    masked = open_clip.transformer.PatchDropout(patch_dropout) if patch_dropout else unmasked
    optimizer = torch.optim.AdamW(_param_groups(clip, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    history, prior = _resume(checkpoint, clip, optimizer, rng)
    start = time.monotonic()
    with _progress_bar(progress) as update:
        while (done := _budget_done(len(history["loss"]), prior + time.monotonic() - start, steps, minutes)) < 1.0:
            for group in optimizer.param_groups:
                group["lr"] = lr * _lr_scale(len(history["loss"]), done, warmup)
            clip.visual.patch_dropout = masked if done < 1.0 - unmasked_share else unmasked
            batch = corpus.sample(rng, batch_size, size, recipe.reference_share, recipe.types_per_batch)
            terms = step_losses(clip, corpus, batch, texts, recipe, bf16)
            loss = total_loss(terms, recipe)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, math.log(100))  # as open_clip's trainer does
            for name, value in {"loss": loss, **terms}.items():
                history.setdefault(name, []).append(value.item())
            if checkpoint and len(history["loss"]) % checkpoint_every == 0:
                _save_checkpoint(checkpoint, clip, optimizer, rng, history, prior + time.monotonic() - start)
            update(done, len(history["loss"]), float(np.mean(history["loss"][-20:])))
    clip.visual.patch_dropout = unmasked
    clip.eval()
    return {"device": str(device), "steps": len(history["loss"]), "minutes": (prior + time.monotonic() - start) / 60.0,
            "losses": history["loss"], "terms": history, "batch_size": batch_size, "lr": lr, "seed": seed,
            "patch_dropout": patch_dropout, "unmasked_share": unmasked_share, "bf16": bf16,
            "logit_scale": clip.logit_scale.exp().item(), "recipe": asdict(recipe)}


def save_weights(clip, path: str | Path, metadata: dict[str, str]) -> Path:
    """The backbone's state dict as fp16 safetensors, written atomically."""
    save_file = require("safetensors.torch").save_file
    from grmp_edge.artifacts import atomic_write

    state = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in clip.state_dict().items()}
    meta = {"format": "pt", "backbone": BACKBONE, **{k: str(v) for k, v in metadata.items()}}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def build_bootstrap(out: str | Path, sources: Sequence[str | Path], types: Sequence[str] | None = None,
                    minutes: float | None = None, steps: int | None = None, seed: int = 0,
                    work_dir: str | Path | None = None, size: int = 256, batch_size: int = 128,
                    lr: float = 1e-3, patch_dropout: float = 0.0, bf16: bool = False, device: str = "cpu",
                    workers: int | None = None, progress: bool = True, draws: int = 0,
                    recipe: CrossPhotoLoss = CONTRASTIVE_ONLY, checkpoint: str | Path | None = None,
                    init: str | Path | None = None, harsher: dict[str, int] | None = None) -> dict[str, Any]:
    """Distort ``sources`` (photos or folders) with ``types`` (default all 25), decode the corpus into
    memory, train a randomly initialised ``grmp-tiny`` on it with ``recipe`` within ``minutes`` /
    ``steps`` and save fp16 weights to ``out``. ``draws`` > 0 distorts each photo and type at that many
    random strengths (:meth:`CaptionedCorpus.from_photos`, with ``harsher`` draws past level 5); 0
    uses the five graded levels of :func:`~grmp_edge.data.synth.synthesize` at ``size``. The corpus
    goes to ``work_dir`` (reused when rerun); ``checkpoint`` makes the training resumable; ``init``
    continues from earlier weights instead of a random initialisation. Returns the history."""
    from grmp_edge.data.synth import collect_sources, synthesize
    from grmp_edge.train.backbones import backbone_config, clip_from_config

    types = list(DISTORTIONS if types is None else types)
    work_dir = Path(work_dir) if work_dir is not None else Path(out).parent / "corpus"
    if draws:
        corpus = CaptionedCorpus.from_photos(collect_sources(sources), types, draws, seed, work_dir,
                                             workers=workers or 2, harsher=harsher)
    elif harsher:
        raise GrmpError("harsher draws need random strengths (draws > 0)")
    else:
        manifest = synthesize(list(sources), work_dir, size=size, seed=seed, types=types, workers=workers,
                              progress=progress)
        corpus = CaptionedCorpus.from_manifest(manifest, workers=workers or 2)
    torch.manual_seed(seed)
    clip = clip_from_config(backbone_config(BACKBONE), BACKBONE)
    if init:  # continue from earlier weights (same architecture) instead of the random start
        open_clip.load_checkpoint(clip, str(init))
    history = train_contrastive(clip, corpus, minutes=minutes, steps=steps, seed=seed, batch_size=batch_size,
                                lr=lr, patch_dropout=patch_dropout, bf16=bf16, device=device, progress=progress,
                                recipe=recipe, checkpoint=Path(checkpoint) if checkpoint else None)
    save_weights(clip, out, {"steps": history["steps"], "seed": seed, "types": ",".join(types), "draws": draws,
                             "harsher": json.dumps(harsher or {}, sort_keys=True),
                             "recipe": json.dumps(asdict(recipe), sort_keys=True),
                             "init": Path(init).name if init else "random"})
    return {**history, "out": str(out), "images": len(corpus.images), "captions": len(corpus.captions)}


# --------------------------------------------------------------------------- evaluation

def zero_shot_scores(model, images: Sequence[str | Path], preprocess_spec: PreprocessSpec, crops: int = 4,
                     batch_size: int = 32) -> np.ndarray:
    """The zero-shot score ``<f, t_high> - <f, t_low>`` (prompts ``ZERO_SHOT_PROMPTS``) of each image
    file under ``model`` (an open_clip CLIP): resized as ``preprocess_spec`` says (the model spec's
    preprocessing), then ``crops`` model-size crops of it
    (:func:`~grmp_edge.preprocess.native_crops`, the runtime's crop mode; 1 = the centre crop)
    scored and averaged."""
    from grmp_edge.images import read_rgb
    from grmp_edge.preprocess import native_crops, normalize, resize

    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=model.context_length)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = []
    with torch.no_grad():
        text = model.encode_text(tokenizer(list(ZERO_SHOT_PROMPTS)).to(device), normalize=True)
        direction = text[0] - text[1]
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            batch = np.concatenate([native_crops(resize(read_rgb(path), preprocess_spec), preprocess_spec, crops)
                                    for path in chunk])
            features = model.encode_image(torch.from_numpy(normalize(batch, preprocess_spec)).to(device),
                                          normalize=True)
            scores.extend((features @ direction).reshape(len(chunk), -1).mean(dim=1).tolist())
    model.train(was_training)
    return np.asarray(scores)


def zero_shot_level_srcc(model, manifest_records, preprocess_spec: PreprocessSpec, crops: int = 5,
                         batch_size: int = 32) -> dict[str, dict[str, float]]:
    """Per distortion type, SRCC between the zero-shot score (:func:`zero_shot_scores`) and the
    (negated) level, two ways: ``"pooled"`` over all photos of a type at once (the score must also be
    comparable across photos), and ``"per_photo"`` within each photo's levels, then averaged over
    photos. Records need a ``group`` (type) and a ``level`` (others are ignored); ``ref`` names the
    photo. A ranking with constant scores counts as 0 (it ranks nothing).
    """
    from grmp_edge.metrics import level_srcc

    records = [r for r in manifest_records if r.group and r.level is not None]
    if not records:
        raise GrmpError("no records with a distortion type and level to evaluate")
    scores = zero_shot_scores(model, [r.image for r in records], preprocess_spec, crops, batch_size)
    table = level_srcc(scores, [r.level for r in records], [r.group for r in records], [str(r.ref) for r in records])
    order = [t for t in DISTORTIONS if t in table]
    # An undefined ranking (constant scores) ranks nothing: it counts as 0 in these means.
    return {key: {t: table[t][key] or 0.0 for t in order} for key in ("pooled", "per_photo")}
