"""Build the offline grmp-tiny bootstrap weights and measure zero-shot quality on held-out photos.

Trains grmp-tiny contrastively on a synthetic-distortion corpus (see grmp_edge/train/bootstrap.py),
saves fp16 weights, then scores a small corpus made from other photos with the zero-shot prompts
"a high quality photo" / "a low quality photo" and prints, per distortion type, the SRCC between
score and level, split into the types seen in training and HELD_OUT_TYPES.

The evaluation resizes and crops as grmp-tiny's model spec does (shorter side 256, 96 px crops at
that resolution, ``--eval-crops`` of them averaged) and reports each type's SRCC two ways: pooled over
all evaluation photos (the headline: scores must also compare across photos) and per photo, averaged.

The shipped weights and benchmarks/bootstrap.json were made with the command recorded in that file.
Defaults: scikit-image's bundled photos, the 20 seen types, 12 minutes on the CPU, output to the cache
(``~/.cache/grmp-edge/bootstrap/grmp-tiny.safetensors``), evaluation on kodak24 when ../shared has it.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import numpy as np


def harsher_item(text: str) -> tuple[str, int]:
    """One ``--harsher`` item, ``TYPE=N``, as (type, draws); a malformed one is a usage error."""
    name, _, count = text.partition("=")
    if not name or not count.isdigit():
        raise argparse.ArgumentTypeError(f"expected TYPE=N (such as jpeg=2), got {text!r}")
    return name, int(count)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sources", nargs="+", type=Path, default=None,
                        help="pristine photos or folders to train on (default: scikit-image's bundled photos)")
    parser.add_argument("--quickstart-photos", action="store_true",
                        help="also train on the quickstart's training photos from scikit-image "
                             "(never its held-out ones)")
    parser.add_argument("--val-count", type=int, default=0,
                        help="evenly spaced photos of the first --sources folder set aside for validation")
    parser.add_argument("--types", default="seen",
                        help="'seen' (all but HELD_OUT_TYPES), 'all', or comma-separated distortion names")
    parser.add_argument("--draws", type=int, default=0,
                        help="random strengths per photo and type in [1, 5] (0: the five graded levels)")
    parser.add_argument("--harsher", nargs="+", type=harsher_item, default=[], metavar="TYPE=N",
                        help="N more random strengths per photo of TYPE past level 5 (up to two of the type's "
                             "last steps further; needs --draws)")
    parser.add_argument("--minutes", type=float, default=12.0, help="training time budget")
    parser.add_argument("--steps", type=int, default=None, help="step budget (whichever budget ends first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--patch-dropout", type=float, default=0.0,
                        help="share of patch tokens dropped per step (FLIP), except in the last tenth of the budget")
    recipe = parser.add_argument_group("cross-photo terms (CrossPhotoLoss; all 0: contrastive only)")
    for name, default, text in (
            ("rank", 0.0, "weight of the pairwise ranking loss on the zero-shot score"),
            ("spread", 0.0, "weight of the pristine-score variance"),
            ("scene", 0.0, "weight of the scene-prompt cross-entropy"),
            ("tau", 0.03, "temperature of the ranking and spread terms"),
            ("reference-share", 0.05, "share of references in a batch"),
            ("types-per-batch", 0, "distortion types per batch (0: any)")):
        recipe.add_argument(f"--{name}", type=type(default), default=default, help=text)
    parser.add_argument("--bf16", action="store_true", help="train under bfloat16 autocast")
    parser.add_argument("--device", default="cpu", help="torch device to train and evaluate on")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=None, help="processes for the synthesis")
    parser.add_argument("--out", type=Path, default=None, help="weights file (default: the user cache)")
    parser.add_argument("--init", type=Path, default=None,
                        help="continue from these weights instead of a random initialisation")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="training state saved every 100 steps and resumed from when it exists")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the synthetic corpora (default: <cache>/bootstrap/corpus)")
    parser.add_argument("--eval-crops", type=int, default=4, help="native-resolution crops averaged per image")
    parser.add_argument("--eval-only", type=Path, default=None,
                        help="skip training: evaluate these weights on the validation photos")
    parser.add_argument("--benchmark", type=Path, default=None, help="write the results JSON here")
    args = parser.parse_args(argv)
    args.harsher = dict(args.harsher)  # {type: draws}
    return args


def chosen_types(text: str) -> list[str]:
    from grmp_edge.data.distortions import DISTORTIONS
    from grmp_edge.train.bootstrap import seen_types

    if text == "seen":
        return seen_types()
    if text == "all":
        return list(DISTORTIONS)
    return [t.strip() for t in text.split(",") if t.strip()]


def split_photos(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """(training photos, validation photos): ``--val-count`` evenly spaced photos of the first
    ``--sources`` folder are set aside; the quickstart's training photos are added on request."""
    from grmp_edge.images import list_images
    from grmp_edge.data.pristine import bundled_photos, evenly_spaced
    from grmp_edge.data.synth import collect_sources
    from grmp_edge.quickstart import TRAIN_PHOTOS

    sources = collect_sources(args.sources) if args.sources else bundled_photos()
    val = evenly_spaced(list_images(args.sources[0]), args.val_count) if args.val_count else []
    train = [p for p in sources if p not in val]
    if args.quickstart_photos:
        train += [p for p in bundled_photos() if p.name in TRAIN_PHOTOS and p not in train]
    return train, val


