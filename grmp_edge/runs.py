"""The ``runs/<kind>/<name>/`` working-folder convention.

Commands write under ``runs/<kind>/<name>/`` (``train``, ``export``, ``run``, ``bench``, ...);
later commands find the newest result of a kind without flags, so that a bare
``grmp-edge export`` picks up the last ``grmp-edge train``.
The root is ``./runs`` unless ``GRMP_EDGE_RUNS`` names another folder.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Iterator

from grmp_edge.errors import GrmpError


def runs_root() -> Path:
    """The folder that holds every run (``$GRMP_EDGE_RUNS`` or ``./runs``)."""
    return Path(os.environ.get("GRMP_EDGE_RUNS", "runs"))


def name_taken(kind: str, name: str) -> bool:
    """Whether ``runs/<kind>/<name>`` holds anything: an empty folder (a placeholder an interrupted
    run could not remove) does not block its name."""
    path = runs_root() / kind / name
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def new_run_dir(kind: str, name: str | None = None, exist_ok: bool = False,
                remedy: str = "pick another --name") -> Path:
    """Create and return ``runs/<kind>/<name>``; without a name, the next free ``exp``, ``exp2``, ...

    With ``exist_ok`` an existing folder of that name is reused (for ``--resume``); otherwise a
    taken name is refused with ``remedy`` (the options the calling command really has).
    """
    base = runs_root() / kind
    base.mkdir(parents=True, exist_ok=True)
    if name:
        path = base / name
        if name_taken(kind, name) and not exist_ok:
            raise GrmpError(f"{path} already exists; {remedy}")
        path.mkdir(parents=True, exist_ok=True)
        return path
    taken = {p.name for p in base.iterdir()}
    n = 1
    while True:
        candidate = "exp" if n == 1 else f"exp{n}"
        if candidate not in taken:
            break
        n += 1
    path = base / candidate
    path.mkdir()
    return path


@contextlib.contextmanager
def discard_on_failure(path: Path, keep: Callable[[Path], bool] = lambda path: False) -> Iterator[Path]:
    """Remove the run folder ``path`` (made by this invocation) if the block fails or is interrupted,
    unless ``keep(path)`` says it holds something worth resuming, so that a failed command leaves no
    half-made folder behind to block its name or be picked up as the newest result."""
    try:
        yield path
    except BaseException:
        if path.is_dir() and not keep(path):
            shutil.rmtree(path, ignore_errors=True)
        raise


def latest_run(kind: str, must_contain: str | None = None) -> Path:
    """The most recently modified ``runs/<kind>/*`` folder (holding ``must_contain`` if given)."""
    base = runs_root() / kind
    candidates = [p for p in base.glob("*") if p.is_dir()] if base.is_dir() else []
    if must_contain:
        candidates = [p for p in candidates if (p / must_contain).exists()]
    if not candidates:
        what = f" with {must_contain}" if must_contain else ""
        raise GrmpError(f"no {kind} run{what} under {base}; run `grmp-edge {kind}` first or pass a path")

    def mtime(p: Path) -> float:
        target = p / must_contain if must_contain else p
        return target.stat().st_mtime

    return max(candidates, key=mtime)


def slug(text: str) -> str:
    """A folder-safe name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


_ARGV: list[str] = []


def record_invocation(argv: list[str]) -> None:
    """Remember the arguments of this ``grmp-edge`` invocation (called once by the CLI entry point)."""
    _ARGV[:] = list(argv)


def invocation() -> list[str]:
    """The recorded arguments of this invocation."""
    return list(_ARGV)


def command_line() -> str:
    """The exact ``grmp-edge ...`` command being run, for result files that say how they were made."""
    import shlex

    return " ".join(["grmp-edge", *(shlex.quote(a) for a in _ARGV)])
