"""Fixtures for the edge runtime tests: synthetic videos and images, a fake engine, a tiny real bundle."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import tiny_bundle

from grmp_edge.spec import PreprocessSpec

CROP = 32
REPO = Path(__file__).resolve().parents[2]


class FakeBackend:
    """A stand-in engine: the score of a crop is its mean brightness / 255 (so tests can predict it).

    ``delay`` seconds of sleep per batch mimic an engine that releases the GIL while it works.
    """

    name = "fake"
    precision = "fp32"

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.batches: list[tuple[int, ...]] = []
        self.closed = False

    def infer(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.uint8 and batch.ndim == 4 and batch.shape[3] == 3
        self.batches.append(batch.shape)
        if self.delay:
            time.sleep(self.delay)
        return batch.reshape(len(batch), -1).mean(axis=1).astype(np.float32) / 255.0

    def describe(self) -> str:
        return "fake mean-brightness engine"

    def close(self) -> None:
        self.closed = True


def frame_bgr(i: int, width: int = 96, height: int = 72) -> np.ndarray:
    """A deterministic BGR frame whose brightness changes with ``i`` (a gradient plus a level)."""
    x = np.linspace(0, 60, width, dtype=np.float32)[None, :, None]
    level = 40 + (i * 37) % 150
    img = np.clip(level + x + np.zeros((height, width, 3), np.float32), 0, 255).astype(np.uint8)
    img[..., 0] //= 2  # blue lower than red, so a BGR/RGB swap is visible
    return img


def write_video(path: Path, n: int, width: int = 96, height: int = 72, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for i in range(n):
        writer.write(frame_bgr(i, width, height))
    writer.release()
    return path


@pytest.fixture
def spec() -> PreprocessSpec:
    return PreprocessSpec.clip(CROP)


@pytest.fixture
def video(tmp_path) -> Path:
    """A 24-frame 96x72 MJPG .avi at 10 fps."""
    return write_video(tmp_path / "clip.avi", 24)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Five PNG frames and one corrupt JPEG (``f02.jpg``), in name order."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"f{i if i < 2 else i + 1:02d}.png"), frame_bgr(i))
    (folder / "f02.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return folder


def make_bundle(folder: Path, size: int = CROP, crops: int = 1) -> Path:
    """A real bundle folder (the tiny brightness graph) as fp32 and as the int8 CPU file, with hashes,
    whose crop plan is ``crops``."""
    files = [f for f in tiny_bundle.STANDARD_FILES if f[0] in ("model_fp32.onnx", "model_int8_cpu.onnx")]
    return tiny_bundle.make_bundle(folder, files=files, size=size, crops=crops)


@pytest.fixture
def bundle(tmp_path) -> Path:
    return make_bundle(tmp_path / "bundle")


class Cli:
    """Runs ``grmp-edge`` in a subprocess with this interpreter, runs/ in the test's tmp folder."""

    def __init__(self, runs: Path):
        self.env = dict(os.environ, GRMP_EDGE_RUNS=str(runs), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

    @staticmethod
    def cmd(*args: str) -> list[str]:
        return [sys.executable, "-m", "grmp_edge.cli", *args]

    def run(self, args: list[str], input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*args), input=input, capture_output=True, env=self.env, cwd=str(REPO),
                              timeout=timeout)

    def python(self, code: str, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        """``python -c code *args`` in the same environment."""
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, env=self.env,
                              cwd=str(REPO), timeout=timeout)

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(*args), env=self.env, cwd=str(REPO), **kwargs)


@pytest.fixture
def cli(tmp_runs) -> Cli:
    return Cli(tmp_runs)


# Helpers handed to tests as fixtures: under --import-mode=importlib test modules cannot import conftest.

@pytest.fixture
def fake_backend():
    """The :class:`FakeBackend` class (tests subclass it to break it)."""
    return FakeBackend


@pytest.fixture
def make_frame():
    """:func:`frame_bgr`."""
    return frame_bgr


@pytest.fixture
def make_video():
    """:func:`write_video`."""
    return write_video


@pytest.fixture
def bundle_factory():
    """:func:`make_bundle`."""
    return make_bundle
