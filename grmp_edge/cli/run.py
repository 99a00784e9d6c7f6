"""``grmp-edge run``: score live frames from a camera, stream, video, image folder or stdin.

Stdout carries only the JSON lines (one per frame, see :mod:`grmp_edge.runtime.sinks`), so it can
be piped; the chosen backend, source events and the final summary go to stderr. Every run also
writes ``runs/run/<name>/frames.jsonl`` and ``summary.json`` (unless ``--no-save``) for
``grmp-edge bench --report`` to find later.
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import List, Optional

import typer

from grmp_edge.runtime.postprocess import DEFAULT_ALPHA, DEFAULT_HIGH, DEFAULT_LOW
from grmp_edge.spec import MAX_CROPS

SOURCE_HELP = ("What to score: csi://N (Jetson CSI camera), v4l2:///dev/videoN, rtsp://URL, file://PATH or a "
               "video path, an image file, folder or glob ('frames/*.jpg'), or - for raw RGB24 frames on stdin "
               "(ffmpeg -f rawvideo -pix_fmt rgb24 -) with --stdin-size.")


def _log(line: str) -> None:
    typer.echo(f"grmp-edge run: {line}", err=True)


# Ranges of the numeric options (inclusive); memory-heavy ones are also checked against this machine.
MAX_FRAME_SIDE = 16384
STOP_SIGNALS = ("SIGINT", "SIGTERM")


def _check_options(*, threads, crops, stride, max_frames, duration, alpha, low, high, metrics_port, stdin_size,
                   csi_width, csi_height, csi_fps, csi_flip, batch_window_ms) -> None:
    """One-line errors for out-of-range numeric options, before a model is loaded."""
    from grmp_edge.limits import check_memory, check_range
    from grmp_edge.runtime.sources import parse_size

    check_range("--threads", threads, 1, 1024)
    check_range("--crops", crops, 1, MAX_CROPS)
    check_range("--stride", stride, 1)
    check_range("--max-frames", max_frames, 1)
    check_range("--duration", duration, 1e-3)
    check_range("--alpha", alpha, 1e-6, 1)
    check_range("--low", low, 0, 1)
    check_range("--high", high, 0, 1)
    check_range("--metrics-port", metrics_port, 0, 65535)
    check_range("--batch-window-ms", batch_window_ms, 0, 1000)
    check_range("--csi-width", csi_width, 1, MAX_FRAME_SIDE)
    check_range("--csi-height", csi_height, 1, MAX_FRAME_SIDE)
    check_range("--csi-fps", csi_fps, 1, 1000)
    check_range("--csi-flip", csi_flip, 0, 7)
    if stdin_size is not None:
        width, height = parse_size(stdin_size)
        check_range("--stdin-size width", width, 1, MAX_FRAME_SIDE)
        check_range("--stdin-size height", height, 1, MAX_FRAME_SIDE)
        # A frame is read into one buffer and a few wait in the queues.
        check_memory("--stdin-size", 4, width * height * 3, f"{width}x{height} frame buffers")


def run(
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Bundle folder (or its manifest.json). Default: the newest runs/export/*."),
    source: Optional[List[str]] = typer.Option(None, "--source", "-s", help=SOURCE_HELP + " Repeat it to score several sources with one engine (batched); each record then carries a 'source' field."),
    sources_file: Optional[Path] = typer.Option(None, "--sources-file", help="A text file of sources, one per line (# comments), scored like repeated --source."),
    batch_window_ms: Optional[float] = typer.Option(None, "--batch-window-ms", help="With several sources: how long a frame waits for the other sources' frames to share its engine call. Default 5."),
    camera: Optional[int] = typer.Option(None, "--camera", help="USB camera number: shorthand for --source v4l2:///dev/videoN."),
    backend: str = typer.Option("auto", "--backend", help="auto (TensorRT or TensorRT-RTX plan for this GPU > ONNX Runtime CUDA > ONNX Runtime CPU), tensorrt, tensorrt-rtx, onnxruntime, or triton://HOST:PORT/MODEL (a Triton server's gRPC endpoint; the bundle still gives the preprocessing)."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, fp16 or int8: which bundle file runs (auto: fp16 on GPUs, fp32 on CPUs)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU inference threads for ONNX Runtime. Default: physical cores."),
    crops: Optional[int] = typer.Option(None, "--crops", help="Score N crops of the model's size at native resolution per frame (batched, averaged); 1 = the resized centre crop. Default: the bundle's crop plan (4 for grmp-tiny, 1 for ViT-B-16; 1 for bundles older than the plan)."),
    stride: int = typer.Option(1, "--stride", help="Score every K-th frame of the source."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after this many scored frames (of each source)."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds."),
    alpha: float = typer.Option(DEFAULT_ALPHA, "--alpha", help="Smoothing factor of the exponential moving average of scores (1 = no smoothing)."),
    low: float = typer.Option(DEFAULT_LOW, "--low", help="A smoothed score below this raises a 'degraded' event."),
    high: float = typer.Option(DEFAULT_HIGH, "--high", help="After 'degraded', a smoothed score above this raises 'recovered'."),
    jsonl: Optional[Path] = typer.Option(None, "--jsonl", help="Also write the JSON lines to this file."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write the records as CSV to this file."),
    save_video: Optional[Path] = typer.Option(None, "--save-video", help="Write the frames with a score overlay to this .avi (MJPG) or .mp4 file."),
    display: bool = typer.Option(False, "--display", help="Show the frames with a score overlay in a window (q or Esc stops)."),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Serve Prometheus metrics on this port (/metrics)."),
    metrics_host: str = typer.Option("127.0.0.1", "--metrics-host", help="Address the metrics endpoint binds (0.0.0.0 for every interface)."),
    serve: Optional[str] = typer.Option(None, "--serve", metavar="[HOST:]PORT", help="While the run goes on, serve a live page at http://HOST:PORT/ (each source's picture with the overlay, score, smoothed score, ok/degraded, a chart of the last 5 minutes, its events) plus /api/state, /api/stream (Server-Sent Events) and /metrics (no --metrics-port needed). HOST defaults to 127.0.0.1 (this machine only); 0.0.0.0 opens it to the network, with no login. Video files then play at their own frame rate (--no-realtime to score as fast as possible); add --loop to keep a demo going."),
    realtime: Optional[bool] = typer.Option(None, "--realtime/--no-realtime", help="Video files: deliver frames at the file's own frame rate, as a camera would, instead of as fast as they can be scored. Default: on with --serve (someone is watching), else off."),
    loop: bool = typer.Option(False, "--loop", help="Video files: start again at the end, until Ctrl-C, --duration or --max-frames."),
    stdin_size: Optional[str] = typer.Option(None, "--stdin-size", help="WIDTHxHEIGHT of the raw RGB24 frames read with --source -."),
    csi_width: int = typer.Option(1920, "--csi-width", help="CSI camera capture width."),
    csi_height: int = typer.Option(1080, "--csi-height", help="CSI camera capture height."),
    csi_fps: int = typer.Option(30, "--csi-fps", help="CSI camera frame rate."),
    csi_flip: int = typer.Option(0, "--csi-flip", help="CSI image flip (nvvidconv flip-method 0-7; 2 = rotate 180)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run folder name under runs/run/. Default: exp, exp2, ..."),
    save: bool = typer.Option(True, "--save/--no-save", help="Write runs/run/<name>/frames.jsonl and summary.json."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No JSON lines on stdout (files, logs and the summary are still written)."),
    report: bool = typer.Option(False, "--report", help="After the run, plot runs/run/<name>/score_timeline.png (score, smoothed score, events over time) and print a summary; needs grmp-edge[report]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Let --jsonl, --csv and --save-video replace existing files (refused otherwise)."),
) -> None:
    """Score live frames from a camera, stream, video, image folder or stdin; JSON lines on stdout."""
    import sys

    from grmp_edge.artifacts import atomic_write_json, check_outputs
    from grmp_edge.limits import check_memory, image_bytes_per_input
    from grmp_edge.errors import GrmpError
    from grmp_edge.runs import command_line, new_run_dir, slug
    from grmp_edge.runtime.backends import open_backend
    from grmp_edge.runtime.bundle import load_bundle
    from grmp_edge.runtime.pipeline import Pipeline
    from grmp_edge.runtime.postprocess import PostProcessor
    from grmp_edge.runtime.sinks import CsvSink, DisplaySink, JsonlSink, MetricsSink, VideoSink
    from grmp_edge.runtime.sources import parse_source, read_sources_file

    # Cheap checks first, so that a typo fails before a model is loaded.
    if report and not save:
        raise GrmpError("--report plots the run's saved frames: drop --no-save")
    _check_options(threads=threads, crops=crops, stride=stride, max_frames=max_frames, duration=duration,
                   alpha=alpha, low=low, high=high, metrics_port=metrics_port, stdin_size=stdin_size,
                   csi_width=csi_width, csi_height=csi_height, csi_fps=csi_fps, csi_flip=csi_flip,
                   batch_window_ms=batch_window_ms)
    check_outputs([("--jsonl", jsonl), ("--csv", csv_path), ("--save-video", save_video)], overwrite)
    if serve is not None:
        from grmp_edge.runtime.web import WebSink, parse_address

        serve_host, serve_port = parse_address(serve)
    if realtime is None:  # a person watching a video file wants it at its own pace, not as fast as it scores
        realtime = serve is not None
    texts = [*(source or ()), *(read_sources_file(sources_file) if sources_file is not None else ())]
    several = len(texts) > 1
    if several and (save_video is not None or display):
        raise GrmpError("--save-video and --display show one source; with several use --jsonl, --csv or --metrics-port")
    # With several sources a camera that is not up yet is retried, so that it cannot stop the others.
    frames = [parse_source(text, camera, stride=stride, stdin_size=stdin_size, csi_width=csi_width,
                           csi_height=csi_height, csi_fps=csi_fps, csi_flip=csi_flip, retry_first_open=several,
                           realtime=realtime, loop=loop)
              for text in texts or [None]]
    post = PostProcessor(alpha, low, high)
    loaded = load_bundle(bundle)
    crops, crops_from = loaded.preprocess.crop_plan(crops)
    # One frame's crops are a single engine batch: refuse a count this machine cannot hold.
    check_memory("--crops", crops, image_bytes_per_input(loaded.manifest.model), "one frame's crops")
    if backend.startswith("triton://"):
        from grmp_edge.runtime.triton_backend import open_triton

        engine = open_triton(backend, loaded.preprocess.size)
    else:
        engine = open_backend(loaded, backend=backend, precision=precision, threads=threads)
    try:
        _log(f"bundle {loaded.folder}")
        _log(f"backend {engine.describe()} [{engine.reason}]")
        _log(f"crops {crops} per frame ({crops_from})")
        # A frame's crops are one engine call: say so now, not at the first frame.
        max_batch = getattr(engine, "max_batch", None)
        if max_batch is not None and crops > max_batch:
            raise GrmpError(f"{crops} crops per frame ({crops_from}) exceed the engine's maximum batch {max_batch}; "
                            f"pass --crops {max_batch} or rebuild the plan with --batch-max {crops}")
        for each in frames:
            _log(f"source {each.name}")
        sinks = []
        try:
            if not quiet:
                sinks.append(JsonlSink(sys.stdout))
            if jsonl is not None:
                sinks.append(JsonlSink(jsonl))
            if csv_path is not None:
                sinks.append(CsvSink(csv_path, source_column=several))
            if save_video is not None:
                sinks.append(VideoSink(save_video))
            if display:
                sinks.append(DisplaySink())
            if metrics_port is not None:
                metrics = MetricsSink(metrics_port, metrics_host)
                sinks.append(metrics)
                _log(f"metrics at {metrics.url}")
            if serve is not None:
                if metrics_port is None:  # /metrics on the page's port rather than a port of its own
                    metrics = MetricsSink(None)
                    sinks.append(metrics)
                web = WebSink(serve_port, serve_host, metrics=metrics, low=low, high=high,
                              title=f"grmp-edge live: {loaded.folder.name}, {engine.name} {engine.precision}")
                sinks.append(web)
                _log(f"live page at {web.url}")
                if not web.loopback:
                    _log(f"warning: {serve_host} is reachable from other machines and the page has no login; "
                         "anyone who can reach this address can watch the cameras")
            run_dir = new_run_dir("run", slug(name) if name else None) if save else None
            if run_dir is not None:
                sinks.append(JsonlSink(run_dir / "frames.jsonl"))
                _log(f"writing {run_dir / 'frames.jsonl'}")
            window = {} if batch_window_ms is None else {"batch_window": batch_window_ms / 1e3}
            pipeline = Pipeline(frames, engine, loaded.preprocess, sinks, crops=crops, postprocessor=post,
                                max_frames=max_frames, duration=duration, log=_log, **window)
        except BaseException:
            for sink in sinks:
                sink.close()
            raise
        try:
            summary = pipeline.run()
        except KeyboardInterrupt:  # a second signal gave up draining: no summary to write
            raise typer.Exit(128 + signal.SIGINT) from None
        _log(summary.line())
        for part in summary.sources:
            _log(f"  {part.source}: {part.line()}")
        if run_dir is not None:
            atomic_write_json(run_dir / "summary.json", {
                "command": command_line(),
                "bundle": str(loaded.folder),
                "backend": engine.name,
                "precision": engine.precision,
                "backend_detail": engine.describe(),
                "crops": crops,
                "crops_from": crops_from,
                "stride": stride,
                "alpha": alpha,
                "low": low,
                "high": high,
                **summary.to_dict(),
            })
    finally:
        engine.close()
    if summary.sources and all(part.stopped_by.startswith("failed") for part in summary.sources):
        raise GrmpError("every source failed (see the lines above)")
    if summary.stopped_by in STOP_SIGNALS:  # drained and summarised, but not the stop that was asked for
        raise typer.Exit(128 + signal.Signals[summary.stopped_by])
    if summary.frames == 0:
        raise GrmpError(f"no frame was scored ({summary.corrupt} corrupt, {summary.drops} dropped): "
                        "the source gave nothing usable")
    if report and run_dir is not None:
        from grmp_edge.report.plots import score_timeline

        stats = score_timeline(run_dir / "frames.jsonl", run_dir / "score_timeline.png")
        atomic_write_json(run_dir / "report.json", stats)
        _log(f"report: {run_dir / 'score_timeline.png'} ({stats['frames']} frames over {stats['duration_s']:.1f} s, "
             f"mean score {stats['mean_score']:.3f}, min {stats['min_score']:.3f}, {stats['events']} events)")
