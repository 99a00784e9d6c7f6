"""Video files paced like a camera (``--realtime``) and replayed (``--loop``), so a live page keeps moving."""
from __future__ import annotations

import itertools
import time
import types

import pytest

from grmp_edge.runtime import sources
from grmp_edge.runtime.sources import ImageFilesSource, VideoFileSource, parse_source


def test_loop_replays_the_file_with_frame_numbers_still_counting(video):
    source = VideoFileSource(video, loop=True)
    frames = list(itertools.islice(source.frames(), 60))  # the file has 24 frames at 10 fps
    source.close()
    assert [f.index for f in frames] == list(range(60))
    assert [f.media_s for f in frames] == pytest.approx([(i % 24) / 10 for i in range(60)])
    assert source.stats.frames == 60 and source.stats.corrupt == 0


def test_loop_keeps_the_stride_across_the_end_of_the_file(video):
    source = VideoFileSource(video, stride=5, loop=True)
    frames = list(itertools.islice(source.frames(), 10))
    source.close()
    assert [f.index for f in frames] == list(range(0, 50, 5))


def test_without_loop_the_file_ends(video):
    assert len(list(VideoFileSource(video, realtime=False).frames())) == 24


class _Clock:
    """A clock that moves only when the source waits or the test says so: pacing without real time."""

    def __init__(self):
        self.now = 1000.0
        self.waits: list[float] = []

    def perf_counter(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:  # stands in for the source's closed-event wait
        self.waits.append(round(seconds, 6))
        self.now += seconds
        return False


def test_realtime_waits_one_frame_period_and_never_races_to_catch_up(video, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(sources, "time", types.SimpleNamespace(perf_counter=clock.perf_counter, time=time.time))
    source = VideoFileSource(video, realtime=True)
    monkeypatch.setattr(source, "_closed", types.SimpleNamespace(wait=clock.wait, is_set=lambda: False))
    frames = source.frames()
    for _ in range(4):
        next(frames)
    clock.now += 1.0  # scoring stalled for a second, ten frame periods of this 10 fps file
    for _ in range(3):
        next(frames)
    frames.close()
    # The first frame at once, then one per 0.1 s; after the stall the next at once and then the pace
    # again, not ten frames back to back.
    assert clock.waits == [0.0, 0.1, 0.1, 0.1, 0.0, 0.1, 0.1]


def test_parse_source_paces_and_loops_video_files_only(video, image_folder):
    paced = parse_source(str(video), realtime=True, loop=True)
    assert isinstance(paced, VideoFileSource) and paced.realtime and paced.loop
    assert not parse_source(f"file://{video}").loop
    # Image folders are stills and cameras are live already: they take no pacing and are not refused.
    assert isinstance(parse_source(str(image_folder), realtime=True, loop=True), ImageFilesSource)
