"""Frame sources: one ``--source`` grammar for cameras, streams, videos, image folders and stdin.

The forms a ``--source`` text takes are :data:`SOURCE_FORMS` (``parse_source`` reads them; the
command's help and the error messages are written from that table).

Every source yields :class:`Frame` objects holding RGB pixels: frames decoded by OpenCV arrive as BGR
and are converted exactly once, here. Live sources (cameras, streams) capture on their own thread into
a small bounded queue and deliver the latest frame; when the queue is full the oldest frame is dropped
and counted. A live source that stops delivering is reopened with exponential backoff and the gap is
reported (an event, the stats, and ``gap_s`` on the first frame after it). Files, folders and stdin
deliver every frame in order (or every ``stride``-th). A frame or image that cannot be decoded is
skipped and counted, never fatal.
"""
from __future__ import annotations

import collections
import contextlib
import glob
import io
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from grmp_edge.images import IMAGE_SUFFIXES, list_images, read_rgb
from grmp_edge.artifacts import user_path
from grmp_edge.errors import GrmpError, opencv


@dataclass(frozen=True)
class SourceForm:
    """One form of a ``--source`` text: how it is written and what it reads."""

    syntax: str
    what: str


SOURCE_FORMS = (
    SourceForm("csi://N", "Jetson CSI camera N through GStreamer nvarguscamerasrc; needs an OpenCV built with "
                          "GStreamer, as JetPack's is"),
    SourceForm("v4l2:///dev/videoN", "USB camera through V4L2; --camera N is the shorthand"),
    SourceForm("rtsp://URL", "network stream (rtsps:// too), decoded by OpenCV's FFmpeg backend"),
    SourceForm("file://PATH or PATH", "a video file, an image file, an image folder (recursive) or a glob "
                                      "such as 'frames/*.jpg' (sorted by name)"),
    SourceForm("-", "raw RGB24 frames on stdin (W*H*3 bytes each, no header) of the size --stdin-size WxH "
                    "gives, as ffmpeg -i in.mp4 -f rawvideo -pix_fmt rgb24 - writes them"),
)
# The forms in one line, for error messages and the command's help.
GRAMMAR = "; ".join(f"{form.syntax} ({form.what})" for form in SOURCE_FORMS)

# A video whose decoder fails this many times in a row has ended (failures followed by a good frame
# were corrupt frames). OpenCV cannot tell "end of file" from "undecodable frame" on its own.
MAX_CONSECUTIVE_READ_FAILURES = 16
# A stream that sends nothing for this long is lost (and reopened). FFmpeg's own default is 30 s,
# and a camera that loses power sends no goodbye.
STREAM_TIMEOUT_MS = 5000
# How long a live source's iteration waits, once closed, for its capture thread; a capture stalled
# inside read() is a daemon thread and is left behind.
CAPTURE_JOIN_TIMEOUT_S = 1.0


@dataclass
class Frame:
    """One captured frame.

    ``index`` is the frame's position in its source (skipped, strided and dropped frames keep their
    numbers, so gaps in ``index`` show them); ``ts`` the wall-clock capture time (Unix seconds);
    ``rgb`` an ``(H, W, 3)`` uint8 RGB array; ``path`` the image file for folder/glob sources;
    ``capture_ms`` the time spent reading and decoding it; ``gap_s`` the outage length on the first
    frame after a live source came back; ``t_start`` the ``time.perf_counter()`` at capture start
    (end-to-end latency is measured from it).
    """

    index: int
    ts: float
    rgb: np.ndarray
    path: Optional[str] = None
    capture_ms: float = 0.0
    gap_s: Optional[float] = None
    t_start: float = field(default_factory=time.perf_counter)
    media_s: Optional[float] = None


@dataclass
class SourceEvent:
    """Something a source reports besides frames: ``lost``, ``back`` (with ``gap_s``) or ``corrupt``."""

    kind: str
    source: str
    detail: str
    ts: float = field(default_factory=time.time)
    gap_s: Optional[float] = None


@dataclass
class SourceStats:
    """Counters a source keeps while it runs (read by the pipeline's summary and the metrics sink)."""

    frames: int = 0
    drops: int = 0
    corrupt: int = 0
    gaps: int = 0
    gap_seconds: float = 0.0
    reopen_attempts: int = 0


