"""The scoring pipeline: capture and preprocessing overlap inference, one engine for many sources.

Each source has its own producer thread that iterates it and turns each frame into the model's uint8
NHWC batch (one centre crop, or ``crops`` native-resolution crops), and its own small queue. The
caller's thread gathers what the sources have queued into one engine call, runs the backend, smooths
each source's scores separately, raises its alarm events and feeds the sinks. OpenCV's decoding and
resizing and the inference engines release the GIL, so the stages really run at once.

Batching: the first frame to arrive opens a window of ``batch_window`` seconds (a few ms); the
frames of the other sources that arrive within it join the same engine call, at most one frame per
source and at most the engine's ``max_batch`` crops. The window closes early once every running
source has a frame in the batch, so a single source never waits, and a source that stalls (a lost
camera) delays the others by one window at most.

Stopping: every source ends, ``max_frames`` (per source) or ``duration`` is reached, a sink asks
(window closed, stdout reader gone), or SIGINT/SIGTERM arrives. On a signal the frames already queued
are still scored (drained) before the sinks are closed; a second signal gives up draining. Sinks are
closed in every case, and :meth:`Pipeline.run` returns a
:class:`~grmp_edge.runtime.summary.RunSummary`.

With one source a failing source is raised on the caller's thread. With several, a source that
fails is reported on the log and in its summary and the others go on; live sources there keep
reopening with backoff (see :class:`~grmp_edge.runtime.sources.LiveSource`) rather than fail.
"""
from __future__ import annotations

import collections
import math
import queue
import signal
import threading
import time
from typing import Callable, Optional, Sequence, Union

import numpy as np

from grmp_edge.errors import GrmpError
from grmp_edge.limits import check_range
from grmp_edge.preprocess import native_crops, preprocess
from grmp_edge.runtime.postprocess import DEGRADED, RECOVERED, PostProcessor
from grmp_edge.runtime.sinks import Sink
from grmp_edge.runtime.source_state import LATENCY_STAGES, LatencyWindow
from grmp_edge.runtime.sources import Frame, FrameSource, SourceEvent
from grmp_edge.runtime.summary import RunSummary, StopKind, StopReason
from grmp_edge.spec import MAX_CROPS, PreprocessSpec

# Latency percentiles in the summary come from the most recent frames only, so memory stays flat on
# a camera that runs for weeks.
LATENCY_WINDOW = 4096
# How long the first queued frame waits for the other sources' frames to share its engine call: long
# enough for cameras of the same rate to line up, short against one inference (tens of ms on a CPU).
BATCH_WINDOW_S = 0.005
# How long the end of a run waits for the producer threads after closing their sources; a reader
# blocked on an idle stdin pipe is a daemon thread and is left behind.
JOIN_TIMEOUT_S = 1.0


def check_limits(crops: Optional[int] = 1, max_frames: Optional[int] = None, duration: Optional[float] = None,
                 batch_window: Optional[float] = BATCH_WINDOW_S) -> None:
    """One-line GrmpErrors, naming the ``grmp-edge run`` option, for a run's limits out of range:
    ``crops`` per frame, ``max_frames`` per source, ``duration`` and ``batch_window`` in seconds (None:
    not set). :class:`Pipeline` and the command's checks before a model loads both call this."""
    check_range("--crops", crops, 1, MAX_CROPS)
    check_range("--max-frames", max_frames, 1)
    check_range("--duration", duration, 1e-3)
    check_range("--batch-window-ms", None if batch_window is None else batch_window * 1e3, 0, 1000)


def prepare_batch(rgb: np.ndarray, spec: PreprocessSpec, crops: int = 1) -> np.ndarray:
    """A frame as the model's ``(N, S, S, 3)`` uint8 RGB input: the centre crop, or ``crops`` native crops."""
    if crops > 1:
        return np.ascontiguousarray(native_crops(rgb, spec, crops))
    return preprocess(rgb, spec)[None]


def frame_record(frame: Frame, score: float, smoothed: Optional[float], event: Optional[str],
                 latency_ms: dict, source: Optional[str] = None) -> dict:
    """The JSON record of a scored frame (see :mod:`grmp_edge.runtime.sinks`); ``source`` labels the
    frame's source in runs of several."""
    record = {
        "frame": frame.index,
        "ts": round(frame.ts, 6),
        "score": _finite(score, 6),
        "smoothed": _finite(smoothed, 6),
        "event": event,
        "latency_ms": {stage: round(latency_ms[stage], 3) for stage in LATENCY_STAGES},
    }
    if source is not None:
        record["source"] = source
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


