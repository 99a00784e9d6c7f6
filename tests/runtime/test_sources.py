"""The --source grammar and every kind of FrameSource (cameras faked by patching cv2.VideoCapture)."""
from __future__ import annotations

import io
import threading
import time

import cv2
import numpy as np
import pytest

from grmp_edge.errors import GrmpError
from grmp_edge.runtime import sources
from grmp_edge.runtime.sources import (
    ImageFilesSource,
    StdinRawSource,
    VideoFileSource,
    csi_pipeline,
    parse_size,
    parse_source,
    read_sources_file,
)


# -- files -----------------------------------------------------------------------------------------

def test_video_delivers_every_frame_in_order_as_rgb(video, make_frame):
    src = parse_source(str(video))
    assert isinstance(src, VideoFileSource) and not src.live
    frames = list(src)
    assert [f.index for f in frames] == list(range(24))
    assert src.fps == pytest.approx(10.0)
    first = frames[0].rgb
    assert first.shape == (72, 96, 3) and first.dtype == np.uint8 and first.flags.c_contiguous
    # The fixture's blue channel is half its red one: converted once, red stays first.
    assert first[..., 2].mean() < 0.7 * first[..., 0].mean()
    expected = cv2.cvtColor(make_frame(0), cv2.COLOR_BGR2RGB).astype(int)
    assert np.abs(first.astype(int) - expected).mean() < 4  # MJPG is lossy
    assert all(f.path is None and f.capture_ms >= 0 for f in frames)
    assert [f.media_s for f in frames] == pytest.approx([i / 10 for i in range(24)])  # the fixture is 10 fps
    assert src.stats.frames == 24 and src.stats.corrupt == 0


def test_undecodable_video_frames_are_counted_but_the_end_of_the_file_is_not(monkeypatch, video):
    class Decoder:  # frames 3 and 4 fail to decode; the file ends after frame 9
        def __init__(self, *args):
            self.i = -1

        def isOpened(self):  # noqa: N802 (OpenCV's name)
            return True

        def get(self, prop):
            return 25.0

        def grab(self):
            self.i += 1
            return self.i < 10 and self.i not in (3, 4)

        def retrieve(self):
            return True, np.full((8, 8, 3), self.i, np.uint8)

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoCapture", Decoder)
    src = VideoFileSource(video)
    events = []
    src.on_event = events.append
    frames = list(src)
    assert [f.index for f in frames] == [0, 1, 2, 5, 6, 7, 8, 9]
    assert src.stats.corrupt == 2 and [e.kind for e in events] == ["corrupt"]


def test_stride_keeps_every_kth_frame_with_its_original_index(video):
    frames = list(parse_source(f"file://{video}", stride=5))
    assert [f.index for f in frames] == [0, 5, 10, 15, 20]
    assert [f.media_s for f in frames] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])


def test_an_unreadable_video_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(GrmpError, match="cannot open video"):
        list(parse_source(str(bad)))


def test_folder_skips_and_counts_a_corrupt_image(image_folder):
    src = parse_source(str(image_folder))
    events = []
    src.on_event = events.append
    frames = list(src)
    names = [f.path.rsplit("/", 1)[-1] for f in frames]
    assert names == ["f00.png", "f01.png", "f03.png", "f04.png", "f05.png"]
    assert [f.index for f in frames] == [0, 1, 3, 4, 5]  # the corrupt file keeps its slot
    assert src.stats.corrupt == 1 and src.stats.frames == 5
    assert [e.kind for e in events] == ["corrupt"] and "f02.jpg" in events[0].detail
    assert frames[0].rgb[..., 2].mean() < 0.7 * frames[0].rgb[..., 0].mean()


def test_glob_is_sorted_and_only_matches_images(image_folder):
    (image_folder / "notes.txt").write_text("x")
    src = parse_source(str(image_folder / "*.png"))
    assert isinstance(src, ImageFilesSource)
    assert [p.name for p in src.paths] == ["f00.png", "f01.png", "f03.png", "f04.png", "f05.png"]
    assert len(list(src)) == 5


def test_single_image_is_a_one_frame_source(image_folder):
    frames = list(parse_source(str(image_folder / "f01.png")))
    assert len(frames) == 1 and frames[0].path.endswith("f01.png")


@pytest.mark.parametrize("text, message", [
    ("no/such/file.mp4", "source not found"),
    ("nothing-matches-*.jpg", "no image files match"),
    ("ftp://host/video", "unknown source scheme"),
    ("csi://front", "csi://N"),
])
def test_bad_sources_are_one_line_user_errors(text, message):
    with pytest.raises(GrmpError, match=message) as info:
        parse_source(text)
    assert "\n" not in str(info.value)


def test_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(GrmpError, match="no image files in folder"):
        parse_source(str(tmp_path))


