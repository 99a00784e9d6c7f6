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
import sys
from pathlib import Path

import numpy as np


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sources", nargs="+", type=Path, default=None,
                        help="pristine photos or folders to train on (default: scikit-image's bundled photos)")
    parser.add_argument("--types", default="seen",
                        help="'seen' (all but HELD_OUT_TYPES), 'all', or comma-separated distortion names")
    parser.add_argument("--minutes", type=float, default=12.0, help="training time budget")
    parser.add_argument("--steps", type=int, default=None, help="step budget (whichever budget ends first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--patch-dropout", type=float, default=0.0,
                        help="share of patch tokens dropped per step (FLIP), except in the last tenth of the budget")
    parser.add_argument("--bf16", action="store_true", help="train under bfloat16 autocast")
    parser.add_argument("--device", default="cpu", help="torch device to train and evaluate on")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=None, help="processes for the synthesis")
    parser.add_argument("--out", type=Path, default=None, help="weights file (default: the user cache)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the synthetic corpora (default: <cache>/bootstrap/corpus)")
    parser.add_argument("--eval-photos", type=Path, default=None,
                        help="folder of photos for the evaluation corpus (default: ../shared kodak24 if present)")
    parser.add_argument("--eval-count", type=int, default=8, help="evenly spaced photos taken from --eval-photos")
    parser.add_argument("--eval-crops", type=int, default=5, help="native-resolution crops averaged per image")
    parser.add_argument("--benchmark", type=Path, default=None, help="write the results JSON here")
    return parser.parse_args(argv)


def chosen_types(text: str) -> list[str]:
    from grmp_edge.data.distortions import DISTORTIONS
    from grmp_edge.train.bootstrap import seen_types

    if text == "seen":
        return seen_types()
    if text == "all":
        return list(DISTORTIONS)
    return [t.strip() for t in text.split(",") if t.strip()]


