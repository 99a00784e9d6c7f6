"""Image decoding shared by the data tools, training, export calibration, bench and the runtime.

:func:`read_rgb` is the one decoder: every command that reads image files goes through it, so every
command applies the same pixel limit and produces the same 8-bit RGB for the same file:

- **Pixel limit.** The size in the file's header is checked before any pixel is decoded, so a
  decompression bomb (a 1 MB PNG that inflates to 20000x20000) is refused without allocating it.
  The limit is :data:`DEFAULT_MAX_PIXELS` unless ``$GRMP_EDGE_MAX_IMAGE_PIXELS`` (set by
  ``grmp-edge --max-image-pixels N``) names another.
- **Formats.** 8-bit grey, grey + alpha, palette, RGB, RGBA, CMYK and YCbCr go through Pillow's own
  conversion to RGB; 16-bit samples are scaled to 8 bits as ``round(x / 257)`` (65535 -> 255), never
  clipped; 32-bit integer grey is read as 16-bit data. Alpha is dropped (the colour under it is
  kept), as in training. Floating-point images are refused: their range is not defined.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from grmp_edge.errors import GrmpError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MAX_PIXELS_ENV = "GRMP_EDGE_MAX_IMAGE_PIXELS"
# 64 megapixels: above any camera frame or IQA dataset image (KonIQ 1024x768, SPAQ ~4000x3000) and
# about 200 MB decoded, so a bomb is refused long before it can exhaust a Jetson's memory.
DEFAULT_MAX_PIXELS = 64_000_000
_GREY_16 = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def max_image_pixels() -> int:
    """The pixel limit (width x height) of :func:`read_rgb`."""
    text = os.environ.get(MAX_PIXELS_ENV, "")
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        raise GrmpError(f"{MAX_PIXELS_ENV} must be a whole number of pixels, got {text!r}") from None
    if value < 1:
        raise GrmpError(f"{MAX_PIXELS_ENV} must be >= 1, got {value}")
    return value


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file into an ``(H, W, 3)`` uint8 RGB array (see the module doc); a missing,
    corrupt, truncated, oversized or floating-point file raises GrmpError."""
    from PIL import Image, UnidentifiedImageError

    # The limit is ours, checked on the header below; Pillow's own (a warning at 89 MP, an error at
    # 179 MP, not settable per call) is switched off so that exactly one rule applies.
    Image.MAX_IMAGE_PIXELS = None
    path = Path(path)
    limit = max_image_pixels()
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > limit:
                raise GrmpError(
                    f"image {path} is {width}x{height} ({width * height / 1e6:.1f} MP), over the "
                    f"{limit / 1e6:g} MP limit; raise it with grmp-edge --max-image-pixels N or ${MAX_PIXELS_ENV}"
                )
            # Read before load(), which clears the tile list that names the file's sample layout.
            sixteen = im.mode in ("RGB", "RGBA", "LA") and _sixteen_bit(im)
            im.load()
            return _to_rgb8(im, path, sixteen)
    except FileNotFoundError:
        raise GrmpError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, MemoryError) as exc:
        raise GrmpError(f"cannot decode image {path}: {exc}") from None


def _to_rgb8(im, path: Path, sixteen: bool) -> np.ndarray:
    """A loaded Pillow image as the uint8 RGB array training and the runtime both see (``sixteen``:
    the file holds 16-bit colour samples that Pillow has cut to their high byte)."""
    if im.mode in _GREY_16:
        grey = _scale16(np.asarray(im).astype(np.int64))
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode == "F":
        raise GrmpError(f"cannot decode image {path}: floating-point samples have no defined 0..255 range")
    if sixteen:
        wide = _decode16(path)
        if wide is not None:
            return wide
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _scale16(values: np.ndarray) -> np.ndarray:
    """16-bit samples to 8 bits, rounded to nearest (integer arithmetic: (x * 255 + 32767) // 65535)."""
    values = np.clip(values, 0, 65535)
    return ((values * 255 + 32767) // 65535).astype(np.uint8)


def _sixteen_bit(im) -> bool:
    # Pillow opens 16-bit colour PNG/PPM/TIFF as 8-bit modes and names the 16-bit raw layout in the tile.
    return any(";16" in str(tile.args) for tile in getattr(im, "tile", ()) or ())


def _decode16(path: Path) -> np.ndarray | None:
    """A 16-bit colour file decoded at full depth by OpenCV and scaled like 16-bit grey; None where
    OpenCV is not installed (the base install, which only validates), leaving Pillow's high byte
    (x >> 8, at most 1 below round(x / 257))."""
    try:
        import cv2
    except ImportError:
        return None
    data = np.fromfile(str(path), dtype=np.uint8)
    wide = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if wide is None or wide.dtype != np.uint16:
        return None
    if wide.ndim == 2:
        wide = np.repeat(wide[..., None], 3, axis=2)
    elif wide.shape[2] == 2:  # grey + alpha
        wide = np.repeat(wide[..., :1], 3, axis=2)
    else:
        wide = wide[..., 2::-1]  # BGR(A) -> RGB, alpha dropped
    return np.ascontiguousarray(_scale16(wide.astype(np.int64)))


def write_rgb(path: str | Path, rgb: np.ndarray, quality: int = 95) -> Path:
    """Encode an RGB uint8 array atomically (format from the suffix)."""
    from PIL import Image

    from grmp_edge.artifacts import atomic_write

    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), None)

    def _write(tmp: Path) -> None:
        kwargs = {"quality": quality} if fmt == "JPEG" else {}
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format=fmt or Image.registered_extensions()[path.suffix.lower()], **kwargs)

    return atomic_write(path, _write)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside or below ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GrmpError(f"not a folder: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
