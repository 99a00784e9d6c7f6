"""The scoring pipeline: capture and preprocessing overlap inference.

A producer thread iterates the source and turns each frame into the model's uint8 NHWC batch (one
centre crop, or ``crops`` native-resolution crops); a small queue hands the batches to the caller's
thread, which runs the backend, smooths the score, raises alarm events and feeds the sinks. OpenCV's
decoding and resizing and the inference engines release the GIL, so the stages really run at once
and a video scores at close to the engine's own rate.

Stopping: the source ends, ``max_frames`` or ``duration`` is reached, a sink asks (window closed,
stdout reader gone), or SIGINT/SIGTERM arrives. On a signal the frames already queued are still
scored (drained) before the sinks are closed; a second signal gives up draining. Sinks are closed in
every case, and :meth:`Pipeline.run` returns a :class:`RunSummary`.
"""
from __future__ import annotations

import collections
import math
import queue
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from grmp_edge.errors import GrmpError
from grmp_edge.runtime.postprocess import DEGRADED, RECOVERED, PostProcessor
from grmp_edge.runtime.preprocess import native_crops, preprocess
from grmp_edge.runtime.sinks import LATENCY_STAGES, Sink
from grmp_edge.runtime.sources import Frame, FrameSource, SourceEvent
from grmp_edge.spec import PreprocessSpec

# Latency percentiles in the summary come from the most recent frames only, so memory stays flat on
# a camera that runs for weeks.
LATENCY_WINDOW = 4096


@dataclass
class RunSummary:
    """What one run did; ``line()`` is the one-line summary the CLI prints."""

    source: str
    frames: int
    seconds: float
    fps: float
    drops: int
    corrupt: int
    gaps: int
    gap_seconds: float
    mean_score: Optional[float]
    events: dict = field(default_factory=dict)
    latency_ms: dict = field(default_factory=dict)
    stopped_by: str = "end of source"

    def line(self) -> str:
        mean = "n/a" if self.mean_score is None else f"{self.mean_score:.4f}"
        lat = self.latency_ms.get("total", {})
        latency = f", latency p50 {lat['p50']:.1f} ms p90 {lat['p90']:.1f} ms" if lat else ""
        gaps = f", gaps {self.gaps} ({self.gap_seconds:.1f} s)" if self.gaps else ""
        return (f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps), drops {self.drops}, "
                f"corrupt {self.corrupt}{gaps}, mean score {mean}, events degraded {self.events.get(DEGRADED, 0)} "
                f"recovered {self.events.get(RECOVERED, 0)}{latency}; stopped by {self.stopped_by}")

    def to_dict(self) -> dict:
        return asdict(self)


def prepare_batch(rgb: np.ndarray, spec: PreprocessSpec, crops: int = 1) -> np.ndarray:
    """A frame as the model's ``(N, S, S, 3)`` uint8 RGB input: the centre crop, or ``crops`` native crops."""
    if crops > 1:
        return np.ascontiguousarray(native_crops(rgb, spec, crops))
    return preprocess(rgb, spec)[None]


def frame_record(frame: Frame, score: float, smoothed: Optional[float], event: Optional[str],
                 latency_ms: dict) -> dict:
    """The JSON record of a scored frame (see :mod:`grmp_edge.runtime.sinks`)."""
    record = {
        "frame": frame.index,
        "ts": round(frame.ts, 6),
        "score": _finite(score, 6),
        "smoothed": _finite(smoothed, 6),
        "event": event,
        "latency_ms": {stage: round(latency_ms[stage], 3) for stage in LATENCY_STAGES},
    }
    if frame.path is not None:
        record["path"] = frame.path
    if frame.gap_s is not None:
        record["gap_s"] = round(frame.gap_s, 3)
    if frame.media_s is not None:
        record["media_s"] = round(frame.media_s, 3)
    return record


def _finite(value: Optional[float], digits: int) -> Optional[float]:
    # JSON has no NaN: a non-finite score (a broken engine) is written as null.
    return round(float(value), digits) if value is not None and math.isfinite(value) else None


class _Failure:
    """An exception raised on the producer thread, carried to the consumer."""

    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


