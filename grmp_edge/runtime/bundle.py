"""Load an exported bundle, pick the file meant for a backend and precision, verify its hash.

A bundle is ``runs/export/<name>/``: ``manifest.json`` (:class:`~grmp_edge.spec.BundleManifest`)
plus the ONNX graphs and TensorRT plans it lists, each with its sha256, precision, format and the
backends it is meant for (``targets``). Every file handed out by :meth:`LoadedBundle.file_for`
or :meth:`LoadedBundle.verify` has had its hash checked, so a corrupted or tampered file is refused
by name before any backend parses it.

Which file serves which backend (``target_backend``), best first:

=====================  ============  ==================================================
backend                format        file targets, in order of preference
=====================  ============  ==================================================
onnxruntime-cpu        onnx          onnxruntime-cpu, onnxruntime
onnxruntime-cuda       onnx          onnxruntime-gpu, onnxruntime, tensorrt
onnxruntime-tensorrt   onnx          tensorrt, onnxruntime-gpu, onnxruntime
tensorrt               plan          tensorrt
tensorrt-rtx           plan          tensorrt-rtx
=====================  ============  ==================================================

``precision="auto"`` takes fp16, then fp32, then int8 on the GPU backends and fp32, then int8,
then fp16 on ``onnxruntime-cpu``: the full-precision graph is the default on CPUs (the INT8 CPU
graph is faster but is asked for with ``--precision int8``), half precision the default on GPUs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grmp_edge.artifacts import sha256_file
from grmp_edge.errors import GrmpError
from grmp_edge.runs import latest_run
from grmp_edge.spec import BundleFile, BundleManifest, PRECISIONS, PreprocessSpec, read_json, sidecar_name

MANIFEST_NAME = "manifest.json"
FILE_FORMATS = ("onnx", "plan", "json")
# A model input side beyond this is a corrupt or hostile manifest, not a model (ViTs use 224-448).
MAX_INPUT_SIZE = 4096

# backend -> (file format, accepted file targets best first)
FILE_PREFERENCE: dict[str, tuple[str, tuple[str, ...]]] = {
    "onnxruntime-cpu": ("onnx", ("onnxruntime-cpu", "onnxruntime")),
    "onnxruntime-cuda": ("onnx", ("onnxruntime-gpu", "onnxruntime", "tensorrt")),
    "onnxruntime-tensorrt": ("onnx", ("tensorrt", "onnxruntime-gpu", "onnxruntime")),
    "tensorrt": ("plan", ("tensorrt",)),
    "tensorrt-rtx": ("plan", ("tensorrt-rtx",)),
}
AUTO_PRECISION_CPU = ("fp32", "int8", "fp16")
AUTO_PRECISION_GPU = ("fp16", "fp32", "int8")


def auto_precisions(target_backend: str) -> tuple[str, ...]:
    """The precisions ``precision="auto"`` tries for a backend, best first."""
    return AUTO_PRECISION_CPU if target_backend == "onnxruntime-cpu" else AUTO_PRECISION_GPU


@dataclass
class LoadedBundle:
    """A bundle's manifest and folder; hands out hash-verified files."""

    manifest: BundleManifest
    folder: Path

    @property
    def preprocess(self) -> PreprocessSpec:
        """The preprocessing spec the graphs were exported with."""
        return self.manifest.preprocess

    def path_of(self, file: BundleFile) -> Path:
        """Where a listed file lives; GrmpError if its path leaves the bundle folder."""
        return self._inside(file.path)

    def _inside(self, relative: str) -> Path:
        path = (self.folder / relative).resolve()
        if Path(relative).is_absolute() or self.folder.resolve() not in path.parents:
            raise GrmpError(f"bundle file path {relative!r} points outside the bundle {self.folder}")
        return path

    def verify(self, file: BundleFile) -> Path:
        """The file's path after checking that it exists and its sha256 is the manifest's."""
        path = self.path_of(file)
        if not path.is_file():
            raise GrmpError(f"bundle file {file.path} is missing from {self.folder}; re-export the bundle")
        if sha256_file(path) != file.sha256:
            raise GrmpError(
                f"bundle file {file.path} does not match its sha256 in {self.folder / MANIFEST_NAME} "
                "(corrupted or modified); re-export or re-copy the bundle"
            )
        return path

    def candidates(self, target_backend: str, precision: str) -> list[BundleFile]:
        """Files usable by a backend at one precision, best first (no hash check)."""
        if target_backend not in FILE_PREFERENCE:
            raise GrmpError(f"unknown backend {target_backend!r}; expected one of {', '.join(FILE_PREFERENCE)}")
        fmt, wanted = FILE_PREFERENCE[target_backend]

        def rank(f: BundleFile) -> int:
            return min(wanted.index(t) for t in f.targets if t in wanted)

        usable = [
            f for f in self.manifest.files
            if f.format == fmt and f.precision == precision and any(t in wanted for t in f.targets)
        ]
        return sorted(usable, key=rank)  # stable: manifest order breaks ties

    def file_for(self, target_backend: str, precision: str = "auto") -> BundleFile:
        """The verified file a backend should load at a precision (``auto``: see the module doc).

        GrmpError listing what the bundle holds when nothing fits, or naming the file when its
        hash does not match.
        """
        if precision != "auto" and precision not in PRECISIONS:
            raise GrmpError(f"unknown precision {precision!r}; expected auto or one of {', '.join(PRECISIONS)}")
        for p in auto_precisions(target_backend) if precision == "auto" else (precision,):
            found = self.candidates(target_backend, p)
            if found:
                self.verify(found[0])
                return found[0]
        fmt, wanted = FILE_PREFERENCE[target_backend]
        wanted_precision = "any precision" if precision == "auto" else precision
        raise GrmpError(
            f"bundle {self.folder} has no {fmt} file at {wanted_precision} for {target_backend} "
            f"(targets {' or '.join(wanted)}); it holds: {self.describe_files()}"
        )

    def describe_files(self) -> str:
        """One line listing every file with its precision, format and targets."""
        if not self.manifest.files:
            return "no files"
        return ", ".join(
            f"{f.path} ({f.precision} {f.format} for {'/'.join(f.targets) or 'no target'})"
            for f in self.manifest.files
        )

    def sidecar(self, plan: BundleFile) -> dict[str, Any]:
        """The JSON sidecar of a plan (``info.sidecar``, else ``<plan>.json``), hash-checked when the
        manifest lists it too."""
        name = plan.info.get("sidecar") or sidecar_name(plan.path)
        listed = next((f for f in self.manifest.files if f.path == name), None)
        path = self.verify(listed) if listed else self._inside(name)
        return read_json(path, f"sidecar of {plan.path}")

    def onnx_source(self, plan: BundleFile, sidecar: dict[str, Any]) -> Path | None:
        """The bundle's ONNX graph a plan was built from: the plan's ``info.source``, else the file
        whose hash is the sidecar's ``onnx_sha256``, else the ONNX of the same precision meant for
        TensorRT; None if there is none."""
        onnx_files = [f for f in self.manifest.files if f.format == "onnx"]
        match = next((f for f in onnx_files if plan.info.get("source") == f.path), None) or next(
            (f for f in onnx_files if sidecar.get("onnx_sha256") and f.sha256 == sidecar["onnx_sha256"]), None
        )
        if match is None:
            match = next(iter(self.candidates("onnxruntime-tensorrt", plan.precision)), None)
        return self.path_of(match) if match else None


