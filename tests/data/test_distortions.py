"""The 25 KADID distortion types and the full-reference measures that score them."""
from __future__ import annotations

import numpy as np
import pytest

from grmp_edge.data import distortions
from grmp_edge.data.distortions import DISTORTIONS, LEVELS, PARAMS, apply
from grmp_edge.data.fr_quality import gmsd, ms_ssim, pseudo_mos, ssim
from grmp_edge.images import read_rgb
from grmp_edge.data.pristine import bundled_photos
from grmp_edge.errors import GrmpError
from grmp_edge.preprocess import resize
from grmp_edge.spec import PreprocessSpec

# Three varied natural photos: a portrait, a still life with saturated colour, a furry animal.
TEST_PHOTOS = ("astronaut", "coffee", "chelsea")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    by_name = {p.stem: p for p in bundled_photos()}
    spec = PreprocessSpec(size=128, resize=128)
    return [resize(read_rgb(by_name[name]), spec) for name in TEST_PHOTOS]


def _scores(name: str, img: np.ndarray, image_index: int) -> list[float]:
    # Seeded as synthesize() seeds its jobs: one seed per (seed, image, type), shared by the levels.
    type_index = DISTORTIONS.index(name)
    return [
        pseudo_mos(img, apply(name, img, level, np.random.default_rng([0, image_index, type_index])))
        for level in range(1, LEVELS + 1)
    ]


def test_the_25_kadid_types_in_order():
    assert len(DISTORTIONS) == len(set(DISTORTIONS)) == 25
    assert DISTORTIONS[:3] == ["gaussian_blur", "lens_blur", "motion_blur"]
    assert DISTORTIONS[-2:] == ["high_sharpen", "contrast_change"]
    assert set(PARAMS) == set(DISTORTIONS)
    assert all(len(v) == LEVELS for v in PARAMS.values())


@pytest.mark.parametrize("name", DISTORTIONS)
def test_apply_is_deterministic_and_changes_the_image(name, photos):
    img = photos[0][:64, :80]
    a = apply(name, img, 3, np.random.default_rng(7))
    b = apply(name, img, 3, np.random.default_rng(7))
    assert a.dtype == np.uint8 and a.shape == img.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(apply(name, img, 1, np.random.default_rng(7)), img)


@pytest.mark.parametrize("name", DISTORTIONS)
def test_quality_falls_with_every_level(name, photos):
    for i, img in enumerate(photos):
        scores = _scores(name, img, i)
        assert all(a > b for a, b in zip(scores, scores[1:])), f"{name} on {TEST_PHOTOS[i]}: {scores}"
        assert scores[0] < 1.0


@pytest.mark.parametrize("encoder", ["cv2", "wavelet"])
def test_jpeg2000_fallbacks_also_grade(encoder, photos, monkeypatch):
    monkeypatch.setattr(distortions, "_jp2_encoder", lambda: encoder)
    img = photos[1]
    scores = [pseudo_mos(img, apply("jpeg2000", img, level, None)) for level in range(1, LEVELS + 1)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores


def test_apply_rejects_bad_input(photos):
    rng = np.random.default_rng(0)
    with pytest.raises(GrmpError, match="unknown distortion"):
        apply("fog", photos[0], 1, rng)
    for level in (0, 6, 2.5):
        with pytest.raises(GrmpError, match="level"):
            apply("jpeg", photos[0], level, rng)
    with pytest.raises(GrmpError, match="uint8"):
        apply("jpeg", photos[0][..., 0], 1, rng)


def test_identical_images_score_perfectly(photos):
    img = photos[2]
    assert ssim(img, img) == pytest.approx(1.0)
    assert ms_ssim(img, img) == pytest.approx(1.0)
    assert gmsd(img, img) == pytest.approx(0.0)
    assert pseudo_mos(img, img) == pytest.approx(1.0)


@pytest.mark.parametrize("channels", [None, 3])
def test_ssim_matches_scikit_image(channels):
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(3)
    shape = (40, 52) if channels is None else (40, 52, channels)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a + rng.normal(0, 30, shape), 0, 255).astype(np.uint8)
    expected = skm.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=255, channel_axis=None if channels is None else 2)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-6)


def test_small_images_use_fewer_ms_ssim_scales(photos):
    img = photos[0][:24, :24]
    noisy = apply("white_noise", img, 3, np.random.default_rng(0))
    value = ms_ssim(img, noisy)
    assert 0.0 < value < 1.0
    assert 0.0 <= pseudo_mos(img, noisy) <= 1.0


def test_unrelated_images_score_low():
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    assert 0.0 <= pseudo_mos(a, b) < 0.3


def test_measures_reject_mismatched_or_tiny_images():
    a = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(GrmpError, match="differ in shape"):
        ssim(a, a[:31])
    with pytest.raises(GrmpError, match="at least"):
        pseudo_mos(a[:8, :8], a[:8, :8])