def recipe_of(args: argparse.Namespace):
    """The CrossPhotoLoss the options ask for."""
    from grmp_edge.train.bootstrap import CrossPhotoLoss

    return CrossPhotoLoss(rank=args.rank, spread=args.spread, scene=args.scene, tau=args.tau,
                          reference_share=args.reference_share, types_per_batch=args.types_per_batch)


def shared_relative(path: Path) -> str:
    """A path under the shared folder written as ../shared/..., as the repository refers to it."""
    parts = Path(path).resolve().parts
    return str(Path("..", *parts[parts.index("shared"):])) if "shared" in parts else str(path)


def photo_label(path: Path) -> str:
    """How the result file names a training photo: ../shared/... for the team's datasets,
    ``scikit-image:<name>`` for the wheel's photos, ``<folder>:<name>`` for any other (such as
    ``debian-wallpapers:`` and ``gcompris:`` for ``scripts/debian_photos.py``'s)."""
    if "shared" in path.parts:
        return shared_relative(path)
    origin = "scikit-image" if path.parent.parent.name == "skimage" else path.parent.name
    return f"{origin}:{path.name}"


def train(args: argparse.Namespace, photos: list[Path], types: list[str], out: Path, work: Path, console) -> dict:
    """Build the weights and describe the training for the result file."""
    from grmp_edge.artifacts import sha256_file
    from grmp_edge.train import bootstrap

    console.print(f"training on {len(photos)} photos, {len(types)} types, {args.draws} draws, "
                  f"{args.harsher} harsher, {args.minutes} min / {args.steps} steps on {args.device}, {recipe_of(args)}")
    name = f"draws{args.draws}-" + "-".join(Path(s).stem for s in args.sources) if args.sources else "bundled"
    history = bootstrap.build_bootstrap(
        out, photos, types=types, minutes=args.minutes, steps=args.steps, seed=args.seed, work_dir=work / name,
        batch_size=args.batch_size, lr=args.lr, patch_dropout=args.patch_dropout, bf16=args.bf16,
        device=args.device, workers=args.workers, draws=args.draws, recipe=recipe_of(args),
        checkpoint=args.checkpoint, init=args.init, harsher=args.harsher)
    tenths = {k: [round(float(np.mean(c)), 4) for c in np.array_split(np.asarray(v), min(10, len(v)))]
              for k, v in history["terms"].items()}
    console.print(f"{history['steps']} steps in {history['minutes']:.1f} min; loss by tenths: {tenths}")
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, sha256 {sha256_file(out)})")
    return {
        "photos": [photo_label(p) for p in photos],
        "types": types, "held_out_types": list(bootstrap.HELD_OUT_TYPES), "draws": args.draws,
        "harsher": args.harsher,
        "recipe": history["recipe"],
        "init": {"path": shared_relative(args.init), "sha256": sha256_file(args.init)} if args.init else None,
        "steps": history["steps"], "minutes": round(history["minutes"], 2),
        "batch_size": args.batch_size, "lr": args.lr, "patch_dropout": args.patch_dropout,
        "unmasked_share": history["unmasked_share"], "bf16": args.bf16,
        "final_logit_scale": round(history["logit_scale"], 2), "seed": args.seed, "device": args.device,
        "device_name": _device_name(args.device), "threads": args.threads, "images": history["images"],
        "captions": history["captions"], "loss_by_tenths": tenths,
    }


