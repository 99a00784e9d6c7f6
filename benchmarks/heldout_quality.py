"""Held-out quality: does a bundle's score follow distortion level on photos it never trained on?

    python benchmarks/heldout_quality.py                       # the quickstart's bundle, its crop plan
    python benchmarks/heldout_quality.py --crops 1 4 9         # the table of benchmarks/heldout_quality.md
    python benchmarks/heldout_quality.py --bundle runs/export/NAME --crops 4
    python benchmarks/heldout_quality.py --zero-shot           # the bootstrap backbone, hand-written prompts
    python benchmarks/heldout_quality.py --shift 4 --out /tmp/shift4.json   # every image moved by 4 px
    python benchmarks/heldout_quality.py --corpus validation --out /tmp/val.json  # photos for choices

The embedded model's held-out quality measure. The corpus is all 42 Kodak24 + McMaster photos (never used for the bootstrap
or meta pre-training) x all 25 distortion types x 5 levels, made by ``grmp_edge.data.synth`` with the
few-shot benchmark's settings (same photos, order, size 256 and seed 0), in the same cache folder, so
one synthesis serves both. Each image, and each pristine reference, is scored as ``grmp-edge run``
scores a frame: decoded by ``read_rgb``, cut by ``pipeline.prepare_batch`` into ``--crops`` crops (by
default the model's crop plan, as ``run`` does), scored by the bundle through ONNX Runtime on the CPU
(``--batch-frames`` frames per engine call) and averaged over the crops. ``--zero-shot`` scores the
plain bootstrap backbone instead, with the few-shot benchmark's ``hand_prompt_scores``
(``<f, t_high - t_low>``, not a probability). ``--shift N`` drops each image's first N rows and
columns before scoring, which moves the crops off the synthetic distortions' block grids (pixelate
and JPEG blocks start at the image's corner, and at 256 px the crop grid's offsets are multiples of
the model's 8 px patch): a score that changes with it depends on that alignment, not on the picture.
(The image, N px smaller, is also scaled by 256 / (256 - N) on its way to the model's 256 px;
``mosaic_response.py`` moves block grids without scaling.)
``--corpus validation`` measures the same on the bootstrap build's 8 CBSD68 validation photos
instead: a change meant to help should show there before it is measured on the 42 test photos.

Per crops setting and distortion type:

* SRCC of score vs level, pooled over photos and per photo (:func:`grmp_edge.metrics.level_srcc`,
  the measure the quickstart and the bootstrap build report);
* the mean level curve (pristine, levels 1..5) and how often it rises by more than ``CURVE_RISE``
  from one level to the next (levels 1..5; a rise from pristine to level 1 is counted apart);
* the drop of the mean score from level 1 to level 5.

Per crops setting: the means over types, the spread (std over photos) of the pristine scores, and
the three targets the embedded model is held to. Writes ``benchmarks/heldout_quality.{json,md}`` (``--out``).
"""
from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from grmp_edge.metrics import CURVE_RISE
from result_files import command_line, write_result  # benchmarks/ is on the path

# The targets: a consecutive-level rise above CURVE_RISE makes a curve non-monotonic; the pooled SRCC
# (mean over the 25 types) must reach TARGET_POOLED_SRCC.
TARGET_POOLED_SRCC = 0.75


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--bundle", type=Path, default=None,
                      help="bundle folder (default: <runs>/export/quickstart, $GRMP_EDGE_RUNS or ./runs)")
    what.add_argument("--zero-shot", action="store_true",
                      help="score the bootstrap backbone (the weights create_backbone('grmp-tiny', 'bootstrap') "
                           "resolves) with the hand-written prompts instead of a bundle")
    parser.add_argument("--crops", type=int, nargs="+", default=None,
                        help="crop counts to measure (default: the model's crop plan)")
    parser.add_argument("--precision", default="auto", help="bundle file to run (auto: the runtime's CPU choice)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (ONNX Runtime or torch)")
    parser.add_argument("--batch-frames", type=int, default=32, help="frames per engine call")
    parser.add_argument("--workers", type=int, default=2, help="processes for the synthesis, when not cached")
    parser.add_argument("--corpus", choices=tuple(CORPORA), default="heldout",
                        help="the 42 held-out test photos, or the bootstrap build's 8 validation photos")
    parser.add_argument("--shift", type=int, default=0,
                        help="drop each image's first SHIFT rows and columns before scoring (block-grid alignment)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/heldout_quality.json"))
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- corpus

