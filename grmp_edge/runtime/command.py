"""``grmp-edge run``: score live frames from a camera, stream, video, image folder or stdin.

Stdout carries only the JSON lines (one per frame, see :mod:`grmp_edge.runtime.sinks`), so it can
be piped; the chosen backend, source events and the final summary go to stderr. Every run also
writes ``runs/run/<name>/frames.jsonl`` and ``summary.json`` (unless ``--no-save``) for
``grmp-edge bench --report`` to find later.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from grmp_edge.runtime.postprocess import DEFAULT_ALPHA, DEFAULT_HIGH, DEFAULT_LOW

SOURCE_HELP = ("What to score: csi://N (Jetson CSI camera), v4l2:///dev/videoN, rtsp://URL, file://PATH or a "
               "video path, an image file, folder or glob ('frames/*.jpg'), or - for raw RGB24 frames on stdin "
               "(ffmpeg -f rawvideo -pix_fmt rgb24 -) with --stdin-size.")


def _log(line: str) -> None:
    typer.echo(f"grmp-edge run: {line}", err=True)


def run(
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Bundle folder (or its manifest.json). Default: the newest runs/export/*."),
    source: Optional[str] = typer.Option(None, "--source", "-s", help=SOURCE_HELP),
    camera: Optional[int] = typer.Option(None, "--camera", help="USB camera number: shorthand for --source v4l2:///dev/videoN."),
    backend: str = typer.Option("auto", "--backend", help="auto (TensorRT > ONNX Runtime CUDA > ONNX Runtime CPU), tensorrt or onnxruntime."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, fp16 or int8: which bundle file runs (auto: fp16 on GPUs, fp32 on CPUs)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU inference threads for ONNX Runtime. Default: physical cores."),
    crops: int = typer.Option(1, "--crops", help="Score N crops of the model's size at native resolution per frame (batched, averaged); 1 = the resized centre crop."),
    stride: int = typer.Option(1, "--stride", help="Score every K-th frame of the source."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after this many scored frames."),
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
    stdin_size: Optional[str] = typer.Option(None, "--stdin-size", help="WIDTHxHEIGHT of the raw RGB24 frames read with --source -."),
    csi_width: int = typer.Option(1920, "--csi-width", help="CSI camera capture width."),
    csi_height: int = typer.Option(1080, "--csi-height", help="CSI camera capture height."),
    csi_fps: int = typer.Option(30, "--csi-fps", help="CSI camera frame rate."),
    csi_flip: int = typer.Option(0, "--csi-flip", help="CSI image flip (nvvidconv flip-method 0-7; 2 = rotate 180)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run folder name under runs/run/. Default: exp, exp2, ..."),
    save: bool = typer.Option(True, "--save/--no-save", help="Write runs/run/<name>/frames.jsonl and summary.json."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No JSON lines on stdout (files, logs and the summary are still written)."),
    report: bool = typer.Option(False, "--report", help="After the run, plot runs/run/<name>/score_timeline.png (score, smoothed score, events over time) and print a summary; needs grmp-edge[report]."),
) -> None:
    """Score live frames from a camera, stream, video, image folder or stdin; JSON lines on stdout."""
    import sys

    from grmp_edge.artifacts import atomic_write_json
    from grmp_edge.errors import GrmpError
    from grmp_edge.runs import command_line, new_run_dir, slug
    from grmp_edge.runtime.backends import open_backend
    from grmp_edge.runtime.bundle import load_bundle
    from grmp_edge.runtime.pipeline import Pipeline
    from grmp_edge.runtime.postprocess import PostProcessor
    from grmp_edge.runtime.sinks import CsvSink, DisplaySink, JsonlSink, MetricsSink, VideoSink
    from grmp_edge.runtime.sources import parse_source

    # Cheap checks first, so that a typo fails before a model is loaded.
    if report and not save:
        raise GrmpError("--report plots the run's saved frames: drop --no-save")
    frames = parse_source(source, camera, stride=stride, stdin_size=stdin_size, csi_width=csi_width,
                          csi_height=csi_height, csi_fps=csi_fps, csi_flip=csi_flip)
    post = PostProcessor(alpha, low, high)
    loaded = load_bundle(bundle)
    engine = open_backend(loaded, backend=backend, precision=precision, threads=threads)
    try:
        _log(f"bundle {loaded.folder}")
        _log(f"backend {engine.describe()} [{engine.reason}]")
        _log(f"source {frames.name}")
        sinks = []
        try:
            if not quiet:
                sinks.append(JsonlSink(sys.stdout))
            if jsonl is not None:
                sinks.append(JsonlSink(jsonl))
            if csv_path is not None:
                sinks.append(CsvSink(csv_path))
            if save_video is not None:
                sinks.append(VideoSink(save_video))
            if display:
                sinks.append(DisplaySink())
            if metrics_port is not None:
                metrics = MetricsSink(metrics_port, metrics_host)
                sinks.append(metrics)
                _log(f"metrics at {metrics.url}")
            run_dir = new_run_dir("run", slug(name) if name else None) if save else None
            if run_dir is not None:
                sinks.append(JsonlSink(run_dir / "frames.jsonl"))
                _log(f"writing {run_dir / 'frames.jsonl'}")
            pipeline = Pipeline(frames, engine, loaded.preprocess, sinks, crops=crops, postprocessor=post,
                                max_frames=max_frames, duration=duration, log=_log)
        except BaseException:
            for sink in sinks:
                sink.close()
            raise
        summary = pipeline.run()
        _log(summary.line())
        if run_dir is not None:
            atomic_write_json(run_dir / "summary.json", {
                "command": command_line(),
                "bundle": str(loaded.folder),
                "backend": engine.name,
                "precision": engine.precision,
                "backend_detail": engine.describe(),
                "crops": crops,
                "stride": stride,
                "alpha": alpha,
                "low": low,
                "high": high,
                **summary.to_dict(),
            })
    finally:
        engine.close()
    if report and run_dir is not None:
        from grmp_edge.report.plots import score_timeline

        stats = score_timeline(run_dir / "frames.jsonl", run_dir / "score_timeline.png")
        atomic_write_json(run_dir / "report.json", stats)
        _log(f"report: {run_dir / 'score_timeline.png'} ({stats['frames']} frames over {stats['duration_s']:.1f} s, "
             f"mean score {stats['mean_score']:.3f}, min {stats['min_score']:.3f}, {stats['events']} events)")