def test_source_and_camera_options_are_checked():
    with pytest.raises(GrmpError, match="not both"):
        parse_source("x.mp4", camera=0)
    with pytest.raises(GrmpError, match="no source"):
        parse_source(None)
    with pytest.raises(GrmpError, match="--stdin-size"):
        parse_source("-")
    with pytest.raises(GrmpError, match="only applies to --source -"):
        parse_source("x.mp4", stdin_size="4x4")
    with pytest.raises(GrmpError, match="stride"):
        parse_source("-", stdin_size="4x4", stride=0)


def test_parse_size():
    assert parse_size("1280x720") == (1280, 720)
    assert parse_size(" 64X48 ") == (64, 48)
    for bad in ("1280", "0x10", "axb", ""):
        with pytest.raises(GrmpError, match="WIDTHxHEIGHT"):
            parse_size(bad)


# -- stdin -----------------------------------------------------------------------------------------

def test_stdin_raw_rgb24_frames_and_a_truncated_tail():
    w, h = 8, 6
    frames_in = [np.full((h, w, 3), (10 * i, 20, 30), np.uint8) for i in range(4)]
    data = b"".join(f.tobytes() for f in frames_in) + b"\x00" * 10  # a partial fifth frame
    src = StdinRawSource(w, h, stream=io.BytesIO(data))
    events = []
    src.on_event = events.append
    frames = list(src)
    assert len(frames) == 4
    for got, want in zip(frames, frames_in):
        np.testing.assert_array_equal(got.rgb, want)  # raw RGB: no colour conversion
    assert src.stats.corrupt == 1 and "ended inside a frame" in events[0].detail


def test_stdin_stride():
    w, h = 4, 4
    data = b"".join(np.full((h, w, 3), i, np.uint8).tobytes() for i in range(6))
    frames = list(StdinRawSource(w, h, stride=2, stream=io.BytesIO(data)))
    assert [f.index for f in frames] == [0, 2, 4] and [int(f.rgb[0, 0, 0]) for f in frames] == [0, 2, 4]


# -- cameras (cv2.VideoCapture faked) --------------------------------------------------------------

class FakeCamera:
    """Stands in for cv2.VideoCapture: fails its first ``down_first`` opens, then delivers ``first``
    frames, then vanishes for ``gone_opens`` open attempts, then comes back for good.
    ``corrupt_every`` makes every k-th frame undecodable."""

    def __init__(self, first: int = 5, gone_opens: int = 3, delay: float = 0.002, corrupt_every: int = 0,
                 never_opens: bool = False, stall_after: int | None = None, down_first: int = 0):
        self.first, self.gone_opens, self.delay = first, gone_opens, delay
        self.down_first = down_first
        self.corrupt_every = corrupt_every
        self.never_opens = never_opens
        self.stall_after = stall_after
        self.opens: list[tuple] = []
        self.grabs = 0
        self.stalled, self.unstall = threading.Event(), threading.Event()

    def __call__(self, *args):
        self.opens.append(args)
        return _FakeCapture(self, len(self.opens))


class _FakeCapture:
    def __init__(self, cam: FakeCamera, n: int):
        self.cam, self.n = cam, n - cam.down_first  # opens while the camera is still down do not count
        self.opened = not cam.never_opens and (self.n == 1 or self.n > 1 + cam.gone_opens)
        self.reads = 0

    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return self.opened

    def grab(self):
        if not self.opened or (self.n == 1 and self.reads >= self.cam.first):
            return False
        self.reads += 1
        self.cam.grabs += 1
        if self.cam.stall_after is not None and self.cam.grabs > self.cam.stall_after:
            self.cam.stalled.set()
            self.cam.unstall.wait(5.0)  # a read that hangs, as a dead stream's does until its timeout
        else:
            time.sleep(self.cam.delay)
        return True

    def retrieve(self):
        if self.cam.corrupt_every and self.cam.grabs % self.cam.corrupt_every == 0:
            return True, None
        return True, np.full((72, 96, 3), self.cam.grabs % 256, np.uint8)

    def get(self, prop):
        return 30.0

    def release(self):
        self.opened = False


def _take(src, n: int, until=None, timeout: float = 10.0):
    out = []
    deadline = time.monotonic() + timeout
    for frame in src:
        out.append(frame)
        if (until is None and len(out) >= n) or (until is not None and until(out)) or time.monotonic() > deadline:
            break
    src.close()
    return out


def test_camera_shorthand_opens_v4l2_by_number(monkeypatch):
    cam = FakeCamera(first=10**6)
    monkeypatch.setattr(cv2, "VideoCapture", cam)
    src = parse_source(None, camera=2)
    assert src.live and src.name == "v4l2:///dev/video2"
    frames = _take(src, 3)
    assert len(frames) == 3 and cam.opens[0] == (2, cv2.CAP_V4L2)
    assert parse_source("v4l2:///dev/video2").name == "v4l2:///dev/video2"