def source_labels(names: Sequence[str]) -> list[str]:
    """Unique labels for sources (records, metrics): the names, with ``#2``, ``#3``... on repeats."""
    seen: collections.Counter = collections.Counter()
    labels = []
    for name in names:
        seen[name] += 1
        labels.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return labels


class _Failure:
    """An exception raised on a producer thread, carried to the consumer."""

    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


def _frames_in(taken: dict) -> int:
    """How many of the gathered items are frames (not a source's end or failure)."""
    return sum(item is not _END and not isinstance(item, _Failure) for item in taken.values())


class _Lane:
    """One source's part of a run: its queue, producer thread, smoothing and counters."""

    def __init__(self, source: FrameSource, label: str, post: PostProcessor, queue_size: int):
        self.source, self.label, self.post = source, label, post
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.thread: Optional[threading.Thread] = None
        self.stopped_by: Optional[StopReason] = None  # set once the lane is finished
        self.frames = self.scored = 0
        self.score_sum = 0.0
        self.events: collections.Counter = collections.Counter()
        self.latency = LatencyWindow(LATENCY_WINDOW)

    def add(self, score: float, event: Optional[str], latency_ms: dict) -> None:
        self.frames += 1
        if math.isfinite(score):
            self.scored += 1
            self.score_sum += score
        if event:
            self.events[event] += 1
        self.latency.add(latency_ms)

    def summary(self, seconds: float, stopped_by: StopReason) -> RunSummary:
        stats = self.source.stats
        return RunSummary(
            source=self.label, frames=self.frames, seconds=seconds,
            fps=self.frames / seconds if seconds > 0 else 0.0,
            drops=stats.drops, corrupt=stats.corrupt, gaps=stats.gaps, gap_seconds=stats.gap_seconds,
            mean_score=self.score_sum / self.scored if self.scored else None,
            events={DEGRADED: self.events[DEGRADED], RECOVERED: self.events[RECOVERED]},
            latency_ms=self.latency.summary(),
            stopped_by=stopped_by,
        )


def _combined(per_source: list[RunSummary], lanes: list[_Lane], seconds: float,
              stopped_by: StopReason) -> RunSummary:
    """The run-wide summary of several sources: their sums, the aggregate rate, one latency window."""
    frames = sum(s.frames for s in per_source)
    scored = sum(lane.scored for lane in lanes)
    return RunSummary(
        source=f"{len(per_source)} sources", frames=frames, seconds=seconds,
        fps=frames / seconds if seconds > 0 else 0.0,
        drops=sum(s.drops for s in per_source), corrupt=sum(s.corrupt for s in per_source),
        gaps=sum(s.gaps for s in per_source), gap_seconds=sum(s.gap_seconds for s in per_source),
        mean_score=sum(lane.score_sum for lane in lanes) / scored if scored else None,
        events={event: sum(s.events[event] for s in per_source) for event in (DEGRADED, RECOVERED)},
        latency_ms=LatencyWindow.merged(lane.latency for lane in lanes).summary(),
        stopped_by=stopped_by, sources=per_source,
    )