CORPORA = {"heldout": "Kodak24 + McMaster photos",
           "validation": "CBSD68 validation photos of the bootstrap build (no test: for choices)"}


def heldout_corpus(workers: int, which: str = "heldout") -> tuple[list, dict[str, Path], float]:
    """The records of the held-out corpus (``which``: ``heldout``, the 42 test photos, or
    ``validation``, the bootstrap build's 8 CBSD68 validation photos), its pristine reference per photo
    id, and the seconds spent making (or finding) it."""
    from grmp_edge.artifacts import cache_root
    from grmp_edge.data.distortions import DISTORTIONS
    from grmp_edge.images import list_images
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.data.pristine import shared_pristine
    from grmp_edge.data.synth import MANIFEST_NAME, synthesize

    start = time.monotonic()
    if which == "validation":
        from quickstart_settings import validation_manifest  # benchmarks/ is on the path

        manifest = validation_manifest(workers)
    else:
        kodak, mcmaster = list_images(shared_pristine("kodak24")), list_images(shared_pristine("mcmaster"))
        # benchmarks/fewshot.py's target corpus: same photos in the same order (they seed the
        # distortions), types, size and seed, so its cached files are these.
        folder = cache_root() / "fewshot" / f"target-kodak24-{len(kodak)}-mcmaster-{len(mcmaster)}"
        manifest = folder / MANIFEST_NAME
        # synthesize() re-scores every cached image (pseudo-MOS), minutes on 5250 images; it writes the
        # manifest last, so a manifest means a finished corpus.
        if not manifest.is_file():
            synthesize(kodak + mcmaster, folder, types=list(DISTORTIONS), seed=0, workers=workers)
    records = [r for r in load_manifest(manifest) if r.group and r.level is not None]
    refs = {r.ref: manifest.parent / "ref" / f"{r.ref}.png" for r in records}
    return records, refs, time.monotonic() - start


# --------------------------------------------------------------------------- scoring

def bundle_scorer(bundle: Path, precision: str, threads: int):
    """``(score(batch_uint8) -> scores, spec, description)`` of a bundle on ONNX Runtime's CPU provider."""
    from grmp_edge.runtime.onnxruntime_backend import open_onnxruntime
    from grmp_edge.runtime.bundle import load_bundle

    loaded = load_bundle(bundle)
    backend = open_onnxruntime(loaded, precision, ["CPUExecutionProvider"], threads)
    return backend.infer, loaded.preprocess, backend.describe()


def zero_shot_scorer(threads: int):
    """``(score, spec, description)`` of the plain bootstrap backbone with the hand-written prompts."""
    import torch

    from fewshot import hand_prompt_scores  # benchmarks/ is on the path when this script runs
    from grmp_edge.train.bootstrap import BACKBONE, ZERO_SHOT_PROMPTS
    from grmp_edge.train.backbones import model_spec

    torch.set_num_threads(threads)
    return (hand_prompt_scores, model_spec(BACKBONE, "bootstrap").preprocess,
            f"{BACKBONE} bootstrap backbone, zero-shot {' vs '.join(map(repr, ZERO_SHOT_PROMPTS))} (torch)")


def score_images(pixels: list[np.ndarray], score, spec, crops: int, batch_frames: int) -> tuple[np.ndarray, float]:
    """Each image's score averaged over its ``crops`` crops, ``batch_frames`` images per engine call,
    and the seconds spent (crops and inference)."""
    from grmp_edge.runtime.pipeline import prepare_batch

    start = time.monotonic()
    out = []
    for first in range(0, len(pixels), batch_frames):
        chunk = pixels[first:first + batch_frames]
        batch = np.concatenate([prepare_batch(rgb, spec, crops) for rgb in chunk])
        out.append(np.asarray(score(batch), np.float64).reshape(len(chunk), -1).mean(axis=1))
    return np.concatenate(out), time.monotonic() - start


# --------------------------------------------------------------------------- measures