def test_missing_camera_fails_with_a_hint(monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera(never_opens=True))
    with pytest.raises(GrmpError, match=r"cannot open v4l2:///dev/video7: is a camera connected"):
        list(parse_source(None, camera=7))


def test_camera_that_disappears_is_reopened_with_backoff_and_the_gap_reported(monkeypatch):
    cam = FakeCamera(first=5, gone_opens=3)
    monkeypatch.setattr(cv2, "VideoCapture", cam)
    src = parse_source(None, camera=0)
    src.backoff_min, src.backoff_max = 0.02, 0.08
    events = []
    src.on_event = events.append
    frames = _take(src, 0, until=lambda fs: sum(f.gap_s is not None for f in fs) and len(fs) >= 8)
    after = [f for f in frames if f.gap_s is not None]
    assert len(after) == 1
    # Four reopen attempts (three failures, then success) waited 0.02 + 0.04 + 0.08 + 0.08 s.
    assert src.stats.reopen_attempts == 4 and src.stats.gaps == 1
    assert after[0].gap_s >= 0.2 and src.stats.gap_seconds == pytest.approx(after[0].gap_s)
    assert [e.kind for e in events] == ["lost", "back"] and events[1].gap_s == pytest.approx(after[0].gap_s)
    assert len(cam.opens) == 5


def test_the_gap_reaches_a_slow_consumer_of_a_strided_camera(monkeypatch):
    # The first frame after the outage (index 5) is skipped by the stride, and the frames after it
    # are dropped from the one-frame queue while the consumer sleeps: the gap must still arrive.
    cam = FakeCamera(first=5, gone_opens=1, delay=0.001)
    monkeypatch.setattr(cv2, "VideoCapture", cam)
    src = parse_source(None, camera=0, stride=2, queue_size=1)
    src.backoff_min, src.backoff_max = 0.01, 0.02
    events = []
    src.on_event = events.append
    frames = []
    for frame in src:
        frames.append(frame)
        if len(frames) == 1:
            time.sleep(0.5)  # the camera is lost and back, and many frames come and go, meanwhile
        if len(frames) == 4 or any(f.gap_s is not None for f in frames):
            break
    src.close()
    assert [e.kind for e in events] == ["lost", "back"] and src.stats.drops > 0
    back = [f for f in frames if f.gap_s is not None]
    assert len(back) == 1 and back[0].gap_s == pytest.approx(events[1].gap_s)
    assert back[0].index > 5 and back[0].index % 2 == 0


def test_a_path_under_an_unknown_users_home_is_a_one_line_error():
    with pytest.raises(GrmpError, match="no such user"):
        parse_source("~grmp_no_such_user/clip.mp4")


def test_live_source_keeps_the_latest_frames_and_counts_drops(monkeypatch):
    cam = FakeCamera(first=10**6, delay=0.001)
    monkeypatch.setattr(cv2, "VideoCapture", cam)
    src = parse_source("rtsp://camera.invalid/stream", queue_size=2)
    got = []
    for frame in src:
        got.append(frame)
        time.sleep(0.03)  # a slow consumer
        if len(got) == 6:
            break
    src.close()
    indices = [f.index for f in got]
    assert indices == sorted(indices) and indices[-1] - indices[0] > len(got)  # frames were skipped
    assert src.stats.drops > 0
    # Opening and every read are bounded, so a stream that goes silent is noticed and reopened.
    timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, sources.STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                sources.STREAM_TIMEOUT_MS]
    assert cam.opens[0] == ("rtsp://camera.invalid/stream", cv2.CAP_FFMPEG, timeouts)


def test_live_corrupt_frames_are_skipped_and_counted(monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera(first=10**6, corrupt_every=3))
    src = parse_source(None, camera=0, queue_size=64)
    frames = _take(src, 6)
    assert len(frames) == 6 and src.stats.corrupt >= 2
    assert all(f.rgb.shape == (72, 96, 3) for f in frames)


@pytest.mark.timeout(60)  # a regression would iterate the endless camera forever: fail instead
def test_close_from_another_thread_ends_iteration(monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera(first=10**6))
    src = parse_source(None, camera=0)
    n = 0
    for _ in src:
        n += 1
        if n == 3:
            closer = threading.Thread(target=src.close)
            closer.start()
            closer.join()
    assert n == 3  # the next frame after close() ends the iteration, however many the camera queued


