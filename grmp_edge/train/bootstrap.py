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

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from grmp_edge.artifacts import cache_root
from grmp_edge.data.distortions import DISTORTIONS
from grmp_edge.errors import GrmpError, require
from grmp_edge.spec import PreprocessSpec
from grmp_edge.train.backbones import GRMP_TINY as BACKBONE

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


# --------------------------------------------------------------------------- data

@dataclass
class CaptionedCorpus:
    """A synthetic corpus decoded into memory, with caption ids per image.

    ``captions[id]`` is a caption's text; ``caption_ids`` is each image's specific caption,
    ``generic_ids[i]`` the generic captions image ``i`` may get, ``caption_grades`` each caption's
    generic grade (-1 for specific captions)."""

    pixels: list[np.ndarray]
    caption_ids: np.ndarray
    generic_ids: list[np.ndarray]
    captions: list[str]
    caption_grades: np.ndarray
    is_reference: np.ndarray
    images: list[Path]

    @classmethod
    def from_manifest(cls, manifest: str | Path, spec: PreprocessSpec | None = None,
                      workers: int = 2) -> "CaptionedCorpus":
        """Distorted rows of a :func:`~grmp_edge.data.synth.synthesize` manifest plus their references
        (``ref/<ref>.png`` beside it), decoded once and resized by ``spec`` (default: grmp-tiny's
        model-spec preprocessing) so that training crops come from what inference would crop."""
        from concurrent.futures import ThreadPoolExecutor

        from grmp_edge.images import read_rgb
        from grmp_edge.data.manifest import load_manifest
        from grmp_edge.preprocess import resize
        from grmp_edge.train.backbones import model_spec

        manifest = Path(manifest)
        records = load_manifest(manifest)
        refs = sorted({r.ref for r in records if r.ref})
        ref_images = [manifest.parent / "ref" / f"{ref}.png" for ref in refs]
        missing = [p for p in ref_images if not p.is_file()]
        if missing:
            raise GrmpError(f"reference image missing for the bootstrap corpus: {missing[0]}")
        specific = [caption(r.group, r.level) for r in records] + [PRISTINE_CAPTION] * len(ref_images)
        grades = [generic_grade(r.level, r.score) for r in records] + [0] * len(ref_images)
        flags = [False] * len(records) + [True] * len(ref_images)
        generic = [generic_captions(g, pristine=f) for g, f in zip(grades, flags)]

        generic_grades = {t: g for g in range(len(GENERIC_WORDS)) for t in generic_captions(g, pristine=g == 0)}
        captions = sorted(set(specific)) + list(generic_grades)
        index = {c: i for i, c in enumerate(captions)}
        caption_grades = np.asarray([generic_grades.get(c, -1) for c in captions], dtype=np.int64)

        spec = spec or model_spec(BACKBONE, None).preprocess
        images = [r.image for r in records] + ref_images
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL and cv2 release the GIL
            pixels = list(pool.map(lambda path: resize(read_rgb(path), spec), images))
        return cls(pixels, np.asarray([index[t] for t in specific]),
                   [np.asarray([index[t] for t in texts]) for texts in generic], captions, caption_grades,
                   np.asarray(flags), images)

    def sample(self, rng: np.random.Generator, batch: int, crop: int, reference_share: float = 0.05):
        """A batch of random ``crop`` px crops, randomly flipped, as ``(N, crop, crop, 3)`` uint8,
        with each crop's specific and (randomly drawn) generic caption ids. References make
        ~``reference_share`` of the batch (uniform sampling would almost never draw them).
        Deterministic for a given ``rng`` state."""
        refs, dists = np.flatnonzero(self.is_reference), np.flatnonzero(~self.is_reference)
        n_ref = min(len(refs), max(1, round(batch * reference_share))) if len(refs) else 0
        picks = np.concatenate([rng.choice(refs, n_ref), rng.choice(dists, batch - n_ref)])
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
        return crops, self.caption_ids[picks], generic


# --------------------------------------------------------------------------- training