def level_measures(scores: np.ndarray, records: list, pristine: np.ndarray) -> dict:
    """Per type: level SRCC (pooled, per photo), mean level curve, its rises and the level-1 to 5 drop;
    then the means over types and the three targets."""
    from grmp_edge.data.distortions import DISTORTIONS
    from grmp_edge.metrics import level_curves, level_srcc, mean_level_srcc

    groups = [r.group for r in records]
    levels = [r.level for r in records]
    table = level_srcc(scores, levels, groups, [r.ref for r in records])
    curves = level_curves(scores, levels, groups)
    per_type = {}
    for t in (t for t in DISTORTIONS if t in table):
        curve = curves[t]
        steps = np.diff(curve)
        per_type[t] = {**table[t], "curve": [float(pristine.mean()), *curve],
                       "rises": int((steps > CURVE_RISE).sum()), "max_rise": float(steps.max()),
                       "pristine_to_level1": curve[0] - float(pristine.mean()), "drop": curve[0] - curve[-1]}
    spread = float(pristine.std())
    drop = float(np.mean([row["drop"] for row in per_type.values()]))
    pooled = mean_level_srcc(table, None, "pooled")
    non_monotonic = [t for t, row in per_type.items() if row["rises"]]
    return {
        "mean_pooled_srcc": pooled,
        "mean_per_photo_srcc": mean_level_srcc(table, None, "per_photo"),
        "pristine": {"std": spread, "mean": float(pristine.mean()), "min": float(pristine.min()),
                     "max": float(pristine.max())},
        "mean_drop_level1_to_5": drop,
        "types_drop_below_spread": [t for t, row in per_type.items() if row["drop"] < spread],
        "non_monotonic_types": non_monotonic,
        "types_above_pristine_at_level1": [t for t, row in per_type.items()
                                           if row["pristine_to_level1"] > CURVE_RISE],
        "done": {"pooled_srcc": pooled is not None and pooled >= TARGET_POOLED_SRCC,
                 "monotonic": not non_monotonic, "spread_below_drop": spread < drop},
        "per_type": per_type,
    }


# --------------------------------------------------------------------------- report