@pytest.mark.timeout(60)
def test_close_does_not_wait_for_a_stalled_capture(monkeypatch):
    cam = FakeCamera(first=10**6, stall_after=2)
    monkeypatch.setattr(cv2, "VideoCapture", cam)
    # The capture thread is waited for this long once the source is closed, then left behind.
    monkeypatch.setattr(sources, "CAPTURE_JOIN_TIMEOUT_S", 0.05)
    src = parse_source("rtsp://camera.invalid/stream")
    n = 0
    try:
        for _ in src:
            n += 1
            if n == 2:
                assert cam.stalled.wait(30)  # the third read hangs
                src.close()
        # Iteration ended while the capture thread is still inside the hung read(): it was abandoned.
        assert n == 2 and src._thread.is_alive()
    finally:
        cam.unstall.set()
    src._thread.join(10)
    assert not src._thread.is_alive()


def test_a_stream_that_is_down_at_start_is_retried_when_asked_and_its_password_stays_out_of_the_name(monkeypatch):
    cam = FakeCamera(first=10**6, down_first=3)
    monkeypatch.setattr(cv2, "VideoCapture", cam)
    url = "rtsp://admin:s3cret@camera.invalid/stream"
    with pytest.raises(GrmpError, match="cannot open rtsp://camera.invalid/stream"):
        list(parse_source(url))  # by default a source that cannot open is an error
    cam.opens.clear()
    src = parse_source(url, retry_first_open=True)
    assert src.name == "rtsp://camera.invalid/stream" and "s3cret" not in repr(src)
    src.backoff_min, src.backoff_max = 0.01, 0.02
    events = []
    src.on_event = events.append
    frames = _take(src, 3)
    assert len(frames) == 3 and frames[0].gap_s is not None and frames[1].gap_s is None
    assert [e.kind for e in events] == ["lost", "back"] and "retrying" in events[0].detail
    assert "s3cret" not in events[0].detail + events[1].detail
    assert cam.opens[-1][:2] == (url, cv2.CAP_FFMPEG)  # the capture itself still gets the credentials
    assert src.fps == 30.0 and src.stats.gaps == 1


def test_sources_file_lists_one_source_per_line(tmp_path):
    listed = tmp_path / "cameras.txt"
    listed.write_text("# site A\nrtsp://10.0.0.1/a\n\n  clips/v1.mp4  \n# off: rtsp://10.0.0.9/x\n")
    assert read_sources_file(listed) == ["rtsp://10.0.0.1/a", "clips/v1.mp4"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(GrmpError, match="lists no source"):
        read_sources_file(tmp_path / "empty.txt")
    with pytest.raises(GrmpError, match="cannot read sources file"):
        read_sources_file(tmp_path / "missing.txt")


# -- Jetson CSI ------------------------------------------------------------------------------------

def test_csi_pipeline_string():
    text = csi_pipeline(1, 1280, 720, 60, 2)
    assert text.startswith("nvarguscamerasrc sensor-id=1 ! ")
    assert "width=(int)1280, height=(int)720" in text and "framerate=(fraction)60/1" in text
    assert "nvvidconv flip-method=2" in text and "format=(string)BGR" in text
    assert text.endswith("appsink drop=true max-buffers=1")
    with pytest.raises(GrmpError, match="flip"):
        csi_pipeline(0, flip=9)


def test_csi_without_gstreamer_says_why_and_how_to_fix(monkeypatch):
    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: False)
    with pytest.raises(GrmpError) as info:
        parse_source("csi://0")
    message = str(info.value)
    assert "GStreamer" in message and "pip uninstall opencv-python" in message and "\n" not in message


def test_gstreamer_detection_reads_the_build_information(monkeypatch):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  Video I/O:\n    GStreamer:    YES (1.20.3)\n")
    assert sources.opencv_has_gstreamer()
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  Video I/O:\n    GStreamer:    NO\n")
    assert not sources.opencv_has_gstreamer()


def test_csi_opens_the_gstreamer_pipeline(monkeypatch):
    cam = FakeCamera(first=10**6)
    monkeypatch.setattr(cv2, "VideoCapture", cam)
    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: True)
    src = parse_source("csi://0", csi_width=640, csi_height=480, csi_fps=15, csi_flip=0)
    assert src.live and len(_take(src, 2)) == 2
    target, api = cam.opens[0]
    assert api == cv2.CAP_GSTREAMER and target == csi_pipeline(0, 640, 480, 15, 0)



def test_one_table_of_source_forms_writes_the_errors_and_the_help():
    from grmp_edge.cli.run import SOURCE_HELP

    assert all(form.syntax in sources.GRAMMAR and form.syntax in SOURCE_HELP for form in sources.SOURCE_FORMS)
    with pytest.raises(GrmpError) as info:
        parse_source("ftp://camera.invalid/x")
    assert str(info.value) == f"unknown source scheme 'ftp://'; a source is one of: {sources.GRAMMAR}"