def _param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only; gains, biases and the temperature are left alone (open_clip's rule)."""
    decay, keep = [], []
    for name, p in model.named_parameters():
        (keep if p.ndim < 2 or "logit_scale" in name or "ln" in name or "bias" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def train_contrastive(clip, corpus: CaptionedCorpus, minutes: float | None = None, steps: int | None = None,
                      seed: int = 0, batch_size: int = 128, lr: float = 1e-3, warmup: int = 100,
                      weight_decay: float = 0.1, patch_dropout: float = 0.0, unmasked_share: float = 0.1,
                      bf16: bool = False, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Train ``clip`` in place on ``device`` until ``steps`` or ``minutes`` run out (whichever is
    first). Each step's loss is the mean of the specific-caption and the graded generic-caption
    contrastive losses on the same image features. The cosine learning-rate schedule follows
    whichever budget is closer to spent, after a linear warm-up of ``warmup`` steps (at most a tenth
    of ``steps``). ``patch_dropout`` drops that share of patch tokens (FLIP; cheaper steps) except in
    the last ``unmasked_share`` of the budget, which trains on whole crops as evaluation sees them.
    ``bf16`` runs forward and backward under bfloat16 autocast. Returns the history."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from grmp_edge.preprocess import normalize
    from grmp_edge.train.backbones import backbone_config, image_size_of, model_spec, tokenizer_for

    if minutes is None and steps is None:
        raise GrmpError("give the bootstrap a budget: minutes and/or steps")
    if not 0.0 <= patch_dropout < 1.0:
        raise GrmpError(f"patch dropout must be in [0, 1), got {patch_dropout}")
    cfg = backbone_config(BACKBONE)
    size, spec = image_size_of(cfg), model_spec(BACKBONE, None).preprocess
    texts = tokenizer_for(cfg)(corpus.captions).to(device)
    grades = torch.from_numpy(corpus.caption_grades).to(device)
    if steps:
        warmup = max(1, min(warmup, steps // 10))
    rng = np.random.default_rng(seed)
    clip.to(device).train()
    unmasked = clip.visual.patch_dropout
    masked = open_clip.transformer.PatchDropout(patch_dropout) if patch_dropout else unmasked
    loss_fn = SoftTargetClipLoss()
    optimizer = torch.optim.AdamW(_param_groups(clip, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    budget_s = None if minutes is None else minutes * 60.0
    losses: list[float] = []
    start = time.monotonic()
    columns = [TextColumn("bootstrap {task.fields[step]} steps, loss {task.fields[loss]}"), BarColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("bootstrap", total=1.0, step=0, loss="-")
        while True:
            elapsed = time.monotonic() - start
            done = max(len(losses) / steps if steps else 0.0, elapsed / budget_s if budget_s else 0.0)
            if done >= 1.0:
                break
            scale = min(1.0, (len(losses) + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * done))
            for group in optimizer.param_groups:
                group["lr"] = lr * scale
            clip.visual.patch_dropout = masked if done < 1.0 - unmasked_share else unmasked
            crops, ids, generic = corpus.sample(rng, batch_size, size)
            ids, generic = torch.from_numpy(ids).to(device), torch.from_numpy(generic).to(device)
            unique, inverse = torch.unique(torch.cat([ids, generic]), return_inverse=True)
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                image_features = clip.encode_image(torch.from_numpy(normalize(crops, spec)).to(device),
                                                   normalize=True)
                text_features = clip.encode_text(texts[unique], normalize=True)[inverse]
            image_features, text_features = image_features.float(), text_features.float()
            logit_scale = clip.logit_scale.exp()
            loss = (loss_fn(image_features, text_features[:batch_size], logit_scale, same_caption_targets(ids))
                    + loss_fn(image_features, text_features[batch_size:], logit_scale,
                              graded_targets(grades[generic]))) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, math.log(100))  # as open_clip's trainer does
            losses.append(loss.item())
            bar.update(task, completed=min(done, 1.0), step=len(losses), loss=f"{np.mean(losses[-20:]):.3f}")
    clip.visual.patch_dropout = unmasked
    clip.eval()
    return {"device": str(device), "steps": len(losses), "minutes": (time.monotonic() - start) / 60.0,
            "losses": losses, "batch_size": batch_size, "lr": lr, "seed": seed, "patch_dropout": patch_dropout,
            "unmasked_share": unmasked_share, "bf16": bf16,
            "logit_scale": clip.logit_scale.exp().item()}


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
                    workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Synthesize a corpus from ``sources`` (photos or folders) with ``types`` (default all 25),
    decode it into memory, train a randomly initialised ``grmp-tiny`` on it within ``minutes`` /
    ``steps`` and save fp16 weights to ``out``. The corpus goes to ``work_dir`` (reused when rerun).
    Returns the history."""
    from grmp_edge.data.synth import synthesize
    from grmp_edge.train.backbones import backbone_config, clip_from_config

    types = list(DISTORTIONS if types is None else types)
    work_dir = Path(work_dir) if work_dir is not None else Path(out).parent / "corpus"
    manifest = synthesize(list(sources), work_dir, size=size, seed=seed, types=types, workers=workers,
                          progress=progress)
    corpus = CaptionedCorpus.from_manifest(manifest, workers=workers or 2)
    torch.manual_seed(seed)
    clip = clip_from_config(backbone_config(BACKBONE), BACKBONE)
    history = train_contrastive(clip, corpus, minutes=minutes, steps=steps, seed=seed, batch_size=batch_size,
                                lr=lr, patch_dropout=patch_dropout, bf16=bf16, device=device, progress=progress)
    save_weights(clip, out, {"steps": history["steps"], "seed": seed, "types": ",".join(types)})
    return {**history, "out": str(out), "images": len(corpus.images), "captions": len(corpus.captions)}


# --------------------------------------------------------------------------- evaluation

def zero_shot_level_srcc(model, manifest_records, preprocess_spec: PreprocessSpec, crops: int = 5,
                         batch_size: int = 32) -> dict[str, dict[str, float]]:
    """Per distortion type, SRCC between the zero-shot score and the (negated) level, two ways:
    ``"pooled"`` over all photos of a type at once (the score must also be comparable across
    photos), and ``"per_photo"`` within each photo's levels, then averaged over photos.

    ``model`` is an open_clip CLIP; the score of an image is ``<f, t_high> - <f, t_low>`` with the
    prompts ``ZERO_SHOT_PROMPTS``. Each image is resized as ``preprocess_spec`` says (the model
    spec's preprocessing), then ``crops`` model-size crops of it
    (:func:`~grmp_edge.preprocess.native_crops`, the runtime's crop mode; 1 = the centre crop)
    are scored and averaged. Records need a ``group`` (type) and a ``level`` (others are ignored);
    ``ref`` names the photo. A ranking with constant scores counts as 0 (it ranks nothing).
    """
    from grmp_edge.images import read_rgb
    from grmp_edge.metrics import level_srcc
    from grmp_edge.preprocess import native_crops, normalize, resize

    records = [r for r in manifest_records if r.group and r.level is not None]
    if not records:
        raise GrmpError("no records with a distortion type and level to evaluate")
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=model.context_length)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = []
    with torch.no_grad():
        text = model.encode_text(tokenizer(list(ZERO_SHOT_PROMPTS)).to(device), normalize=True)
        direction = text[0] - text[1]
        for start in range(0, len(records), batch_size):
            chunk = records[start:start + batch_size]
            batch = np.concatenate([native_crops(resize(read_rgb(r.image), preprocess_spec), preprocess_spec, crops)
                                    for r in chunk])
            pixels = torch.from_numpy(normalize(batch, preprocess_spec)).to(device)
            features = model.encode_image(pixels, normalize=True)
            scores.extend((features @ direction).reshape(len(chunk), -1).mean(dim=1).tolist())
    model.train(was_training)

    table = level_srcc(scores, [r.level for r in records], [r.group for r in records], [str(r.ref) for r in records])
    order = [t for t in DISTORTIONS if t in table]
    # An undefined ranking (constant scores) ranks nothing: it counts as 0 in these means.
    return {key: {t: table[t][key] or 0.0 for t in order} for key in ("pooled", "per_photo")}
