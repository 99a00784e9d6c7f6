"""Write a deployable bundle: ``runs/export/<name>/`` with its files and ``manifest.json``.

Everything is staged in a hidden sibling folder and published with one directory rename, with the
manifest written last, so a reader never sees a bundle whose manifest names a missing or half-written
file. The runtime reads bundles with :mod:`grmp_edge.runtime.bundle`, which checks each file's sha256.
"""
from __future__ import annotations

import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from grmp_edge.artifacts import sha256_file
from grmp_edge.errors import GrmpError
from grmp_edge.runtime.bundle import MANIFEST_NAME
from grmp_edge.spec import BundleFile, BundleManifest, ModelSpec

# Distribution names of what produced a bundle, as the manifest reports them.
_PRODUCERS = {
    "grmp-edge": "grmp-edge",
    "torch": "torch",
    "open_clip": "open_clip_torch",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "onnxslim": "onnxslim",
    "numpy": "numpy",
}


def producing_versions() -> dict[str, str]:
    """Installed versions of the packages that produce a bundle (absent ones are left out)."""
    versions = {}
    for key, dist in _PRODUCERS.items():
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


class BundleWriter:
    """Stage a bundle's files, then publish them and the manifest at ``out_dir`` in one rename.

    Use as a context manager: leaving the block with an exception removes the staged files; call
    :meth:`commit` inside it to publish. ``out_dir`` must not exist or be empty (``new_run_dir``
    creates it empty).
    """

    def __init__(self, out_dir: str | os.PathLike, model: ModelSpec):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and any(self.out_dir.iterdir()):
            raise GrmpError(f"bundle folder {self.out_dir} is not empty; pick another --name")
        self.model = model
        self.files: list[BundleFile] = []
        self.gates: dict[str, Any] = {}
        self.calibration: dict[str, Any] = {}
        self.source: dict[str, Any] = {}
        self.staging = self.out_dir.parent / f".{self.out_dir.name}.partial-{os.getpid()}"
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        self._committed = False

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._committed:
            self.abort()

    def path(self, name: str) -> Path:
        """Where a file named ``name`` is written before the bundle is published."""
        if Path(name).name != name or name == MANIFEST_NAME:
            raise GrmpError(f"bundle file names are plain names other than {MANIFEST_NAME}, got {name!r}")
        return self.staging / name

    def add(self, name: str, precision: str, targets: Iterable[str], fmt: str = "onnx",
            info: dict[str, Any] | None = None) -> BundleFile:
        """Record a file already written at :meth:`path` (hashing it now); returns its manifest entry."""
        staged = self.path(name)
        if not staged.is_file():
            raise GrmpError(f"bundle file {name} was not written")
        entry = BundleFile(path=name, sha256=sha256_file(staged), precision=precision, format=fmt,
                           targets=list(targets), info=dict(info or {}))
        self.files = [f for f in self.files if f.path != name] + [entry]
        return entry

    def manifest(self) -> BundleManifest:
        """The manifest as it stands."""
        return BundleManifest(model=self.model, files=list(self.files), gates=dict(self.gates),
                              calibration=dict(self.calibration), versions=producing_versions(),
                              source=dict(self.source))

    def commit(self) -> BundleManifest:
        """Re-hash every file, write ``manifest.json`` last and move the bundle to ``out_dir``."""
        for entry in self.files:
            if sha256_file(self.path(entry.path)) != entry.sha256:
                raise GrmpError(f"bundle file {entry.path} changed after it was recorded")
        manifest = self.manifest()
        manifest.save(self.staging / MANIFEST_NAME)
        try:
            os.replace(self.staging, self.out_dir)  # replaces an empty placeholder folder atomically
        except OSError as exc:
            raise GrmpError(f"cannot publish bundle at {self.out_dir}: {exc.strerror}") from None
        self._committed = True
        return manifest

    def abort(self) -> None:
        """Drop the staged files (and ``out_dir`` when it is still an empty placeholder)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.out_dir.is_dir() and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()


def add_to_bundle(folder: str | os.PathLike, files: Iterable[BundleFile]) -> BundleManifest:
    """List already-written files (e.g. plans built on the device) in an existing bundle's manifest.

    Each file must be in ``folder`` and match its recorded sha256; an entry with the same path is
    replaced. The files were written atomically by their producer and the manifest is rewritten
    atomically after them, so a reader sees either the old bundle or the new one.
    """
    folder = Path(folder)
    manifest = BundleManifest.load(folder / MANIFEST_NAME)
    for entry in files:
        path = folder / entry.path
        if Path(entry.path).name != entry.path or not path.is_file():
            raise GrmpError(f"{entry.path} is not a file in the bundle {folder}")
        if sha256_file(path) != entry.sha256:
            raise GrmpError(f"{entry.path} changed after it was hashed")
        manifest.files = [f for f in manifest.files if f.path != entry.path] + [entry]
    manifest.save(folder / MANIFEST_NAME)
    return manifest
