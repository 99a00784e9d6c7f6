"""The one resize + crop implementation: geometry, antialiasing, native crops, bad frames."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from grmp_edge.errors import GrmpError
from grmp_edge.preprocess import (
    center_crop,
    crop_grid,
    native_crops,
    normalize,
    preprocess,
    resize,
    resized_shape,
)
from grmp_edge.spec import PreprocessSpec


def test_resize_policies():
    clip, release = PreprocessSpec.clip(224), PreprocessSpec.release(224)
    assert resized_shape(1080, 1920, clip) == (224, 398)
    assert resized_shape(1920, 1080, clip) == (398, 224)
    assert resized_shape(1080, 1920, release) == (244, 244)
    frame = np.zeros((1080, 1920, 3), np.uint8)
    assert preprocess(frame, clip).shape == (224, 224, 3)
    assert preprocess(frame, release).shape == (224, 224, 3)


def test_centre_crop_takes_the_middle():
    img = np.zeros((10, 20, 3), np.uint8)
    img[3:7, 8:12] = 255
    out = center_crop(img, 4)
    assert out.shape == (4, 4, 3) and out.min() == 255


def test_two_step_area_shrink_matches_single_area_resize():
    rng = np.random.default_rng(0)
    # Smooth content (a blurred random field), as photos are; white noise would alias either way.
    field = cv2.GaussianBlur(rng.random((1080, 1920, 3)).astype(np.float32), (0, 0), 6)
    frame = (255 * (field - field.min()) / np.ptp(field)).astype(np.uint8)
    spec = PreprocessSpec.clip(224)
    ours = resize(frame, spec).astype(np.int16)
    reference = cv2.resize(frame, (398, 224), interpolation=cv2.INTER_AREA).astype(np.int16)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).mean() < 0.5
    assert np.abs(ours - reference).max() <= 3


def test_native_crops_are_unscaled_tiles():
    frame = np.arange(300 * 500 * 3, dtype=np.uint32).reshape(300, 500, 3).astype(np.uint8)
    spec = PreprocessSpec.clip(96)
    crops = native_crops(frame, spec, 4)
    assert crops.shape == (4, 96, 96, 3)
    # Every crop is a verbatim window of the frame (no resampling).
    for crop in crops:
        hits = [(y, x) for y in range(0, 205) for x in range(0, 405)
                if frame[y, x, 0] == crop[0, 0, 0] and np.array_equal(frame[y:y + 96, x:x + 96], crop)]
        assert hits
    small = np.zeros((50, 60, 3), np.uint8)
    assert native_crops(small, spec, 3).shape == (3, 96, 96, 3)


def _covered(frame_hw: tuple[int, int], n: int, size: int = 96) -> float:
    """Fraction of a frame's pixels inside at least one of its ``n`` native crops."""
    h, w = frame_hw
    index = np.arange(h * w, dtype=np.int64).reshape(h, w)
    rgb = np.stack([index % 256, index // 256 % 256, index // 65536], axis=-1).astype(np.uint8)
    seen = np.zeros((h, w), bool)
    for crop in native_crops(rgb, PreprocessSpec.clip(size), n):
        first = crop[0, 0].astype(np.int64)
        y, x = divmod(int(first[0] + 256 * first[1] + 65536 * first[2]), w)
        seen[y:y + size, x:x + size] = True
    return seen.mean()


@pytest.mark.parametrize("shape", [(256, 256), (256, 341), (256, 384), (256, 455), (455, 256)])
def test_a_crop_count_equal_to_the_covering_grid_or_more_tiles_the_whole_frame(shape):
    # 256 px high: 3 rows of 96 px; 455 px wide (16:9): 5 columns. 15 crops cover every shape here.
    assert _covered(shape, 15) == 1.0
    rows, cols = crop_grid(*shape, 96, 15)
    assert rows * cols == 15 and (rows >= 3 and cols >= 3)
    assert crop_grid(256, 455, 96, 15) == (3, 5) and crop_grid(455, 256, 96, 15) == (5, 3)


def test_fewer_crops_than_the_covering_grid_follow_the_frames_aspect():
    assert crop_grid(256, 384, 96, 4) == (2, 3)  # 6 cells, the 4 nearest the centre are kept
    assert 0.3 < _covered((256, 384), 4) < 0.5
    assert crop_grid(256, 256, 96, 9) == (3, 3) and _covered((256, 256), 9) == 1.0


def test_normalize_matches_the_formula():
    batch = np.full((2, 4, 4, 3), 128, np.uint8)
    spec = PreprocessSpec.clip(4)
    x = normalize(batch, spec)
    assert x.shape == (2, 3, 4, 4) and x.dtype == np.float32
    expected = (128 / 255 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(x[0, :, 0, 0], expected, rtol=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8),
                                 np.zeros((10, 10, 3), np.float32), "frame"])
def test_bad_frames_are_one_line_errors(bad):
    with pytest.raises(GrmpError, match="expected an"):
        preprocess(bad, PreprocessSpec.clip(8))
