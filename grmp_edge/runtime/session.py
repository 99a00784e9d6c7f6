"""Scoring sources through a bundle: the library behind ``grmp-edge run``.

:class:`RunOptions` says what to score (sources and how they are read, :class:`CaptureOptions`), with
what (bundle, backend, precision, crops), for how long, how scores are smoothed and where records go
(:class:`Outputs`). :func:`run` checks the options before a model is loaded, opens the sources, the
backend and the sinks, runs the :class:`~grmp_edge.runtime.pipeline.Pipeline`, writes the run folder
(``runs/run/<name>/frames.jsonl`` and ``summary.json``) and returns a :class:`RunResult`::

    from grmp_edge.runtime.session import Outputs, RunOptions, run

    result = run(RunOptions(sources=["clip.mp4"], max_frames=100, outputs=Outputs(stdout=False)))
    print(result.summary.line())
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from grmp_edge.artifacts import atomic_write_json, check_outputs
from grmp_edge.errors import GrmpError
from grmp_edge.limits import check_memory, check_range, image_bytes_per_input
from grmp_edge.runs import command_line, new_run_dir, slug
from grmp_edge.runtime.backend import Backend
from grmp_edge.runtime.backends import open_backend
from grmp_edge.runtime.bundle import LoadedBundle, load_bundle
from grmp_edge.runtime.pipeline import Pipeline, check_limits
from grmp_edge.runtime.postprocess import DEFAULT_ALPHA, DEFAULT_HIGH, DEFAULT_LOW, PostProcessor
from grmp_edge.runtime.sinks import CsvSink, DisplaySink, JsonlSink, MetricsSink, Sink, VideoSink
from grmp_edge.runtime.sources import FrameSource, parse_size, parse_source, read_sources_file
from grmp_edge.runtime.summary import RunSummary
from grmp_edge.runtime.web import WebSink, parse_address

# A frame side beyond this is a typo or a hostile value, not a camera.
MAX_FRAME_SIDE = 16384


def _ignore(line: str) -> None:
    """The default ``log``: a library caller that passes none hears nothing."""


@dataclass
class CaptureOptions:
    """How sources are read (see :func:`~grmp_edge.runtime.sources.parse_source`): every ``stride``-th
    frame; ``stdin_size`` ``WxH`` of raw frames on stdin; the CSI camera's capture mode; ``realtime``
    video files at their own frame rate (None: on when the live page is served); ``loop`` video files."""

    stride: int = 1
    stdin_size: Optional[str] = None
    csi_width: int = 1920
    csi_height: int = 1080
    csi_fps: int = 30
    csi_flip: int = 0
    realtime: Optional[bool] = None
    loop: bool = False

    def check(self) -> None:
        """One-line GrmpErrors for out-of-range values (the stdin frame size also against memory)."""
        check_range("--stride", self.stride, 1)
        check_range("--csi-width", self.csi_width, 1, MAX_FRAME_SIDE)
        check_range("--csi-height", self.csi_height, 1, MAX_FRAME_SIDE)
        check_range("--csi-fps", self.csi_fps, 1, 1000)
        check_range("--csi-flip", self.csi_flip, 0, 7)
        if self.stdin_size is not None:
            width, height = parse_size(self.stdin_size)
            check_range("--stdin-size width", width, 1, MAX_FRAME_SIDE)
            check_range("--stdin-size height", height, 1, MAX_FRAME_SIDE)
            # A frame is read into one buffer and a few wait in the queues.
            check_memory("--stdin-size", 4, width * height * 3, f"{width}x{height} frame buffers")


@dataclass
class Outputs:
    """Where records go: JSON lines on ``stdout``, ``jsonl`` and ``csv`` files, a ``video`` with the
    score overlay, a ``display`` window, Prometheus metrics on ``metrics_port`` (bound to
    ``metrics_host``), the live page at ``serve`` (``[HOST:]PORT``), and unless ``save`` is off the
    run folder ``runs/run/<name>``. Existing files are replaced only with ``overwrite``."""

    stdout: bool = True
    jsonl: Optional[Path] = None
    csv: Optional[Path] = None
    video: Optional[Path] = None
    display: bool = False
    metrics_port: Optional[int] = None
    metrics_host: str = "127.0.0.1"
    serve: Optional[str] = None
    save: bool = True
    name: Optional[str] = None
    overwrite: bool = False

    def check(self) -> None:
        """One-line GrmpErrors for a bad port or address, and for files that would be overwritten."""
        check_range("--metrics-port", self.metrics_port, 0, 65535)
        check_outputs([("--jsonl", self.jsonl), ("--csv", self.csv), ("--save-video", self.video)], self.overwrite)
        if self.serve is not None:
            parse_address(self.serve)


@dataclass
class RunOptions:
    """One run: ``sources`` (``--source`` texts, see :data:`~grmp_edge.runtime.sources.SOURCE_FORMS`),
    plus those listed in ``sources_file``, or USB ``camera`` N; the ``bundle`` (None: the newest
    ``runs/export/*``), ``backend``, ``precision`` and CPU ``threads``; ``crops`` per frame (None: the
    bundle's crop plan); stop after ``max_frames`` per source or ``duration`` seconds; with several
    sources ``batch_window_ms`` (None: the pipeline's default); the smoothing ``alpha`` and alarm
    thresholds ``low`` / ``high``; how sources are read and where records go."""

    sources: Sequence[str] = ()
    sources_file: Optional[Path] = None
    camera: Optional[int] = None
    bundle: Optional[Path] = None
    backend: str = "auto"
    precision: str = "auto"
    threads: Optional[int] = None
    crops: Optional[int] = None
    max_frames: Optional[int] = None
    duration: Optional[float] = None
    batch_window_ms: Optional[float] = None
    alpha: float = DEFAULT_ALPHA
    low: float = DEFAULT_LOW
    high: float = DEFAULT_HIGH
    capture: CaptureOptions = field(default_factory=CaptureOptions)
    outputs: Outputs = field(default_factory=Outputs)

    def check(self) -> None:
        """One-line GrmpErrors for out-of-range numbers and outputs that cannot be written, before any
        source, model or file is opened (``grmp-edge run`` calls this first)."""
        check_range("--threads", self.threads, 1, 1024)
        check_limits(self.crops, self.max_frames, self.duration,
                     None if self.batch_window_ms is None else self.batch_window_ms / 1e3)
        check_range("--alpha", self.alpha, 1e-6, 1)
        check_range("--low", self.low, 0, 1)
        check_range("--high", self.high, 0, 1)
        self.capture.check()
        self.outputs.check()

    def source_texts(self) -> list[str]:
        """The ``--source`` texts, then those of the sources file."""
        listed = read_sources_file(self.sources_file) if self.sources_file is not None else []
        return [*self.sources, *listed]


@dataclass
class RunResult:
    """What :func:`run` did: the pipeline's ``summary``, the settings it ran with and the run folder
    (None with ``save`` off). ``to_dict()`` is ``summary.json``."""

    summary: RunSummary
    bundle: Path
    backend: str
    precision: str
    backend_detail: str
    crops: int
    crops_from: str
    stride: int
    alpha: float
    low: float
    high: float
    run_dir: Optional[Path] = None

    def to_dict(self) -> dict:
        return {"command": command_line(), "bundle": str(self.bundle), "backend": self.backend,
                "precision": self.precision, "backend_detail": self.backend_detail, "crops": self.crops,
                "crops_from": self.crops_from, "stride": self.stride, "alpha": self.alpha, "low": self.low,
                "high": self.high, **self.summary.to_dict()}


def open_sources(options: RunOptions) -> list[FrameSource]:
    """The sources ``options`` name, checked but not opened yet (cameras open when read)."""
    texts = options.source_texts()
    several = len(texts) > 1
    if several and (options.outputs.video is not None or options.outputs.display):
        raise GrmpError("--save-video and --display show one source; with several use --jsonl, --csv or --metrics-port")
    capture = options.capture
    # Video files at their own pace when someone watches the page, as fast as they score otherwise.
    realtime = options.outputs.serve is not None if capture.realtime is None else capture.realtime
    # With several sources a camera that is not up yet is retried, so that it cannot stop the others.
    return [parse_source(text, options.camera, stride=capture.stride, stdin_size=capture.stdin_size,
                         csi_width=capture.csi_width, csi_height=capture.csi_height, csi_fps=capture.csi_fps,
                         csi_flip=capture.csi_flip, retry_first_open=several, realtime=realtime, loop=capture.loop)
            for text in texts or [None]]


@dataclass
class _Model:
    """The bundle, its opened backend and the crops per frame it scores."""

    bundle: LoadedBundle
    backend: Backend
    crops: int
    crops_from: str


def _open_model(options: RunOptions, paced: bool) -> _Model:
    """The bundle and its backend; when every source is ``paced`` ONNX Runtime's threads sleep between frames."""
    loaded = load_bundle(options.bundle)
    crops, crops_from = loaded.preprocess.crop_plan(options.crops)
    # One frame's crops are a single engine batch: refuse a count this machine cannot hold.
    check_memory("--crops", crops, image_bytes_per_input(loaded.manifest.model), "one frame's crops")
    backend = open_backend(loaded, backend=options.backend, precision=options.precision, threads=options.threads,
                           spin=not paced)
    return _Model(loaded, backend, crops, crops_from)


def _check_batch(model: _Model) -> None:
    """A frame's crops are one engine call: refuse more than the engine takes now, not at the first frame."""
    max_batch = getattr(model.backend, "max_batch", None)
    if max_batch is not None and model.crops > max_batch:
        raise GrmpError(f"{model.crops} crops per frame ({model.crops_from}) exceed the engine's maximum batch "
                        f"{max_batch}; pass --crops {max_batch} or rebuild the plan with --batch-max {model.crops}")


@dataclass
class OpenSinks:
    """The sinks of a run and its run folder (None when not saved)."""

    sinks: list[Sink] = field(default_factory=list)
    run_dir: Optional[Path] = None

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def _add_file_sinks(sinks: list[Sink], outputs: Outputs, several: bool) -> None:
    if outputs.stdout:
        sinks.append(JsonlSink(sys.stdout))
    if outputs.jsonl is not None:
        sinks.append(JsonlSink(outputs.jsonl))
    if outputs.csv is not None:
        sinks.append(CsvSink(outputs.csv, source_column=several))
    if outputs.video is not None:
        sinks.append(VideoSink(outputs.video))
    if outputs.display:
        sinks.append(DisplaySink())


def _add_served_sinks(sinks: list[Sink], outputs: Outputs, page: dict, log: Callable[[str], None]) -> None:
    """The metrics endpoint and the live page; ``page`` holds the page's title and thresholds."""
    metrics = None
    if outputs.metrics_port is not None:
        metrics = MetricsSink(outputs.metrics_port, outputs.metrics_host)
        sinks.append(metrics)
        log(f"metrics at {metrics.url}")
    if outputs.serve is None:
        return
    if metrics is None:  # /metrics on the page's port rather than a port of its own
        metrics = MetricsSink(None)
        sinks.append(metrics)
    host, port = parse_address(outputs.serve)
    web = WebSink(port, host, metrics=metrics, **page)
    sinks.append(web)
    log(f"live page at {web.url}")
    if not web.loopback:
        log(f"warning: {host} is reachable from other machines and the page has no login; "
            "anyone who can reach this address can watch the cameras")


def open_sinks(outputs: Outputs, *, several: bool, page: dict, log: Callable[[str], None] = _ignore) -> OpenSinks:
    """Open every sink ``outputs`` asks for, then the run folder; what was opened is closed again if
    one fails. ``several``: records carry a ``source`` field; ``page``: the live page's ``title``,
    ``low`` and ``high``."""
    opened = OpenSinks()
    try:
        _add_file_sinks(opened.sinks, outputs, several)
        _add_served_sinks(opened.sinks, outputs, page, log)
        if outputs.save:
            opened.run_dir = new_run_dir("run", slug(outputs.name) if outputs.name else None)
            opened.sinks.append(JsonlSink(opened.run_dir / "frames.jsonl"))
            log(f"writing {opened.run_dir / 'frames.jsonl'}")
    except BaseException:
        opened.close()
        raise
    return opened


def _score(options: RunOptions, sources: list[FrameSource], model: _Model, post: PostProcessor,
           log: Callable[[str], None]) -> tuple[RunSummary, Optional[Path]]:
    """Open the sinks and run the pipeline over ``sources``; the summary and the run folder."""
    backend = model.backend
    page = {"title": f"grmp-edge live: {model.bundle.folder.name}, {backend.name} {backend.precision}",
            "low": options.low, "high": options.high}
    opened = open_sinks(options.outputs, several=len(sources) > 1, page=page, log=log)
    window = {} if options.batch_window_ms is None else {"batch_window": options.batch_window_ms / 1e3}
    try:
        pipeline = Pipeline(sources, backend, model.bundle.preprocess, opened.sinks, crops=model.crops,
                            postprocessor=post, max_frames=options.max_frames, duration=options.duration,
                            log=log, **window)
    except BaseException:
        opened.close()
        raise
    return pipeline.run(), opened.run_dir


def _check_outcome(summary: RunSummary) -> None:
    """Refuse a run that scored nothing: every source failed, or no frame was usable. A run stopped
    by a signal is not refused: it did what it could before it was told to stop."""
    if summary.every_source_failed:
        raise GrmpError("every source failed (see the lines above)")
    if summary.stopped_by.signal is None and summary.frames == 0:
        raise GrmpError(f"no frame was scored ({summary.corrupt} corrupt, {summary.drops} dropped): "
                        "the source gave nothing usable")


def run(options: RunOptions, log: Callable[[str], None] = _ignore) -> RunResult:
    """Score ``options``' sources with its bundle until they end or a stop condition (see the module doc).

    ``log`` receives the human-readable lines (bundle, backend, sources, events, the summary). The
    run folder's ``summary.json`` is written whatever the outcome; a run in which every source failed
    or no frame was scored is then a GrmpError. A second SIGINT/SIGTERM while draining raises
    KeyboardInterrupt.
    """
    options.check()
    sources = open_sources(options)
    post = PostProcessor(options.alpha, options.low, options.high)
    model = _open_model(options, paced=all(source.paced for source in sources))
    try:
        log(f"bundle {model.bundle.folder}")
        log(f"backend {model.backend.describe()} [{model.backend.reason}]")
        log(f"crops {model.crops} per frame ({model.crops_from})")
        _check_batch(model)
        for source in sources:
            log(f"source {source.name}")
        summary, run_dir = _score(options, sources, model, post, log)
        log(summary.line())
        for part in summary.sources:
            log(f"  {part.source}: {part.line()}")
        result = RunResult(summary, model.bundle.folder, model.backend.name, model.backend.precision,
                           model.backend.describe(), model.crops, model.crops_from, options.capture.stride,
                           options.alpha, options.low, options.high, run_dir)
        if run_dir is not None:
            atomic_write_json(run_dir / "summary.json", result.to_dict())
    finally:
        model.backend.close()
    _check_outcome(result.summary)
    return result