def quickstart_preset(bundle: Path) -> str | None:
    """``full`` or ``fast`` when ``bundle`` is a quickstart's (from its summary.json), else None."""
    from grmp_edge.spec import read_json

    summary = bundle.resolve().parent.parent / "quickstart" / "summary.json"
    if bundle.name != "quickstart" or not summary.is_file():
        return None
    return read_json(summary, "quickstart summary").get("preset")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(result: dict) -> list[str]:
    """The summary rows, one per crop count (the README carries these lines as they are)."""
    lines = ["| crops | SRCC pooled | SRCC per photo | non-monotonic types | pristine std | mean drop L1->L5 "
             "| types with drop < std | above pristine at L1 | ms / image |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for crops, r in result["results"].items():
        lines.append(
            f"| {crops} | {_fmt(r['mean_pooled_srcc'])} | {_fmt(r['mean_per_photo_srcc'])} "
            f"| {len(r['non_monotonic_types'])} | {_fmt(r['pristine']['std'])} | {_fmt(r['mean_drop_level1_to_5'])} "
            f"| {len(r['types_drop_below_spread'])} | {len(r['types_above_pristine_at_level1'])} "
            f"| {_fmt(r['ms_per_image'], 2)} |")
    return lines


def markdown(result: dict) -> str:
    """The tables for the README: a summary row per crop count, then per-type rows per crop count."""
    model = result["model"]
    lines = [
        "### Held-out quality",
        "",
        f"`{result['command']}` on {result['date']}; model: {model['description']}"
        + (f" from `{model['bundle']}`" if model.get("bundle") else "")
        + (f", quickstart preset `{model['quickstart_preset']}`" if model.get("quickstart_preset") else "")
        + f". Corpus: {result['corpus']['photos']} {CORPORA[result['corpus'].get('name', 'heldout')]} x "
        f"{result['corpus']['types']} types x "
        f"5 levels{', each image shifted by %d px' % result['shift'] if result.get('shift') else ''}; "
        f"machine: {result['machine']['cpu']}, {result['threads']} thread(s), load average "
        f"{result['load_average']['start']} -> {result['load_average']['end']}.",
        "",
        f"Targets: pooled SRCC >= {TARGET_POOLED_SRCC}, no curve rises > {CURVE_RISE} between levels, "
        "pristine std < mean level-1 to 5 drop.",
        "",
        *summary_table(result),
    ]
    for crops, r in result["results"].items():
        lines += ["", f"#### `--crops {crops}` per type", "",
                  "| type | pooled | per photo | curve (pristine, L1..L5) | rises > 0.02 | drop L1->L5 |",
                  "|---|---:|---:|---|---:|---:|"]
        for t, row in r["per_type"].items():
            curve = " ".join(_fmt(v, 2) for v in row["curve"])
            lines.append(f"| {t} | {_fmt(row['pooled'])} | {_fmt(row['per_photo'])} | {curve} | {row['rises']} "
                         f"| {_fmt(row['drop'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from grmp_edge.images import read_rgb
    from grmp_edge.errors import GrmpError
    from grmp_edge.report.machine import machine_context
    from grmp_edge.runs import runs_root

    if min(args.crops or [1]) < 1 or args.batch_frames < 1 or args.threads < 1:
        raise GrmpError("--crops, --batch-frames and --threads must be at least 1")
    if not 0 <= args.shift < 32:
        raise GrmpError(f"--shift must be 0..31 pixels, got {args.shift}")
    load_start = [round(v, 2) for v in os.getloadavg()]
    if args.zero_shot:
        score, spec, description = zero_shot_scorer(args.threads)
        model = {"kind": "zero-shot bootstrap", "description": description}
    else:
        bundle = args.bundle or runs_root() / "export" / "quickstart"
        score, spec, description = bundle_scorer(bundle, args.precision, args.threads)
        model = {"kind": "bundle", "bundle": str(bundle), "description": description,
                 "quickstart_preset": quickstart_preset(bundle)}
    print(f"model: {description}", flush=True)
    records, refs, corpus_s = heldout_corpus(args.workers, args.corpus)
    print(f"corpus: {len(records)} distorted images of {len(refs)} photos ({corpus_s:.0f} s)", flush=True)
    start = time.monotonic()
    # Decoded once for every crop count; the references come last.
    pixels = [read_rgb(path)[args.shift:, args.shift:] for path in [r.image for r in records] + list(refs.values())]
    decode_s = time.monotonic() - start

    # hand_prompt_scores loads the backbone on every call: give it the whole corpus at once.
    batch_frames = len(pixels) if args.zero_shot else args.batch_frames
    results = {}
    for crops in args.crops or [spec.crops]:
        scores, seconds = score_images(pixels, score, spec, crops, batch_frames)
        measures = level_measures(scores[:len(records)], records, scores[len(records):])
        results[str(crops)] = {"crops": crops, "seconds": round(seconds, 1),
                               "ms_per_image": 1e3 * seconds / len(pixels), **measures}
        print(f"--crops {crops}: pooled {measures['mean_pooled_srcc']:.3f}, per photo "
              f"{measures['mean_per_photo_srcc']:.3f}, non-monotonic {len(measures['non_monotonic_types'])}, "
              f"pristine std {measures['pristine']['std']:.3f} vs drop {measures['mean_drop_level1_to_5']:.3f} "
              f"({seconds:.0f} s)", flush=True)

    result = {
        "command": command_line("heldout_quality.py", argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "model": model,
        "threads": args.threads, "batch_frames": args.batch_frames, "precision": args.precision,
        "shift": args.shift,
        "corpus": {"name": args.corpus, "photos": len(refs), "types": len({r.group for r in records}),
                   "images": len(records),
                   "synthesis_or_lookup_s": round(corpus_s, 1),
                   "decode_s": round(decode_s, 1), "folder": str(Path(records[0].image).parent.parent)},
        "measures": {
            "srcc": "grmp_edge.metrics.level_srcc: per type, SRCC(score, -level) pooled over photos, and per photo "
                    "then averaged; the headline is the mean over the 25 types",
            "curve": "mean score over photos at pristine, levels 1..5",
            "rises": f"consecutive levels 1..5 whose mean score rises by more than {CURVE_RISE}",
            "pristine_std": "std (ddof 0) of the pristine photos' scores",
            "drop": "mean score at level 1 minus at level 5, per type; mean_drop_level1_to_5 averages it over types",
        },
        "machine": machine_context(args.threads),
        "load_average": {"start": load_start, "end": [round(v, 2) for v in os.getloadavg()]},
        "results": results,
    }
    write_result(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    from grmp_edge.errors import run_script

    run_script(main)
