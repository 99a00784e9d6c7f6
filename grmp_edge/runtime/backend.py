"""The interface every inference backend implements (ONNX Runtime, TensorRT, TensorRT-RTX, Triton).

A backend takes the preprocessed batch exactly as the exported graph does (``image``: uint8 RGB
``(N, S, S, 3)``) and returns the ``score`` output as ``(N,)`` float32. Which backend runs a bundle
on this device is :func:`grmp_edge.runtime.backends.open_backend`'s choice.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from grmp_edge.spec import BundleFile


class Backend(ABC):
    """A loaded model that scores preprocessed batches.

    ``name`` (``onnxruntime-cpu``, ``onnxruntime-cuda``, ``onnxruntime-tensorrt``, ``tensorrt``,
    ``tensorrt-rtx``, ``triton``), ``precision`` and ``file`` say what runs; ``max_batch`` is the
    largest batch accepted (None: unbounded); ``reason`` says why it was chosen.
    """

    name: str
    precision: str
    file: BundleFile
    max_batch: int | None = None
    reason: str = ""

    @abstractmethod
    def infer(self, batch_uint8_nhwc: np.ndarray) -> np.ndarray:
        """Scores ``(N,)`` float32 of a uint8 ``(N, S, S, 3)`` RGB batch."""

    @abstractmethod
    def describe(self) -> str:
        """One line: backend, precision, file and the settings that matter for speed."""

    @abstractmethod
    def close(self) -> None:
        """Release the session / engine and its memory; safe to call twice."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