class FrameSource:
    """Base of every source: iterate it for :class:`Frame` objects; ``close()`` stops it early.

    ``live`` sources deliver the latest frame and may drop; ``fps`` is the nominal rate once opened
    (None where unknown); ``on_event`` is called with each :class:`SourceEvent` (from the capture
    thread for live sources).
    """

    live = False

    @property
    def paced(self) -> bool:
        """Frames come at the source's own rate (a camera, a stream, a file played in real time),
        so the scorer waits between them."""
        return self.live

    def __init__(self, name: str, stride: int = 1):
        if stride < 1:
            raise GrmpError(f"--stride must be >= 1, got {stride}")
        self.name = name
        self.stride = stride
        self.fps: Optional[float] = None
        self.stats = SourceStats()
        self.on_event: Optional[Callable[[SourceEvent], None]] = None
        self._closed = threading.Event()

    def frames(self) -> Iterator[Frame]:
        """Yield frames until the source ends or is closed."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def close(self) -> None:
        """Stop delivering frames (idempotent, callable from any thread)."""
        self._closed.set()

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def _emit(self, kind: str, detail: str, gap_s: Optional[float] = None) -> None:
        if self.on_event is not None:
            self.on_event(SourceEvent(kind, self.name, detail, gap_s=gap_s))

    def _corrupt(self, detail: str) -> None:
        self.stats.corrupt += 1
        self._emit("corrupt", detail)

    def _delivered(self, frame: Frame) -> Frame:
        self.stats.frames += 1
        return frame

    def _frame_of(self, got: "Grab", index: int, where: str, **extra) -> Optional[Frame]:
        """A kept :class:`Grab` as the Frame numbered ``index``, or None (counted and reported as
        corrupt) when OpenCV returned something that is not an image."""
        rgb = bgr_to_rgb(got.bgr)
        if rgb is None:
            self._corrupt(f"{where}: frame {index} is not an image")
            return None
        capture_ms = (time.perf_counter() - got.t_start) * 1e3
        return Frame(index, got.ts, rgb, None, capture_ms, t_start=got.t_start, **extra)


def bgr_to_rgb(image: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """An OpenCV frame (BGR, BGRA or grey) as contiguous RGB uint8, or None when it is not an image."""
    if image is None or not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.size == 0:
        return None
    cv2 = opencv()
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3:
        return None
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return None


@dataclass
class Grab:
    """One read from an OpenCV capture: ``ok`` is False when it failed; ``bgr`` is set for kept frames."""

    ok: bool
    bgr: Optional[np.ndarray]
    ts: float
    t_start: float


def grab(cap, keep: bool) -> Grab:
    """Read the next frame of an OpenCV capture (a video file, camera or stream). Only a kept frame is
    decoded (``grab()`` then ``retrieve()``), so frames skipped by ``--stride`` cost no decoding."""
    t_start, ts = time.perf_counter(), time.time()
    ok, bgr = cap.grab(), None
    if ok and keep:
        ok, bgr = cap.retrieve()
    return Grab(bool(ok), bgr, ts, t_start)


class VideoFileSource(FrameSource):
    """Every frame (or every ``stride``-th) of a video file, in order; skipped frames are not decoded.

    ``realtime`` delivers frames no faster than the file's frame rate (25 fps when it does not say),
    as a camera would; ``loop`` starts the file again at its end until the source is closed (frame
    numbers keep counting, ``media_s`` is the time within the file).
    """

    def __init__(self, path: Path, stride: int = 1, realtime: bool = False, loop: bool = False):
        super().__init__(f"video {path}", stride)
        self.path = Path(path)
        self.realtime, self.loop = realtime, loop

    @property
    def paced(self) -> bool:
        return self.realtime

    def _open(self):
        cap = opencv().VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise GrmpError(f"cannot open video {self.path}: OpenCV cannot decode it (not a video, or codec missing)")
        return cap

    def frames(self) -> Iterator[Frame]:
        cv2 = opencv()
        cap = self._open()
        self.fps = cap.get(cv2.CAP_PROP_FPS) or None
        period = self.stride / (self.fps or 25.0)  # between delivered frames, with realtime
        due = time.perf_counter()
        try:
            base, pos, length, failures = 0, 0, 0, 0  # length: frames read in this pass over the file
            while not self._closed.is_set():
                index = base + pos
                keep = index % self.stride == 0
                if self.realtime and keep and not failures:
                    if self._closed.wait(max(0.0, due - time.perf_counter())):
                        break
                    # Behind (scoring is slower than the video): go on from now, as a camera would,
                    # instead of racing through frames to catch up.
                    due = max(due, time.perf_counter()) + period
                got = grab(cap, keep)
                if not got.ok:
                    failures += 1
                    if failures >= MAX_CONSECUTIVE_READ_FAILURES:
                        if not (self.loop and length):
                            break  # end of stream; trailing failures are not corrupt frames
                        cap.release()
                        cap = self._open()  # replay: reopening works for every container, seeking may not
                        base, pos, length, failures = base + length, 0, 0, 0
                        continue
                    pos += 1
                    continue
                length = pos + 1
                if failures:
                    self.stats.corrupt += failures
                    self._emit("corrupt", f"{self.path}: {failures} undecodable frame(s) before frame {index}")
                    failures = 0
                if keep:
                    frame = self._frame_of(got, index, str(self.path), media_s=pos / self.fps if self.fps else None)
                    if frame is not None:
                        yield self._delivered(frame)
                pos += 1
        finally:
            cap.release()


class ImageFilesSource(FrameSource):
    """Image files in order (a folder, a glob or one file); undecodable files are skipped and counted."""

    def __init__(self, paths: list[Path], name: str, stride: int = 1):
        super().__init__(name, stride)
        self.paths = list(paths)

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            if self._closed.is_set():
                return
            if index % self.stride:
                continue
            t_start, ts = time.perf_counter(), time.time()
            try:
                rgb = read_rgb(path)
            except GrmpError as exc:
                self._corrupt(str(exc))
                continue
            capture_ms = (time.perf_counter() - t_start) * 1e3
            yield self._delivered(Frame(index, ts, rgb, str(path), capture_ms, t_start=t_start))


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(width, height)``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise GrmpError(f"size must look like 1280x720 (WIDTHxHEIGHT), got {text!r}")
    return int(match.group(1)), int(match.group(2))


class StdinRawSource(FrameSource):
    """Packed RGB24 frames of a fixed size from a binary stream (stdin by default).

    Reads the file descriptor unbuffered, so a reader blocked on an idle pipe holds no interpreter
    lock and the process can still shut down cleanly on SIGTERM. A truncated last frame is counted
    as corrupt.
    """

    def __init__(self, width: int, height: int, stride: int = 1, stream: Optional[io.RawIOBase] = None):
        super().__init__(f"stdin rgb24 {width}x{height}", stride)
        self.width, self.height = width, height
        self._stream = stream

    def _raw(self) -> io.RawIOBase:
        if self._stream is not None:
            return self._stream
        return io.FileIO(sys.stdin.fileno(), "rb", closefd=False)

    def frames(self) -> Iterator[Frame]:
        raw = self._raw()
        size = self.width * self.height * 3
        index = 0
        while not self._closed.is_set():
            t_start, ts = time.perf_counter(), time.time()
            buf = bytearray(size)
            got = _read_exact(raw, memoryview(buf))
            if got == 0:
                return
            if got < size:
                self._corrupt(f"stdin ended inside a frame ({got} of {size} bytes; is --stdin-size right?)")
                return
            if index % self.stride == 0:
                rgb = np.frombuffer(buf, np.uint8).reshape(self.height, self.width, 3)
                capture_ms = (time.perf_counter() - t_start) * 1e3
                yield self._delivered(Frame(index, ts, rgb, None, capture_ms, t_start=t_start))
            index += 1


def _read_exact(raw: io.RawIOBase, view: memoryview) -> int:
    """Fill ``view`` from ``raw``; returns the bytes read (short only at end of stream)."""
    got = 0
    while got < len(view):
        n = raw.readinto(view[got:])
        if not n:
            break
        got += n
    return got


class LiveSource(FrameSource):
    """A camera or stream read by a capture thread that keeps only the latest ``queue_size`` frames.

    ``opener()`` returns a ``cv2.VideoCapture``. The first open happens when iteration starts and a
    failure is a GrmpError (``hint`` says what to check), unless ``retry_first_open``: then it is
    reported as a ``lost`` event and retried like a later loss (a run of several cameras keeps going
    while one of them is still booting). Later failures (the camera was unplugged, the stream
    dropped) start reopen attempts with exponential backoff from ``backoff_min`` to ``backoff_max``
    seconds until the source comes back or is closed.
    """

    live = True

    def __init__(self, name: str, opener: Callable[[], object], hint: str = "", stride: int = 1,
                 queue_size: int = 2, backoff_min: float = 0.1, backoff_max: float = 5.0,
                 retry_first_open: bool = False):
        super().__init__(name, stride)
        if queue_size < 1:
            raise GrmpError(f"queue size must be >= 1, got {queue_size}")
        self.opener = opener
        self.hint = hint
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.retry_first_open = retry_first_open
        self._queue: collections.deque = collections.deque(maxlen=queue_size)
        self._ready = threading.Condition()
        self._done = False
        self._error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None

    def _try_open(self):
        try:
            with _opencv_errors_only():
                cap = self.opener()
        except Exception:  # OpenCV raises cv2.error for some unopenable devices; all mean "not yet"
            return None
        if cap is not None and cap.isOpened():
            return cap
        if cap is not None:
            cap.release()
        return None

    def frames(self) -> Iterator[Frame]:
        cap = self._try_open()
        if cap is None:
            message = f"cannot open {self.name}" + (f": {self.hint}" if self.hint else "")
            if not self.retry_first_open:
                raise GrmpError(message)
            self._emit("lost", f"{message}; retrying with backoff")
        else:
            self.fps = cap.get(opencv().CAP_PROP_FPS) or None
        self._thread = threading.Thread(target=self._capture, args=(cap,), name=f"capture {self.name}", daemon=True)
        self._thread.start()
        try:
            while True:
                with self._ready:
                    # Closed means stop now, even while a stalled capture thread is still inside read().
                    while not self._queue and not self._done and not self._closed.is_set():
                        self._ready.wait(0.1)
                    if self._closed.is_set() or not self._queue:
                        break
                    frame = self._queue.popleft()
                yield self._delivered(frame)
        finally:
            self.close()
            self._thread.join(timeout=CAPTURE_JOIN_TIMEOUT_S)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        super().close()
        with self._ready:
            self._ready.notify_all()

    def _capture(self, cap) -> None:
        try:
            self._capture_loop(cap)
        except BaseException as exc:  # surfaced to the consumer, never lost in a thread
            self._error = exc if isinstance(exc, GrmpError) else GrmpError(f"{self.name} capture failed: {exc!r}")
        finally:
            with self._ready:
                self._done = True
                self._ready.notify_all()

    def _capture_loop(self, cap) -> None:
        index = 0
        # A source that could not be opened yet (retry_first_open) starts out lost, already reported.
        lost_at: Optional[float] = None if cap is not None else time.perf_counter()
        gap_s: Optional[float] = None  # an outage not yet reported on a frame
        delay = self.backoff_min
        try:
            while not self._closed.is_set():
                keep = index % self.stride == 0
                got = grab(cap, keep) if cap is not None else None
                if got is None or not got.ok:
                    if lost_at is None:
                        lost_at = got.t_start if got is not None else time.perf_counter()
                        self._emit("lost", f"{self.name} stopped delivering frames; reopening with backoff")
                    if cap is not None:
                        cap.release()
                        cap = None
                    if self._closed.wait(delay):
                        return
                    self.stats.reopen_attempts += 1
                    cap = self._try_open()
                    delay = min(delay * 2, self.backoff_max)
                    continue
                if lost_at is not None:
                    gap_s = (gap_s or 0.0) + self._back(lost_at, cap)
                    lost_at, delay = None, self.backoff_min
                # The outage rides on the first frame kept and decoded after it, not on a strided one.
                if keep and (frame := self._frame_of(got, index, self.name, gap_s=gap_s)) is not None:
                    self._push(frame)
                    gap_s = None
                index += 1
        finally:
            if cap is not None:
                cap.release()

    def _back(self, lost_at: float, cap) -> float:
        """Count and report the outage that ends now; its length in seconds."""
        gap_s = time.perf_counter() - lost_at
        self.stats.gaps += 1
        self.stats.gap_seconds += gap_s
        self._emit("back", f"{self.name} is back after {gap_s:.2f} s", gap_s=gap_s)
        self.fps = self.fps or cap.get(opencv().CAP_PROP_FPS) or None
        return gap_s

    def _push(self, frame: Frame) -> None:
        """Queue ``frame``, dropping the oldest when full; a dropped frame's ``gap_s`` moves to the
        next frame in line, so a slow consumer still learns of the outage."""
        with self._ready:
            if len(self._queue) == self._queue.maxlen:
                self.stats.drops += 1
                dropped = self._queue.popleft()
                if dropped.gap_s is not None:
                    heir = self._queue[0] if self._queue else frame
                    heir.gap_s = dropped.gap_s + (heir.gap_s or 0.0)
            self._queue.append(frame)
            self._ready.notify()


@contextlib.contextmanager
def _opencv_errors_only():
    """Silence OpenCV's own warnings (one per failed open) while a camera is (re)opened: our one-line
    error or the lost/back events say it better, and a reopen loop would print them every attempt."""
    log = getattr(getattr(opencv(), "utils", None), "logging", None)
    if log is None:
        yield
        return
    previous = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(previous)


def opencv_has_gstreamer() -> bool:
    """Whether the installed OpenCV was built with the GStreamer video backend."""
    info = opencv().getBuildInformation()
    return bool(re.search(r"^\s*GStreamer:\s*YES", info, re.MULTILINE))


def csi_pipeline(sensor: int, width: int = 1920, height: int = 1080, fps: int = 30, flip: int = 0) -> str:
    """The GStreamer pipeline that reads Jetson CSI camera ``sensor`` into OpenCV as BGR.

    ``nvarguscamerasrc`` delivers NV12 in NVMM memory, ``nvvidconv`` flips and copies it to system
    memory as BGRx, ``videoconvert`` drops the padding byte; ``appsink drop=true max-buffers=1``
    keeps GStreamer from queueing stale frames in front of our own latest-frame queue.
    """
    if not 0 <= flip <= 7:
        raise GrmpError(f"--csi-flip must be 0..7 (nvvidconv flip-method), got {flip}")
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! "
        f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, "
        f"framerate=(fraction){fps}/1, format=(string)NV12 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw, width=(int){width}, height=(int){height}, "
        f"format=(string)BGRx ! videoconvert ! video/x-raw, format=(string)BGR ! "
        f"appsink drop=true max-buffers=1"
    )


def _capture_factory(target, api_name: str, timeouts: bool = False) -> Callable[[], object]:
    """A callable opening ``cv2.VideoCapture(target, cv2.<api_name>)`` (looked up at call time);
    ``timeouts`` bounds opening and each read by :data:`STREAM_TIMEOUT_MS` where OpenCV supports it."""
    def open_capture():
        cv2 = opencv()
        props = ("CAP_PROP_OPEN_TIMEOUT_MSEC", "CAP_PROP_READ_TIMEOUT_MSEC") if timeouts else ()
        params = [p for name in props if hasattr(cv2, name) for p in (getattr(cv2, name), STREAM_TIMEOUT_MS)]
        if params:
            return cv2.VideoCapture(target, getattr(cv2, api_name), params)
        return cv2.VideoCapture(target, getattr(cv2, api_name))
    return open_capture


def _csi_source(text: str, stride: int, queue_size: int, width: int, height: int, fps: int, flip: int,
                retry: bool) -> LiveSource:
    sensor = text[len("csi://"):]
    if not sensor.isdigit():
        raise GrmpError(f"CSI source must be csi://N with a sensor number, got {text!r}")
    if not opencv_has_gstreamer():
        raise GrmpError(
            "csi:// needs OpenCV with GStreamer, and this cv2 was built without it (pip's opencv wheels are); "
            "on a Jetson use JetPack's OpenCV: pip uninstall opencv-python opencv-python-headless"
        )
    pipeline = csi_pipeline(int(sensor), width, height, fps, flip)
    return LiveSource(text, _capture_factory(pipeline, "CAP_GSTREAMER"),
                      hint="is the camera connected and nvargus-daemon running? (gst-launch-1.0 nvarguscamerasrc ! fakesink)",
                      stride=stride, queue_size=queue_size, retry_first_open=retry)


def _v4l2_source(device: str, stride: int, queue_size: int, retry: bool = False) -> LiveSource:
    match = re.fullmatch(r"(?:/dev/video)?(\d+)", device)
    # OpenCV's V4L2 backend takes the camera number; other device paths (udev symlinks) go as paths.
    target = int(match.group(1)) if match else device
    name = f"v4l2://{device if device.startswith('/') else '/dev/video' + device}"
    return LiveSource(name, _capture_factory(target, "CAP_V4L2"),
                      hint="is a camera connected, and readable by this user? (ls -l /dev/video*; v4l2-ctl --list-devices)",
                      stride=stride, queue_size=queue_size, retry_first_open=retry)


def _path_source(text: str, stride: int, realtime: bool = False, loop: bool = False) -> FrameSource:
    if any(ch in text for ch in "*?["):
        paths = sorted(Path(p) for p in glob.glob(text, recursive=True)
                       if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise GrmpError(f"no image files match {text!r}")
        return ImageFilesSource(paths, f"glob {text}", stride)
    path = user_path(text)
    if path.is_dir():
        paths = list_images(path)
        if not paths:
            raise GrmpError(f"no image files in folder {path} (looked for {', '.join(IMAGE_SUFFIXES)})")
        return ImageFilesSource(paths, f"folder {path}", stride)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFilesSource([path], f"image {path}", stride)
        return VideoFileSource(path, stride, realtime, loop)
    raise GrmpError(f"source not found: {text!r} (a source is one of: {GRAMMAR})")


def parse_source(
    text: Optional[str],
    camera: Optional[int] = None,
    *,
    stride: int = 1,
    stdin_size: Optional[str] = None,
    queue_size: int = 2,
    csi_width: int = 1920,
    csi_height: int = 1080,
    csi_fps: int = 30,
    csi_flip: int = 0,
    retry_first_open: bool = False,
    realtime: bool = False,
    loop: bool = False,
) -> FrameSource:
    """Build the :class:`FrameSource` a ``--source`` text (or ``--camera N``) names; see the module doc.

    Nothing is opened here (cameras open when iteration starts), but paths, sizes and the OpenCV
    build are checked so that a wrong source fails before a model is loaded. ``retry_first_open``:
    a camera or stream that cannot be opened yet is retried with backoff instead of failing.
    ``realtime`` and ``loop`` pace and replay video files (see :class:`VideoFileSource`); other
    sources, live already or stills, ignore them.
    """
    if text is not None and camera is not None:
        raise GrmpError("pass either --source or --camera, not both")
    if camera is not None:
        if camera < 0:
            raise GrmpError(f"--camera must be a camera number >= 0, got {camera}")
        return _v4l2_source(str(camera), stride, queue_size, retry_first_open)
    if not text:
        raise GrmpError(f"no source: pass --camera N or --source S, where S is {GRAMMAR}")
    if stdin_size is not None and text != "-":
        raise GrmpError("--stdin-size only applies to --source - (raw frames on stdin)")
    if text == "-":
        if stdin_size is None:
            raise GrmpError("--source - reads raw RGB24 frames and needs their size: --stdin-size WIDTHxHEIGHT")
        width, height = parse_size(stdin_size)
        return StdinRawSource(width, height, stride)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme == "csi":
        return _csi_source(text, stride, queue_size, csi_width, csi_height, csi_fps, csi_flip, retry_first_open)
    if scheme == "v4l2":
        return _v4l2_source(text[len("v4l2://"):], stride, queue_size, retry_first_open)
    if scheme in ("rtsp", "rtsps"):
        # The name goes to logs, JSON lines and metric labels: never the stream's password.
        return LiveSource(re.sub(r"(?<=://)[^/@]*@", "", text, count=1), _capture_factory(text, "CAP_FFMPEG", timeouts=True),
                          hint="check the URL, credentials and that the stream is reachable from here",
                          stride=stride, queue_size=queue_size, retry_first_open=retry_first_open)
    if scheme == "file":
        return _path_source(text[len("file://"):], stride, realtime, loop)
    if scheme:
        raise GrmpError(f"unknown source scheme {scheme + '://'!r}; a source is one of: {GRAMMAR}")
    return _path_source(text, stride, realtime, loop)


def read_sources_file(path) -> list[str]:
    """The sources listed in a text file, one ``--source`` text per line; blank lines and lines
    starting with ``#`` are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GrmpError(f"cannot read sources file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    sources = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not sources:
        raise GrmpError(f"sources file {path} lists no source (one per line)")
    return sources
