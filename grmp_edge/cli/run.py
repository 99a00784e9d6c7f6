"""``grmp-edge run``: score live frames from a camera, stream, video, image folder or stdin.

Stdout carries only the JSON lines (one per frame, see :mod:`grmp_edge.runtime.sinks`), so it can
be piped; the chosen backend, source events and the final summary go to stderr. Every run also
writes ``runs/run/<name>/frames.jsonl`` and ``summary.json`` (unless ``--no-save``) for
``grmp-edge bench --report`` to find later. The work is :func:`grmp_edge.runtime.session.run`'s;
this module parses the options, prints, maps the outcome to the exit status and draws ``--report``.
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import List, Optional

import typer

from grmp_edge.runtime.postprocess import DEFAULT_ALPHA, DEFAULT_HIGH, DEFAULT_LOW
from grmp_edge.runtime.sources import GRAMMAR

SOURCE_HELP = f"What to score: {GRAMMAR}"


def _log(line: str) -> None:
    typer.echo(f"grmp-edge run: {line}", err=True)


def _finish(result, report: bool) -> None:
    """Exit 128 + N after signal N (drained and summarised, but not the stop that was asked for);
    else plot the run's score timeline and print its summary when ``--report`` asks."""
    stopped_by = result.summary.stopped_by.signal
    if stopped_by is not None:
        raise typer.Exit(128 + stopped_by)
    if not report or result.run_dir is None:
        return
    from grmp_edge.report.plots import run_report

    _log(run_report(result.run_dir).line(result.run_dir / "score_timeline.png"))


def run(
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Bundle folder (or its manifest.json). Default: the newest runs/export/*."),
    source: Optional[List[str]] = typer.Option(None, "--source", "-s", help=SOURCE_HELP + ". Repeat it to score several sources with one engine (batched); each record then carries a 'source' field."),
    sources_file: Optional[Path] = typer.Option(None, "--sources-file", help="A text file of sources, one per line (# comments), scored like repeated --source."),
    batch_window_ms: Optional[float] = typer.Option(None, "--batch-window-ms", help="With several sources: how long a frame waits for the other sources' frames to share its engine call. Default 5."),
    camera: Optional[int] = typer.Option(None, "--camera", help="USB camera number: shorthand for --source v4l2:///dev/videoN."),
    backend: str = typer.Option("auto", "--backend", help="auto (TensorRT or TensorRT-RTX plan for this GPU > ONNX Runtime CUDA > ONNX Runtime CPU), tensorrt, tensorrt-rtx, onnxruntime, or triton://HOST:PORT/MODEL (a Triton server's gRPC endpoint; the bundle still gives the preprocessing)."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, fp16 or int8: which bundle file runs (auto: fp16 on GPUs, fp32 on CPUs)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU inference threads for ONNX Runtime. Default: physical cores."),
    crops: Optional[int] = typer.Option(None, "--crops", help="Score N crops of the model's size at native resolution per frame (batched, averaged); 1 = the resized centre crop. Default: the bundle's crop plan (15 for grmp-tiny, the grid that covers a 16:9 frame; 1 for ViT-B-16 and for bundles older than the plan)."),
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
    from grmp_edge.errors import GrmpError
    from grmp_edge.runtime import session

    if report and not save:
        raise GrmpError("--report plots the run's saved frames: drop --no-save")
    options = session.RunOptions(
        sources=source or (), sources_file=sources_file, camera=camera, bundle=bundle, backend=backend,
        precision=precision, threads=threads, crops=crops, max_frames=max_frames, duration=duration,
        batch_window_ms=batch_window_ms, alpha=alpha, low=low, high=high,
        capture=session.CaptureOptions(stride=stride, stdin_size=stdin_size, csi_width=csi_width,
                                       csi_height=csi_height, csi_fps=csi_fps, csi_flip=csi_flip,
                                       realtime=realtime, loop=loop),
        outputs=session.Outputs(stdout=not quiet, jsonl=jsonl, csv=csv_path, video=save_video, display=display,
                                metrics_port=metrics_port, metrics_host=metrics_host, serve=serve, save=save,
                                name=name, overwrite=overwrite),
    )
    try:
        result = session.run(options, log=_log)
    except KeyboardInterrupt:  # a second signal gave up draining: no summary to write
        raise typer.Exit(128 + signal.SIGINT) from None
    _finish(result, report)