class Pipeline:
    """Score every frame of ``source`` with ``backend`` and hand the records to ``sinks``.

    ``backend`` is any object with ``infer(batch_uint8_nhwc) -> scores (N,)``; ``spec`` the bundle's
    preprocessing; ``crops`` > 1 scores that many native-resolution crops per frame in one batch and
    averages them. ``queue_size`` batches wait between the stages (default: 1 for live sources, 2 for
    files). ``log`` receives human-readable lines (source lost/back, corrupt frames, alarm events).
    """

    def __init__(
        self,
        source: FrameSource,
        backend,
        spec: PreprocessSpec,
        sinks: Sequence[Sink] = (),
        *,
        crops: int = 1,
        postprocessor: Optional[PostProcessor] = None,
        max_frames: Optional[int] = None,
        duration: Optional[float] = None,
        queue_size: Optional[int] = None,
        log: Optional[Callable[[str], None]] = None,
    ):
        if crops < 1:
            raise GrmpError(f"--crops must be >= 1, got {crops}")
        if max_frames is not None and max_frames < 1:
            raise GrmpError(f"--max-frames must be >= 1, got {max_frames}")
        if duration is not None and duration <= 0:
            raise GrmpError(f"--duration must be > 0 seconds, got {duration}")
        self.source = source
        self.backend = backend
        self.spec = spec
        self.sinks = list(sinks)
        self.crops = crops
        self.post = postprocessor or PostProcessor()
        self.max_frames = max_frames
        self.duration = duration
        self.log = log or (lambda line: None)
        # One queued batch already overlaps capture with inference; a live source gets no more, so a
        # scored frame is at most about two inference times old. Files get one more to absorb jitter.
        if queue_size is None:
            queue_size = 1 if source.live else 2
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._stopped_by = "end of source"
        self._signals = 0

    def stop(self, reason: str = "stop()") -> None:
        """Ask the run to end (thread-safe); frames already queued are still scored."""
        if not self._stop.is_set():
            self._stopped_by = reason
        self._stop.set()

    # -- producer thread -------------------------------------------------------------------------

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        frames = iter(self.source)
        try:
            for frame in frames:
                if self._stop.is_set():
                    break
                t0 = time.perf_counter()
                batch = prepare_batch(frame.rgb, self.spec, self.crops)
                if not self._put((frame, batch, (time.perf_counter() - t0) * 1e3)):
                    break
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, which re-raises it on the caller's thread
            self._put(_Failure(exc))
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # runs the source generator's cleanup (releases the capture) on this thread

    # -- consumer (caller's thread) --------------------------------------------------------------

    def _on_source_event(self, event: SourceEvent) -> None:
        self.log(event.detail)

    def _on_signal(self, signum, _frame) -> None:
        self._signals += 1
        if self._signals > 1:
            raise KeyboardInterrupt  # second Ctrl-C: stop draining now
        self.log(f"{signal.Signals(signum).name}: draining queued frames, then closing the sinks")
        self.stop(signal.Signals(signum).name)

    def _next_item(self, started: float):
        """The next queued item, or None when the run should end (after draining on stop)."""
        while True:
            if self._stop.is_set():
                try:
                    return self._queue.get_nowait()
                except queue.Empty:
                    return None
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if self.duration is not None and time.perf_counter() - started >= self.duration:
                    self.stop("duration")
                    return None

    def run(self, handle_signals: bool = True) -> RunSummary:
        """Run until the source ends or a stop condition; sinks are closed whatever happens."""
        previous = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        self.source.on_event = self._on_source_event
        producer = threading.Thread(target=self._produce, name="capture+preprocess", daemon=True)
        started = time.perf_counter()
        frames, scored, score_sum = 0, 0, 0.0
        events: collections.Counter = collections.Counter()
        latency = {stage: collections.deque(maxlen=LATENCY_WINDOW) for stage in LATENCY_STAGES}
        latency_sum = dict.fromkeys(LATENCY_STAGES, 0.0)
        try:
            producer.start()
            while True:
                item = self._next_item(started)
                if item is None or item is _END:
                    break
                if isinstance(item, _Failure):
                    raise item.exc
                frame, batch, preprocess_ms = item
                t0 = time.perf_counter()
                scores = np.asarray(self.backend.infer(batch), dtype=np.float64).reshape(-1)
                t1 = time.perf_counter()
                score = float(scores.mean())
                if math.isfinite(score):
                    smoothed, event = self.post.update(score)
                    score_sum += score
                    scored += 1
                else:
                    smoothed, event = self.post.smoother.value, None
                if event:
                    events[event] += 1
                    self.log(f"frame {frame.index}: {event} (smoothed score {smoothed:.3f})")
                lat = {"capture": frame.capture_ms, "preprocess": preprocess_ms,
                       "infer": (t1 - t0) * 1e3, "total": (time.perf_counter() - frame.t_start) * 1e3}
                record = frame_record(frame, score, smoothed, event, lat)
                for sink in self.sinks:
                    sink.write(record, frame, self.source)
                frames += 1
                for stage in LATENCY_STAGES:
                    latency[stage].append(lat[stage])
                    latency_sum[stage] += lat[stage]
                if self.max_frames is not None and frames >= self.max_frames:
                    self.stop("max-frames")
                    break
                if self.duration is not None and time.perf_counter() - started >= self.duration:
                    self.stop("duration")
                    break
                if any(sink.should_stop() for sink in self.sinks):
                    self.stop("a sink (window closed or output closed)")
        finally:
            self._stop.set()
            self.source.close()
            producer.join(timeout=1.0)  # a reader blocked on an idle stdin pipe is a daemon: left behind
            errors = []
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as exc:  # close the others regardless; report the first failure
                    errors.append(exc)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if errors:
            raise GrmpError(f"closing an output failed: {errors[0]}")
        seconds = time.perf_counter() - started
        stats = self.source.stats
        return RunSummary(
            source=self.source.name,
            frames=frames,
            seconds=seconds,
            fps=frames / seconds if seconds > 0 else 0.0,
            drops=stats.drops,
            corrupt=stats.corrupt,
            gaps=stats.gaps,
            gap_seconds=stats.gap_seconds,
            mean_score=score_sum / scored if scored else None,
            events={DEGRADED: events[DEGRADED], RECOVERED: events[RECOVERED]},
            latency_ms={stage: _latency_summary(latency[stage], latency_sum[stage], frames)
                        for stage in LATENCY_STAGES} if frames else {},
            stopped_by=self._stopped_by,
        )


def _latency_summary(recent, total: float, count: int) -> dict:
    values = np.asarray(recent, dtype=np.float64)
    return {"mean": total / count, "p50": float(np.percentile(values, 50)), "p90": float(np.percentile(values, 90))}
