"""Mosaic response: how the embedded model scores flat blocks of every size, on and off its patch grid.

    python benchmarks/mosaic_response.py                 # the quickstart's bundle and the bare backbone
    python benchmarks/mosaic_response.py --blocks 8 12 --phases 0 4 --out /tmp/mosaic.json

``pixelate`` is the one type whose mean level curve rises in every build (level 4, 8 px blocks, scores
far below level 5, 12 px). This measures why, away from the graded levels: each pristine photo of the
bootstrap build's 8 CBSD68 validation photos (no test photos: the same corpus ``heldout_quality.py
--corpus validation`` uses) is turned into a mosaic by ``grmp_edge.data.distortions.pixelate`` at
every ``--blocks`` size, with the block grid moved by every ``--phases`` offset (the photo is padded
with replicated pixels, that many before and whole cells' worth in all, pixelated, and the padding cut
off again, so the photo keeps its size and scale and only the blocks move; phase 0 is the graded
corpus's own alignment). Every image is scored as ``grmp-edge run`` scores a frame, with the model's crop plan
(at a 256 px short side its crops start on multiples of the 8 px patch), by the quickstart's bundle
and by the bare bootstrap backbone zero-shot (``heldout_quality.py``'s two scorers).

Reported per scorer: the mean score of the pristine photos, of Gaussian blur at its level 5 (a
reference for "as bad as it gets") and of each (block, phase) mosaic, each with its std over photos.
Writes ``benchmarks/mosaic_response.{json,md}`` (``--out``).
"""
from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from heldout_quality import bundle_scorer, heldout_corpus, score_images, zero_shot_scorer
from result_files import command_line, write_result

BLOCKS = (2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None,
                        help="bundle to score (default: the quickstart's, runs/export/quickstart)")
    parser.add_argument("--blocks", type=int, nargs="+", default=list(BLOCKS), help="mosaic block sizes, px")
    parser.add_argument("--phases", type=int, nargs="+", default=[0, 4],
                        help="offsets of the block grid from the photo's corner, px")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (ONNX Runtime or torch)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/mosaic_response.json"))
    return parser.parse_args(argv)


def mosaic(rgb: np.ndarray, block: int, phase: int) -> np.ndarray:
    """``rgb`` pixelated into ``block`` px cells whose grid starts ``phase`` px before its corner: padded
    by ``phase`` replicated pixels before and enough after to add whole cells, so the cells keep the
    size ``pixelate`` gives the photo itself (exactly ``block`` where it divides the photo)."""
    from grmp_edge.data.distortions import pixelate

    if phase % block == 0:
        return pixelate(rgb, block, None)
    pad = (phase, block - phase % block)
    padded = np.pad(rgb, (pad, pad, (0, 0)), mode="edge")
    h, w = rgb.shape[:2]
    return np.ascontiguousarray(pixelate(padded, block, None)[phase:phase + h, phase:phase + w])


def variants(args: argparse.Namespace) -> tuple[dict[str, list[np.ndarray]], int]:
    """Named image lists (pristine, Gaussian blur level 5, then ``block/phase`` mosaics) of the
    validation photos, and how many photos."""
    from grmp_edge.images import read_rgb

    records, refs, _ = heldout_corpus(workers=2, which="validation")
    pristine = [read_rgb(path) for path in refs.values()]
    blurred = [read_rgb(r.image) for r in records if r.group == "gaussian_blur" and r.level == 5]
    out = {"pristine": pristine, "gaussian_blur level 5": blurred}
    for block in args.blocks:
        for phase in args.phases:
            out[f"{block}/{phase}"] = [mosaic(rgb, block, phase) for rgb in pristine]
    return out, len(pristine)


def responses(images: dict[str, list[np.ndarray]], score, spec, batch_frames: int) -> dict[str, dict]:
    """Mean and std over photos of each image list's score (the model's crop plan)."""
    names = list(images)
    flat = [rgb for name in names for rgb in images[name]]
    scores, _ = score_images(flat, score, spec, spec.crops, batch_frames)
    out, start = {}, 0
    for name in names:
        chunk = scores[start:start + len(images[name])]
        out[name] = {"mean": float(chunk.mean()), "std": float(chunk.std())}
        start += len(chunk)
    return out


def markdown(result: dict) -> str:
    """The result as a Markdown page: one row per image kind, one column pair per scorer."""
    scorers = list(result["scores"])
    lines = ["### Mosaic response", "",
             f"`{result['command']}` on {result['date']}; {result['photos']} validation photos, each image "
             f"scored with the model's crop plan ({result['crops']} crops). Block/phase: block size and grid "
             "offset in px. Mean score (std over photos):", "",
             "| image | " + " | ".join(scorers) + " |", "|---|" + "---:|" * len(scorers)]
    for name in result["scores"][scorers[0]]:
        cells = [f"{result['scores'][s][name]['mean']:.3f} ({result['scores'][s][name]['std']:.3f})"
                 for s in scorers]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from grmp_edge.errors import GrmpError
    from grmp_edge.report.machine import machine_context
    from grmp_edge.runs import runs_root

    if min(args.blocks) < 1 or not all(0 <= p < 32 for p in args.phases):
        raise GrmpError("--blocks must be 1 px or more and --phases 0..31 px")
    images, photos = variants(args)
    bundle = args.bundle or runs_root() / "export" / "quickstart"
    scorers = {"bundle": bundle_scorer(bundle, "auto", args.threads), "zero-shot": zero_shot_scorer(args.threads)}
    scores, crops = {}, None
    for name, (score, spec, description) in scorers.items():
        print(f"scoring with {description}", flush=True)
        # hand_prompt_scores loads the backbone on every call: give it every image at once.
        batch = sum(map(len, images.values())) if name == "zero-shot" else 32
        scores[name] = responses(images, score, spec, batch)
        crops = spec.crops
    result = {
        "command": command_line("mosaic_response.py", argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "bundle": str(bundle), "scorers": {name: s[2] for name, s in scorers.items()},
        "photos": photos, "crops": crops, "blocks": args.blocks, "phases": args.phases,
        "machine": machine_context(args.threads), "scores": scores,
    }
    print(markdown(result))
    write_result(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    from grmp_edge.errors import run_script

    run_script(main)