def eval_photos(folder: Path | None, count: int) -> list[Path]:
    """``count`` evenly spaced photos of ``folder`` (kodak24 from ../shared by default); [] if none."""
    from grmp_edge.images import list_images
    from grmp_edge.data.pristine import shared_pristine
    from grmp_edge.errors import GrmpError

    if folder is None:
        try:
            folder = shared_pristine("kodak24")
        except GrmpError:
            return []
    photos = list_images(folder)
    picks = np.unique(np.linspace(0, len(photos) - 1, min(count, len(photos))).round().astype(int))
    return [photos[i] for i in picks]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import open_clip
    import torch
    from rich.console import Console
    from rich.table import Table

    import grmp_edge
    from grmp_edge.artifacts import atomic_write_json, cache_root, sha256_file
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.data.pristine import bundled_photos
    from grmp_edge.data.synth import synthesize
    from grmp_edge.train import bootstrap
    from grmp_edge.train.backbones import model_spec
    from grmp_edge.train.pretrained import create_backbone

    console = Console()
    torch.set_num_threads(args.threads)
    types = chosen_types(args.types)
    sources = args.sources or bundled_photos()
    out = args.out or bootstrap.cached_weights_path()
    work = args.work or cache_root() / "bootstrap" / "corpus"
    train_dir = work / ("-".join(Path(s).stem for s in args.sources) if args.sources else "bundled")
    console.print(f"training on {', '.join(map(str, sources[:3]))}{' ...' if len(sources) > 3 else ''}, "
                  f"{len(types)} types, {args.minutes} min / {args.steps} steps on {args.device}")
    history = bootstrap.build_bootstrap(
        out, sources, types=types, minutes=args.minutes, steps=args.steps, seed=args.seed, work_dir=train_dir,
        batch_size=args.batch_size, lr=args.lr, patch_dropout=args.patch_dropout, bf16=args.bf16,
        device=args.device, workers=args.workers)
    losses = history["losses"]
    tenths = [float(np.mean(chunk)) for chunk in np.array_split(np.asarray(losses), min(10, len(losses)))]
    console.print(f"{history['steps']} steps in {history['minutes']:.1f} min; loss by tenths: "
                  + " ".join(f"{v:.3f}" for v in tenths))
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, sha256 {sha256_file(out)})")

    result = {
        "command": "python scripts/build_bootstrap.py " + shlex.join(argv),
        "weights": {"path": str(out), "sha256": sha256_file(out), "bytes": out.stat().st_size},
        "training": {
            "sources": [str(s) for s in (args.sources or ["bundled"])], "types": types,
            "held_out_types": list(bootstrap.HELD_OUT_TYPES), "steps": history["steps"],
            "minutes": round(history["minutes"], 2), "batch_size": args.batch_size, "lr": args.lr,
            "patch_dropout": args.patch_dropout, "unmasked_share": history["unmasked_share"], "bf16": args.bf16,
            "final_logit_scale": round(history["logit_scale"], 2),
            "seed": args.seed, "device": args.device, "device_name": _device_name(args.device),
            "threads": args.threads, "images": history["images"], "captions": history["captions"],
            "generic_captions": {w: bootstrap.generic_captions(g, pristine=g == 0)
                                 for g, w in enumerate(bootstrap.GENERIC_WORDS)},
            "loss_by_tenths": [round(v, 4) for v in tenths],
        },
        "versions": {"grmp_edge": grmp_edge.__version__, "torch": torch.__version__,
                     "open_clip": open_clip.__version__},
    }

    photos = eval_photos(args.eval_photos, args.eval_count)
    if photos:
        from grmp_edge.data.distortions import DISTORTIONS

        manifest = synthesize(photos, work / f"eval-{photos[0].parent.name}", types=list(DISTORTIONS), seed=args.seed,
                              workers=args.workers)
        clip = create_backbone(bootstrap.BACKBONE, str(out), device=args.device)  # the saved fp16 weights
        spec = model_spec(bootstrap.BACKBONE, None).preprocess
        srcc = bootstrap.zero_shot_level_srcc(clip, load_manifest(manifest), spec, crops=args.eval_crops)
        table = Table("type", "seen in training", "SRCC pooled", "SRCC per photo")
        for t in srcc["pooled"]:
            table.add_row(t, "yes" if t in types else "no", f"{srcc['pooled'][t]:.3f}", f"{srcc['per_photo'][t]:.3f}")
        console.print(table)
        summary = {}
        for how, per_type in srcc.items():
            for name, seen in (("seen", True), ("unseen", False)):
                values = [v for t, v in per_type.items() if (t in types) == seen]
                summary[f"{name}_mean_{how}"] = round(float(np.mean(values)), 4) if values else None
        console.print("mean per-type SRCC, pooled over photos (headline): seen "
                      f"{summary['seen_mean_pooled']}, unseen {summary['unseen_mean_pooled']}; per photo: seen "
                      f"{summary['seen_mean_per_photo']}, unseen {summary['unseen_mean_per_photo']}")
        result["evaluation"] = {
            "photos": [p.name for p in photos], "crops": args.eval_crops, "preprocess": spec.to_dict(),
            "prompts": list(bootstrap.ZERO_SHOT_PROMPTS),
            "score": "<f, t_high> - <f, t_low>, averaged over the crops",
            "headline": "pooled",
            "aggregation": {
                "pooled": "per type, SRCC(score, -level) over all photos x 5 levels at once; then the mean over types",
                "per_photo": "per type and photo, SRCC(score, -level) over the 5 levels; mean over photos, "
                             "then the mean over types",
            },
            **summary,
            "per_type_srcc": {t: {"seen": t in types, "pooled": round(srcc["pooled"][t], 4),
                                  "per_photo": round(srcc["per_photo"][t], 4)} for t in srcc["pooled"]},
        }
    else:
        console.print("no evaluation photos found (pass --eval-photos); skipped the zero-shot evaluation")
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
    sys.exit(main(sys.argv[1:]))
