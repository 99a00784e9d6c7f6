"""Full-reference similarity (SSIM, MS-SSIM, GMSD) and the pseudo-MOS of the synthetic corpus.

The synthetic corpus has no human ratings, so each distorted image is scored against its pristine
reference. All three measures follow their papers' definitions on 8-bit data (``data_range`` 255):

* SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, population
  statistics, the mean over the valid region (5 px borders dropped). Colour images give the mean of
  the per-channel SSIMs, as ``skimage.metrics.structural_similarity(..., channel_axis=2)`` does.
* MS-SSIM (Wang et al. 2003) on luminance (BT.601 Y): five scales with the published weights, 2x2
  average pooling between scales. Images too small for five scales use as many as fit an 11 px
  window at the coarsest scale, with the weights renormalised to sum to 1.
* GMSD (Xue et al. 2014) on luminance: 2x2 average + downsample by 2, Prewitt gradients, c = 170,
  the standard deviation of the gradient-magnitude-similarity map (0 = identical; ~0.35 = very poor).

:func:`pseudo_mos` combines them into one cross-type score in [0, 1], higher = better.
"""
from __future__ import annotations

import numpy as np

from grmp_edge.errors import GrmpError, opencv

_K1, _K2, _L = 0.01, 0.03, 255.0
_C1, _C2 = (_K1 * _L) ** 2, (_K2 * _L) ** 2
_WIN, _SIGMA = 11, 1.5
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
GMSD_C = 170.0
GMSD_SCALE = 0.35  # GMSD of a very poor image; 1 - GMSD / GMSD_SCALE maps it onto ~[0, 1]



def _check_pair(ref: np.ndarray, dist: np.ndarray) -> None:
    if ref.shape != dist.shape:
        raise GrmpError(f"reference {ref.shape} and distorted {dist.shape} images differ in shape")
    if ref.ndim not in (2, 3) or min(ref.shape[:2]) < _WIN:
        raise GrmpError(f"need (H, W) or (H, W, C) images of at least {_WIN} px, got {ref.shape}")


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB image as float64 in [0, 255] (grey images pass through)."""
    x = np.asarray(rgb, dtype=np.float64)
    if x.ndim == 2:
        return x
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def _blur(x: np.ndarray) -> np.ndarray:
    cv2 = opencv()
    return cv2.GaussianBlur(x, (_WIN, _WIN), _SIGMA, borderType=cv2.BORDER_REFLECT)


def _ssim_maps(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SSIM and contrast-structure maps of two float64 2-D images, borders dropped."""
    mx, my = _blur(x), _blur(y)
    sxx = _blur(x * x) - mx * mx
    syy = _blur(y * y) - my * my
    sxy = _blur(x * y) - mx * my
    cs = (2 * sxy + _C2) / (sxx + syy + _C2)
    lum = (2 * mx * my + _C1) / (mx * mx + my * my + _C1)
    pad = (_WIN - 1) // 2
    crop = (slice(pad, -pad), slice(pad, -pad))
    return (lum * cs)[crop], cs[crop]


def ssim(ref: np.ndarray, dist: np.ndarray) -> float:
    """Mean SSIM of two uint8 images (2-D, or colour = mean over channels); 1.0 for identical images."""
    ref, dist = np.asarray(ref), np.asarray(dist)
    _check_pair(ref, dist)
    if ref.ndim == 2:
        ref, dist = ref[..., None], dist[..., None]
    values = [
        _ssim_maps(ref[..., c].astype(np.float64), dist[..., c].astype(np.float64))[0].mean()
        for c in range(ref.shape[2])
    ]
    return float(np.mean(values))


def _pool2(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    x = x[:h, :w]
    return (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) / 4.0


def ms_ssim(ref: np.ndarray, dist: np.ndarray) -> float:
    """MS-SSIM on luminance; small images use fewer scales (weights renormalised)."""
    ref, dist = np.asarray(ref), np.asarray(dist)
    _check_pair(ref, dist)
    x, y = luminance(ref), luminance(dist)
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and min(x.shape) // 2 ** scales >= _WIN:
        scales += 1
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    values = []
    for s in range(scales):
        ssim_map, cs_map = _ssim_maps(x, y)
        # Negative contrast-structure terms would make the fractional powers undefined.
        values.append(max(float((ssim_map if s == scales - 1 else cs_map).mean()), 0.0))
        x, y = _pool2(x), _pool2(y)
    return float(np.prod(np.power(values, weights)))


def gmsd(ref: np.ndarray, dist: np.ndarray) -> float:
    """Gradient magnitude similarity deviation on luminance: 0 for identical images, higher = worse."""
    cv2 = opencv()
    ref, dist = np.asarray(ref), np.asarray(dist)
    _check_pair(ref, dist)
    prewitt_x = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], dtype=np.float64) / 3.0
    prewitt_y = prewitt_x.T.copy()
    mags = []
    for img in (luminance(ref), luminance(dist)):
        img = _pool2(img)
        gx = cv2.filter2D(img, -1, prewitt_x, borderType=cv2.BORDER_REPLICATE)
        gy = cv2.filter2D(img, -1, prewitt_y, borderType=cv2.BORDER_REPLICATE)
        mags.append(np.sqrt(gx * gx + gy * gy))
    gms = (2 * mags[0] * mags[1] + GMSD_C) / (mags[0] ** 2 + mags[1] ** 2 + GMSD_C)
    return float(gms.std())


def pseudo_mos(ref: np.ndarray, dist: np.ndarray) -> float:
    """Cross-type pseudo-MOS in [0, 1] (higher = better) of a distorted image against its reference.

    ``pseudo_mos = ( clip(SSIM, 0, 1) + clip(MS-SSIM, 0, 1) + clip(1 - GMSD / 0.35, 0, 1) ) / 3``,
    with SSIM over the RGB channels and MS-SSIM and GMSD on BT.601 luminance, all on 8-bit data.
    An undistorted image scores 1.
    """
    parts = (
        np.clip(ssim(ref, dist), 0.0, 1.0),
        np.clip(ms_ssim(ref, dist), 0.0, 1.0),
        np.clip(1.0 - gmsd(ref, dist) / GMSD_SCALE, 0.0, 1.0),
    )
    return float(np.mean(parts))