def evaluate(weights: Path, photos: list[Path], work: Path, args: argparse.Namespace, console) -> dict:
    """Zero-shot level SRCC (pooled, per photo) over all 25 types, and the pristine spread against
    the level-1 to 5 drop, on the validation photos' graded corpus."""
    from grmp_edge.data.distortions import DISTORTIONS
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.data.synth import synthesize
    from grmp_edge.metrics import level_srcc
    from grmp_edge.train import bootstrap
    from grmp_edge.train.backbones import model_spec
    from grmp_edge.train.pretrained import create_backbone

    manifest = synthesize(photos, work / f"val-{photos[0].parent.name}-{len(photos)}", types=list(DISTORTIONS),
                          seed=args.seed, workers=args.workers)
    records = [r for r in load_manifest(manifest) if r.group and r.level is not None]
    refs = sorted({r.ref for r in records})
    clip = create_backbone(bootstrap.BACKBONE, str(weights), device=args.device)  # the saved fp16 weights
    spec = model_spec(bootstrap.BACKBONE, None).preprocess
    scores = bootstrap.zero_shot_scores(clip, [r.image for r in records] + [manifest.parent / "ref" / f"{r}.png"
                                                                           for r in refs], spec, args.eval_crops)
    levels, groups = np.asarray([r.level for r in records]), np.asarray([r.group for r in records])
    table = level_srcc(scores[:len(records)], levels, groups, [r.ref for r in records])
    drops = [scores[:len(records)][(groups == t) & (levels == 1)].mean()
             - scores[:len(records)][(groups == t) & (levels == 5)].mean() for t in table]
    result = {"photos": [shared_relative(p) for p in photos], "crops": args.eval_crops,
              "prompts": list(bootstrap.ZERO_SHOT_PROMPTS), "score": "<f, t_high> - <f, t_low>, mean over crops",
              "pristine_std": float(scores[len(records):].std()), "mean_drop_level1_to_5": float(np.mean(drops)),
              "per_type_srcc": {t: {k: round(table[t][k] or 0.0, 4) for k in ("pooled", "per_photo")} for t in table}}
    for how in ("pooled", "per_photo"):
        result[f"mean_{how}"] = round(float(np.mean([table[t][how] or 0.0 for t in table])), 4)
        for name, seen in (("seen", True), ("held_out_types", False)):
            values = [table[t][how] or 0.0 for t in table if (t not in bootstrap.HELD_OUT_TYPES) == seen]
            result[f"{name}_mean_{how}"] = round(float(np.mean(values)), 4)
    console.print(f"validation ({len(photos)} photos, {args.eval_crops} crops): pooled {result['mean_pooled']}, "
                  f"per photo {result['mean_per_photo']} (held-out types pooled "
                  f"{result['held_out_types_mean_pooled']}); pristine std {result['pristine_std']:.4f} vs drop "
                  f"{result['mean_drop_level1_to_5']:.4f}")
    return result


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import open_clip
    import torch
    from rich.console import Console

    import grmp_edge
    from grmp_edge.artifacts import atomic_write_json, cache_root, sha256_file
    from grmp_edge.errors import GrmpError
    from grmp_edge.train import bootstrap

    console = Console()
    torch.set_num_threads(args.threads)
    types = chosen_types(args.types)
    untrained = sorted(set(args.harsher) - set(types))
    if untrained:
        raise GrmpError(f"--harsher names types this build does not train: {', '.join(untrained)}")
    if args.eval_only and not args.eval_only.is_file():
        raise GrmpError(f"--eval-only: no weights file at {args.eval_only}")
    photos, val = split_photos(args)
    out = args.eval_only or args.out or bootstrap.cached_weights_path()
    work = args.work or cache_root() / "bootstrap" / "corpus"
    result = {"command": "python scripts/build_bootstrap.py " + shlex.join(argv),
              "versions": {"grmp_edge": grmp_edge.__version__, "torch": torch.__version__,
                           "open_clip": open_clip.__version__}}
    if not args.eval_only:
        result["training"] = train(args, photos, types, out, work, console)
    result["weights"] = {"path": str(out), "sha256": sha256_file(out), "bytes": out.stat().st_size}
    if val:
        result["validation"] = evaluate(out, val, work, args, console)
    if args.benchmark:
        atomic_write_json(args.benchmark, result)
        console.print(f"wrote {args.benchmark}")
    return 0


def _device_name(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    from grmp_edge.errors import run_script

    run_script(main)
