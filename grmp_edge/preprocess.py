"""numpy/cv2 preprocessing generated from a :class:`~grmp_edge.spec.PreprocessSpec`.

This is the single implementation of resize + crop: training datasets, export calibration and the
edge runtime all call it, so what the model saw in training is what it sees on the device. It ends at
a uint8 RGB ``size x size`` crop; cast, scale and normalisation live inside the exported graph (and in
:func:`normalize` for the PyTorch side).
"""
from __future__ import annotations

import numpy as np

from grmp_edge.errors import GrmpError, opencv
from grmp_edge.spec import PreprocessSpec



def _interp(spec: PreprocessSpec, shrinking: bool) -> int:
    cv2 = opencv()
    if spec.interpolation == "area":
        # INTER_AREA antialiases when shrinking; it degenerates to bilinear when enlarging.
        return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}[spec.interpolation]


def resized_shape(height: int, width: int, spec: PreprocessSpec) -> tuple[int, int]:
    """(height, width) after the spec's resize step."""
    if spec.resize_mode == "square":
        return spec.resize, spec.resize
    scale = spec.resize / min(height, width)
    if height <= width:
        return spec.resize, max(spec.resize, int(round(width * scale)))
    return max(spec.resize, int(round(height * scale))), spec.resize


def resize(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 image as the spec says.

    ``area`` shrinking of a large frame first box-filters by the largest whole factor that still
    leaves at least 2x to go (cv2's exact-integer INTER_AREA path, a few times cheaper), then
    area-resamples the rest: a 1080p frame costs ~3 ms instead of ~7 ms on one core, with the same
    antialiasing. Training, export calibration and the runtime all use this function, so the
    model sees exactly what it was trained on.
    """
    check_frame(rgb)
    cv2 = opencv()
    h, w = rgb.shape[:2]
    nh, nw = resized_shape(h, w, spec)
    if (nh, nw) == (h, w):
        return rgb
    shrinking = nh * nw < h * w
    if spec.interpolation == "area" and shrinking:
        k = int(min(h / nh, w / nw) // 2)
        if k >= 2:
            h2, w2 = (h // k) * k, (w // k) * k
            rgb = cv2.resize(rgb[:h2, :w2], (w2 // k, h2 // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(rgb, (nw, nh), interpolation=_interp(spec, shrinking))


def crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """Top-left corner of the centre ``size`` crop (torchvision's rounding)."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size x size`` crop of an ``(H, W, C)`` image."""
    h, w = img.shape[:2]
    if h < size or w < size:
        raise GrmpError(f"image {w}x{h} is smaller than the {size} px crop")
    top, left = crop_offsets(h, w, size)
    return img[top:top + size, left:left + size]


def preprocess(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Resize + centre crop: ``(H, W, 3)`` uint8 RGB -> ``(size, size, 3)`` uint8 RGB (contiguous)."""
    return np.ascontiguousarray(center_crop(resize(rgb, spec), spec.size))


def crop_grid(height: int, width: int, size: int, n: int) -> tuple[int, int]:
    """(rows, cols) of the grid ``n`` crops of ``size`` are placed on in a ``height x width`` frame.

    Once ``n`` reaches the covering grid (``ceil(height / size) x ceil(width / size)``), the grid
    starts from it and grows by a row or a column at a time (the one that does not pass ``n`` cells,
    else the one that keeps its cells squarer) until it has ``n`` cells; a grid of exactly ``n``
    cells covers the frame (15 crops of 96 px tile a 16:9 frame 256 px high as 3 x 5, and a 1:1, 4:3
    or 3:2 one too). Fewer crops go on the grid closest to the frame's aspect ratio with at least
    ``n`` cells."""
    rows, cols = -(-height // size), -(-width // size)
    if n < rows * cols:
        cols = int(np.ceil(np.sqrt(n * width / height)))
        return int(np.ceil(n / cols)), cols
    while rows * cols < n:
        taller, wider = (rows + 1, cols), (rows, cols + 1)
        squarer = taller if height / rows > width / cols else wider
        fits = [g for g in (taller, wider) if g[0] * g[1] <= n]
        rows, cols = fits[0] if len(fits) == 1 else squarer
    return rows, cols


def native_crops(rgb: np.ndarray, spec: PreprocessSpec, n: int) -> np.ndarray:
    """``n`` crops of the model's size at native resolution, spread on a grid over the frame
    (:func:`crop_grid`; the ``n`` cells nearest the centre when the grid has more).

    Downscaling a 1080p frame hides blur and noise; scoring native-resolution crops keeps them.
    Frames smaller than the crop fall back to the resized centre crop. Returns ``(n, size, size, 3)``.
    """
    check_frame(rgb)
    size = spec.size
    h, w = rgb.shape[:2]
    if n <= 1 or h < size or w < size:
        return preprocess(rgb, spec)[None].repeat(max(n, 1), axis=0)
    rows, cols = crop_grid(h, w, size, n)
    ys = np.linspace(0, h - size, rows).round().astype(int)
    xs = np.linspace(0, w - size, cols).round().astype(int)
    corners = [(y, x) for y in ys for x in xs]
    # Keep the n corners closest to the centre when the grid has more cells than asked.
    cy, cx = (h - size) / 2, (w - size) / 2
    corners.sort(key=lambda c: (c[0] - cy) ** 2 + (c[1] - cx) ** 2)
    return np.stack([rgb[y:y + size, x:x + size] for y, x in corners[:n]])


def normalize(batch_uint8: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 RGB -> ``(N, 3, H, W)`` float32 normalised (the graph does the same)."""
    x = batch_uint8.astype(np.float32) / 255.0
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def check_frame(rgb: np.ndarray) -> None:
    """Raise GrmpError unless ``rgb`` is an ``(H, W, 3)`` uint8 array."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise GrmpError(f"expected an (H, W, 3) uint8 RGB image, got shape {shape} dtype {dtype}")


def check_image_batch(batch: np.ndarray, size: int | None = None, max_batch: int | None = None,
                      what: str = "the model") -> np.ndarray:
    """The batch as a C-contiguous array, or a one-line GrmpError unless it is uint8 RGB
    ``(N, size, size, 3)`` (any height and width when ``size`` is None) with ``1 <= N <= max_batch``.

    The one check of the graph's input layout: backends run it on every call, export on its
    calibration and gate batches."""
    shape = getattr(batch, "shape", None)
    dtype = getattr(batch, "dtype", type(batch).__name__)
    hw = (size, size) if size is not None else None
    if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.dtype != np.uint8 or batch.shape[-1] != 3 \
            or (hw is not None and batch.shape[1:3] != hw) or batch.shape[0] < 1:
        expected = f"(N, {size}, {size}, 3)" if size is not None else "(N, H, W, 3)"
        raise GrmpError(f"{what} takes a uint8 RGB batch of shape {expected}; got shape {shape} dtype {dtype}")
    if max_batch is not None and batch.shape[0] > max_batch:
        raise GrmpError(f"batch of {batch.shape[0]} exceeds this engine's maximum batch {max_batch}")
    return np.ascontiguousarray(batch)
