"""Atomic file writes and content hashes: no reader ever sees a half-written artifact."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from grmp_edge.errors import GrmpError



def user_path(text: str | os.PathLike) -> Path:
    """``text`` as a path with ``~`` and ``~user`` expanded; a ``~user`` with no home here is a
    GrmpError (pathlib raises a bare RuntimeError)."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise GrmpError(f"cannot expand {str(text).split(os.sep)[0]!r} in {str(text)!r}: no such user here") from None

def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and rename the result onto ``path`` only if it succeeded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        # mkstemp makes the file owner-only; give it the mode a plain open() would have.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes atomically."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write an object as indented JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_outputs(outputs: Iterable[tuple[str, Optional[os.PathLike]]], overwrite: bool = False) -> None:
    """Refuse output paths before any work starts: ``outputs`` is ``(option, path)`` pairs (None
    skipped). Two options naming one file, a path that is a folder, and (unless ``overwrite``) a
    file that already exists are refused, so a command never replaces a file it did not create
    (``run --jsonl bundle/manifest.json`` must not eat a bundle)."""
    seen: dict[Path, str] = {}
    for option, path in outputs:
        if path is None:
            continue
        resolved = user_path(path).resolve()
        if resolved in seen:
            raise GrmpError(f"{seen[resolved]} and {option} name the same file {path}")
        seen[resolved] = option
        if resolved.is_dir():
            raise GrmpError(f"{option} {path} is a folder; name a file")
        # Only regular files are replaced by writing; a device or a FIFO (/dev/null, a pipe) is written to.
        if resolved.is_file() and not overwrite:
            raise GrmpError(f"{option} {path} already exists; pass --overwrite to replace it, or name a new file")


def replace_folder(new: str | os.PathLike, old: str | os.PathLike) -> Path:
    """Put the finished folder ``new`` at ``old``, replacing what is there: ``old`` is renamed aside
    first and deleted only once ``new`` is in place (it is put back if that rename fails)."""
    new, old = Path(new), Path(old)
    aside = old.with_name(f".{old.name}.replaced-{os.getpid()}")
    os.replace(old, aside)
    try:
        os.replace(new, old)
    except BaseException:
        os.replace(aside, old)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return old


CACHE_ENV = "GRMP_EDGE_CACHE"


def cache_root() -> Path:
    """grmp-edge's cache folder: ``$GRMP_EDGE_CACHE``, else ``$XDG_CACHE_HOME/grmp-edge``, else
    ``~/.cache/grmp-edge`` (bootstrap weights, TensorRT timing caches, ORT TensorRT engines)."""
    if os.environ.get(CACHE_ENV):
        return user_path(os.environ[CACHE_ENV])
    return user_path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "grmp-edge"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
