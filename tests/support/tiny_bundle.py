"""A small real bundle for runtime tests, built without the export package.

The graph honours the bundle contract (input ``image`` uint8 ``(N, S, S, 3)``, output ``score``
float32 ``(N,)``): Cast -> scale by 1/255 -> ReduceMean over H, W, C -> Sigmoid, so its scores are
known in closed form (:func:`reference_scores`). Each ONNX file gets its own doc string so that the
files differ and their hashes tell them apart.

The runtime's own tests also run where the ``onnx`` package is absent (the Jetson-like Python 3.10 CI
run, ``.ci/runtime-py310``): there the graphs come from a folder written beforehand where onnx is
installed (``python tests/support/tiny_bundle.py DIR``), named by ``$GRMP_EDGE_TINY_ONNX``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from grmp_edge.artifacts import sha256_file
from grmp_edge.spec import BundleFile, BundleManifest, ModelSpec, PreprocessSpec

SIZE = 8

# (path, precision, format, targets) as the exporter writes them
STANDARD_FILES = (
    ("model_fp32.onnx", "fp32", "onnx", ["onnxruntime", "tensorrt"]),
    ("model_fp16.onnx", "fp16", "onnx", ["onnxruntime-gpu", "tensorrt"]),
    ("model_int8_qdq.onnx", "int8", "onnx", ["tensorrt", "onnxruntime-gpu"]),
    ("model_int8_cpu.onnx", "int8", "onnx", ["onnxruntime-cpu"]),
    ("model_fp16.plan", "fp16", "plan", ["tensorrt"]),
)

ORIN_SIDECAR = {
    "tensorrt_version": "10.3.0",
    "gpu_name": "Orin",
    "compute_capability": "8.7",
    "jetpack": "6.1",
    "precision": "fp16",
    "batch": {"min": 1, "opt": 1, "max": 8},
}


PREBUILT_ENV = "GRMP_EDGE_TINY_ONNX"
# (size, doc) of every tiny graph the runtime tests build: this module's size and the runtime
# conftest's crop size, each with the doc string (file name) of every graph a runtime test writes.
PREBUILT_SIZES = (SIZE, 32)
PREBUILT_DOCS = ("", "model_int8_dyn.onnx", *(f[0] for f in STANDARD_FILES if f[2] == "onnx"))


def prebuilt_name(size: int, doc: str) -> str:
    """The file name of the prebuilt tiny graph of ``size`` and ``doc``."""
    return f"tiny_{size}_{hashlib.sha256(doc.encode()).hexdigest()[:16]}.onnx"


def tiny_onnx(size: int = SIZE, doc: str = "") -> bytes:
    """The serialised tiny quality graph (prebuilt, from ``$GRMP_EDGE_TINY_ONNX``, where onnx is absent)."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        import pytest

        folder = os.environ.get(PREBUILT_ENV)
        path = Path(folder) / prebuilt_name(size, doc) if folder else None
        if path is None or not path.is_file():
            pytest.skip(f"onnx is not installed and ${PREBUILT_ENV} holds no tiny graph of size {size} doc {doc!r}")
        return path.read_bytes()

    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", size, size, 3])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [1.0 / 255.0])
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "scale"], ["xs"]),
        helper.make_node("ReduceMean", ["xs"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Sigmoid", ["mean"], ["score"]),
    ]
    graph = helper.make_graph(nodes, "tiny_quality", [image], [score], initializer=[scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], doc_string=doc)
    model.ir_version = 8  # readable by the older ONNX Runtime and TensorRT parsers of JetPack
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def reference_scores(batch: np.ndarray) -> np.ndarray:
    """What the tiny graph computes, in numpy."""
    mean = (batch.astype(np.float64) / 255.0).mean(axis=(1, 2, 3))
    return (1.0 / (1.0 + np.exp(-mean))).astype(np.float32)


def make_bundle(folder: Path, files=STANDARD_FILES, size: int = SIZE, sidecar: dict | None = None,
                plan_bytes: bytes = b"not a real TensorRT engine", crops: int = 1) -> Path:
    """Write a bundle into ``folder``: the ONNX files, plans (``plan_bytes``) with their sidecars
    (``sidecar`` or :data:`ORIN_SIDECAR`, plus the fp16 ONNX's sha256), and ``manifest.json`` (whose
    crop plan is ``crops``)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for path, precision, fmt, targets in files:
        info = {}
        if fmt == "onnx":
            (folder / path).write_bytes(tiny_onnx(size, doc=path))
        else:
            (folder / path).write_bytes(plan_bytes)
            info = {"sidecar": f"{path}.json"}
        entries.append(BundleFile(path=path, sha256=sha256_file(folder / path), precision=precision,
                                  format=fmt, targets=list(targets), info=info))
    for entry in entries:
        if entry.format == "plan":
            data = dict(sidecar or ORIN_SIDECAR)
            source = folder / f"model_{entry.precision}.onnx"
            if source.exists():
                data.setdefault("onnx_sha256", sha256_file(source))
            (folder / entry.info["sidecar"]).write_text(json.dumps(data))
    spec = ModelSpec(backbone="tiny", pretrained=None, preprocess=PreprocessSpec(size=size, resize=size, crops=crops))
    BundleManifest(model=spec, files=entries, versions={"grmp_edge": "test"}).save(folder / "manifest.json")
    return folder


if __name__ == "__main__":  # python tests/support/tiny_bundle.py DIR: the graphs for runs without onnx
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for size in PREBUILT_SIZES:
        for doc in PREBUILT_DOCS:
            (out / prebuilt_name(size, doc)).write_bytes(tiny_onnx(size, doc))
