"""Image decoding shared by the data tools, training, export calibration and the runtime."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from grmp_edge.errors import GrmpError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file into an ``(H, W, 3)`` uint8 RGB array; corrupt or missing files raise GrmpError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise GrmpError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise GrmpError(f"cannot decode image {path}: {exc}") from None


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