def load_bundle(path: str | Path | None = None) -> LoadedBundle:
    """Load a bundle from its folder or its ``manifest.json``; None takes the latest
    ``runs/export/*`` holding a manifest. A bundle of a newer schema is refused."""
    if path is None:
        folder = latest_run("export", MANIFEST_NAME)
    else:
        path = Path(path)
        folder = path.parent if path.is_file() else path
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise GrmpError(f"{folder} is not a bundle: it has no {MANIFEST_NAME}; pass the folder `grmp-edge export` wrote")
    try:
        manifest = BundleManifest.load(manifest_path)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise GrmpError(f"{manifest_path} is malformed ({type(exc).__name__}: {exc}); re-export the bundle") from None
    check_manifest(manifest, manifest_path)
    return LoadedBundle(manifest=manifest, folder=folder)


def check_manifest(manifest: BundleManifest, path: Path) -> None:
    """Refuse a manifest whose preprocessing sizes or file entries no backend could use, naming the
    field, before any file is opened (a hand-edited or hostile manifest must not reach numpy or a
    backend as a giant allocation or an unknown precision)."""
    spec = manifest.preprocess

    def bad(what: str) -> GrmpError:
        return GrmpError(f"{path}: {what}; re-export the bundle")

    for key in ("size", "resize"):
        value = getattr(spec, key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_INPUT_SIZE:
            raise bad(f"preprocess {key} must be a whole number of pixels in 1..{MAX_INPUT_SIZE}, got {value!r}")
    for key in ("mean", "std"):
        values = getattr(spec, key)
        if (not isinstance(values, (list, tuple)) or len(values) != 3
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
            raise bad(f"preprocess {key} must be 3 finite numbers, got {values!r}")
    if not all(v > 0 for v in spec.std):
        raise bad(f"preprocess std must be > 0, got {list(spec.std)!r}")
    for f in manifest.files:
        if not isinstance(f.path, str) or not isinstance(f.sha256, str) or not isinstance(f.targets, list):
            raise bad(f"file entry {f.path!r} needs a path, a sha256 and a list of targets")
        if f.precision not in PRECISIONS:
            raise bad(f"file {f.path} names precision {f.precision!r}, not one of {', '.join(PRECISIONS)}")
        if f.format not in FILE_FORMATS:
            raise bad(f"file {f.path} names format {f.format!r}, not one of {', '.join(FILE_FORMATS)}")