class Pipeline:
    """Score every frame of ``source`` (one :class:`FrameSource` or a list) with ``backend`` and hand
    the records to ``sinks``.

    ``backend`` is any object with ``infer(batch_uint8_nhwc) -> scores (N,)`` (and optionally
    ``max_batch``); ``spec`` the bundle's preprocessing; ``crops`` > 1 scores that many
    native-resolution crops per frame in one batch and averages them. ``postprocessor`` is the
    smoothing and alarm of the first source; the others get fresh copies of its settings.
    ``max_frames`` applies to each source. ``queue_size`` batches wait per source between the stages
    (default: 1 for live sources, 2 for files). ``batch_window`` seconds: see the module doc.
    ``log`` receives human-readable lines (source lost/back, corrupt frames, alarm events). With
    several sources each record carries a ``source`` field (the source's name, made unique).
    ``clock`` (seconds) times the run: ``duration``, the batch window and the summary's ``seconds``.
    """

    def __init__(
        self,
        source: Union[FrameSource, Sequence[FrameSource]],
        backend,
        spec: PreprocessSpec,
        sinks: Sequence[Sink] = (),
        *,
        crops: int = 1,
        postprocessor: Optional[PostProcessor] = None,
        max_frames: Optional[int] = None,
        duration: Optional[float] = None,
        queue_size: Optional[int] = None,
        batch_window: float = BATCH_WINDOW_S,
        log: Optional[Callable[[str], None]] = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        check_limits(crops, max_frames, duration, batch_window)
        sources = [source] if isinstance(source, FrameSource) else list(source)
        if not sources:
            raise GrmpError("no source to score")
        self.backend, self.spec, self.sinks, self.crops = backend, spec, list(sinks), crops
        self.max_frames, self.duration, self.batch_window = max_frames, duration, batch_window
        self.log = log or (lambda line: None)
        self.clock = clock
        self.multi = len(sources) > 1
        self._lanes = self._make_lanes(sources, postprocessor or PostProcessor(), queue_size)
        max_batch = getattr(backend, "max_batch", None)
        # Frames per engine call; a frame's crops always go together, even past a small max_batch.
        self._per_call = len(self._lanes) if max_batch is None else max(1, max_batch // crops)
        self._arrived = threading.Condition()
        self._stop = threading.Event()
        self._stopped_by: Optional[StopReason] = None
        self._signals = 0

    @staticmethod
    def _make_lanes(sources: list[FrameSource], post: PostProcessor, queue_size: Optional[int]) -> list[_Lane]:
        lanes = []
        for i, (src, label) in enumerate(zip(sources, source_labels([s.name for s in sources]))):
            lane_post = post if i == 0 else PostProcessor(post.smoother.alpha, post.alarm.low, post.alarm.high)
            # One queued batch already overlaps capture with inference; a live source gets no more, so a
            # scored frame is at most about two inference times old. Files get one more to absorb jitter.
            size = queue_size if queue_size is not None else (1 if src.live else 2)
            lanes.append(_Lane(src, label, lane_post, size))
        return lanes

    @property
    def source(self) -> FrameSource:
        """The first (with one source, the only) source."""
        return self._lanes[0].source

    def stop(self, reason: StopReason = StopReason(StopKind.REQUESTED)) -> None:
        """Ask the run to end (thread-safe); frames already queued are still scored."""
        if not self._stop.is_set():
            self._stopped_by = reason
        self._stop.set()
        with self._arrived:
            self._arrived.notify_all()

    # -- producer threads (one per source) -------------------------------------------------------

    def _put(self, lane: _Lane, item) -> bool:
        while not self._stop.is_set() and lane.stopped_by is None:
            try:
                lane.queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            with self._arrived:
                self._arrived.notify()
            return True
        return False

    def _produce(self, lane: _Lane) -> None:
        frames = iter(lane.source)
        try:
            for frame in frames:
                if self._stop.is_set():
                    break
                t0 = time.perf_counter()
                batch = prepare_batch(frame.rgb, self.spec, self.crops)
                if not self._put(lane, (frame, batch, (time.perf_counter() - t0) * 1e3)):
                    break
            self._put(lane, _END)
        except BaseException as exc:  # handed to the consumer, which raises or reports it
            self._put(lane, _Failure(exc))
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
        self.stop(StopReason.of_signal(signum))

    def _out_of_time(self, started: float) -> bool:
        if self.duration is not None and self.clock() - started >= self.duration:
            self.stop(StopReason(StopKind.DURATION))
            return True
        return False

    def _take_queued(self, running: list[_Lane], taken: dict) -> bool:
        """Move at most one queued item per running lane into ``taken``, up to a call's worth of
        frames; True when something was taken."""
        took = False
        for lane in running:
            if lane in taken or _frames_in(taken) >= self._per_call:
                continue
            try:
                taken[lane] = lane.queue.get_nowait()
            except queue.Empty:
                continue
            took = True
        return took

    def _gather(self, started: float) -> Optional[list]:
        """The next engine call's items as ``(lane, item)`` pairs (see the module doc), or None when
        the run should end (after draining on stop)."""
        taken: dict = {}
        deadline = None
        with self._arrived:
            while True:
                running = [lane for lane in self._lanes if lane.stopped_by is None]
                if self._take_queued(running, taken) and deadline is None:
                    deadline = self.clock() + self.batch_window  # the first arrival opens the window
                if taken and (_frames_in(taken) >= self._per_call or all(lane in taken for lane in running)
                              or self._stop.is_set() or self.clock() >= deadline):
                    return list(taken.items())
                if self._stop.is_set() or not running:
                    return None
                if not taken and self._out_of_time(started):
                    return None
                self._arrived.wait(0.1 if deadline is None else max(0.0, deadline - self.clock()))

    def _finish(self, lane: _Lane, reason: StopReason) -> None:
        lane.stopped_by = reason
        lane.source.close()
        if self.multi:
            self.log(f"{lane.label}: stopped ({reason})")

    def _frames_to_score(self, items: list) -> list:
        """The gathered frames still to score; a source's end or failure finishes its lane (a
        failure is raised with one source)."""
        frames = []
        for lane, item in items:
            if item is _END:
                self._finish(lane, StopReason(StopKind.END_OF_SOURCE))
            elif isinstance(item, _Failure):
                if not self.multi:
                    raise item.exc
                self._finish(lane, StopReason.failure(item.exc))
            elif lane.stopped_by is None:  # frames queued after max-frames are not scored
                frames.append((lane, item))
        return frames

    def _score(self, items: list) -> None:
        """One engine call over the frames in ``items``; records to the sinks, per-source smoothing."""
        t0 = time.perf_counter()
        scores = np.asarray(self.backend.infer(np.concatenate([batch for _, (_, batch, _) in items])),
                            dtype=np.float64).reshape(len(items), -1)
        infer_ms = (time.perf_counter() - t0) * 1e3
        for (lane, (frame, _, preprocess_ms)), crop_scores in zip(items, scores):
            score = float(crop_scores.mean())
            if math.isfinite(score):
                smoothed, event = lane.post.update(score)
            else:
                smoothed, event = lane.post.smoother.value, None
            if event:
                prefix = f"{lane.label}: " if self.multi else ""
                self.log(f"{prefix}frame {frame.index}: {event} (smoothed score {smoothed:.3f})")
            lat = {"capture": frame.capture_ms, "preprocess": preprocess_ms,
                   "infer": infer_ms, "total": (time.perf_counter() - frame.t_start) * 1e3}
            record = frame_record(frame, score, smoothed, event, lat, lane.label if self.multi else None)
            for sink in self.sinks:
                sink.write(record, frame, lane.source)
            lane.add(score, event, lat)
            if self.max_frames is not None and lane.frames >= self.max_frames:
                self._finish(lane, StopReason(StopKind.MAX_FRAMES))

    def _consume(self, started: float) -> None:
        """Gather, score and hand out frames until every source ends or a stop condition."""
        while True:
            items = self._gather(started)
            if items is None:
                return
            frames = self._frames_to_score(items)
            if frames:
                self._score(frames)
            if all(lane.stopped_by is not None for lane in self._lanes) or self._out_of_time(started):
                return
            if any(sink.should_stop() for sink in self.sinks):
                self.stop(StopReason(StopKind.SINK))

    def _start_producers(self) -> None:
        for lane in self._lanes:
            lane.source.on_event = self._on_source_event
            lane.thread = threading.Thread(target=self._produce, args=(lane,), daemon=True,
                                           name=f"capture+preprocess {lane.label}")
        for lane in self._lanes:
            lane.thread.start()

    def _shut_down(self) -> list[Exception]:
        """Stop the producers, then close every sink; the sinks' close failures, in order."""
        self._stop.set()
        for lane in self._lanes:
            lane.source.close()
        join_until = time.perf_counter() + JOIN_TIMEOUT_S
        for lane in self._lanes:
            if lane.thread is not None and lane.thread.ident is not None:
                lane.thread.join(timeout=max(0.0, join_until - time.perf_counter()))
        errors = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # close the others regardless; report the first failure
                errors.append(exc)
        return errors

    def run(self, handle_signals: bool = True) -> RunSummary:
        """Run until every source ends or a stop condition; sinks are closed whatever happens."""
        previous = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        started = self.clock()
        try:
            self._start_producers()
            self._consume(started)
        finally:
            errors = self._shut_down()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if errors:
            raise GrmpError(f"closing an output failed: {errors[0]}")
        return self._summary(self.clock() - started)

    def _summary(self, seconds: float) -> RunSummary:
        # A signal wins over what the lanes saw while draining: the exit status depends on it.
        signalled = self._stopped_by is not None and self._stopped_by.signal is not None
        end = StopReason(StopKind.END_OF_SOURCE)
        reasons = [self._stopped_by if signalled else lane.stopped_by or self._stopped_by or end
                   for lane in self._lanes]
        per_source = [lane.summary(seconds, reason) for lane, reason in zip(self._lanes, reasons)]
        if not self.multi:
            return per_source[0]
        stopped_by = self._stopped_by or (reasons[0] if len(set(reasons)) == 1
                                          else StopReason(StopKind.EVERY_SOURCE_ENDED))
        return _combined(per_source, self._lanes, seconds, stopped_by)
