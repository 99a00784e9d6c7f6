"""A backend whose model runs on a Triton Inference Server: ``grmp-edge run --backend triton://HOST:PORT/MODEL``.

The server holds the model (a repository from ``grmp-edge export --format triton``); this process
captures, preprocesses (with the bundle's spec, as for a local engine), sends the uint8 ``image``
batch over gRPC and gets ``score`` back, so sources, smoothing, events and sinks work as they do
locally. Needs ``tritonclient[grpc]`` (``pip install 'grmp-edge[triton]'``).
"""
from __future__ import annotations

import re
from typing import Optional

import numpy as np

from grmp_edge.errors import GrmpError, require
from grmp_edge.spec import INPUT_NAME, OUTPUT_NAME
from grmp_edge.preprocess import check_image_batch
from grmp_edge.runtime.backend import Backend

TRITON_SCHEME = "triton://"
DEFAULT_GRPC_PORT = 8001
# Long enough for a first request that makes the server build or load an engine, short enough
# that a hung server is reported rather than waited on forever.
TIMEOUT_S = 30.0


def parse_triton_url(text: str) -> tuple[str, str]:
    """``triton://HOST[:PORT]/MODEL`` -> ``("HOST:PORT", MODEL)`` (port 8001, Triton's gRPC default)."""
    match = re.fullmatch(r"triton://([^/:]+|\[[^\]]+\])(?::(\d+))?/([A-Za-z0-9_.-]+)/?", text)
    if not match:
        raise GrmpError(f"--backend triton:// must look like triton://HOST:PORT/MODEL, got {text!r}")
    host, port, model = match.groups()
    return f"{host}:{port or DEFAULT_GRPC_PORT}", model


def _first_line(exc: Exception) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return (text or type(exc).__name__).strip().splitlines()[0]


class TritonBackend(Backend):
    """The model ``model`` on the Triton server at ``url`` (gRPC), checked at open: the server must be
    live, the model ready, and its ``image`` input uint8 ``(size, size, 3)``. ``max_batch`` is the
    model's ``max_batch_size``."""

    name = "triton"

    def __init__(self, url: str, model: str, size: int, timeout: float = TIMEOUT_S):
        self._grpc = require("tritonclient.grpc", "triton")
        self.url, self.model, self._size, self._timeout = url, model, size, timeout
        self._client: Optional[object] = self._grpc.InferenceServerClient(url)
        try:
            self._client.is_server_live(client_timeout=timeout)
        except Exception as exc:  # tritonclient raises InferenceServerException for every transport error
            self.close()
            raise GrmpError(f"no Triton server answers at {url} (gRPC): {_first_line(exc)}") from None
        try:
            ready = self._client.is_model_ready(model, client_timeout=timeout)
            index = [m.name for m in self._client.get_model_repository_index(client_timeout=timeout).models]
        except Exception as exc:
            self.close()
            raise GrmpError(f"Triton at {url} could not say whether model {model!r} is ready: "
                            f"{_first_line(exc)}") from None
        if not ready:
            self.close()
            raise GrmpError(f"Triton at {url} has no ready model {model!r}; its repository holds: "
                            f"{', '.join(index) or 'nothing'}")
        config = self._client.get_model_config(model, client_timeout=timeout).config
        self._check_config(config)
        self.max_batch = config.max_batch_size or None
        self.platform = config.platform or config.backend
        self.precision = "server"
        self.reason = "asked for triton"

    def _check_config(self, config) -> None:
        inputs = {i.name: i for i in config.input}
        outputs = {o.name for o in config.output}
        image = inputs.get(INPUT_NAME)
        if image is None or OUTPUT_NAME not in outputs:
            raise GrmpError(f"Triton model {self.model!r} is not a grmp-edge model: expected input {INPUT_NAME} "
                            f"and output {OUTPUT_NAME}, got inputs {sorted(inputs)} and outputs {sorted(outputs)}")
        if list(image.dims) != [self._size, self._size, 3]:
            raise GrmpError(f"Triton model {self.model!r} takes {list(image.dims)} images but the bundle's "
                            f"preprocessing makes [{self._size}, {self._size}, 3]; serve this bundle's repository")

    def infer(self, batch_uint8_nhwc: np.ndarray) -> np.ndarray:
        batch = check_image_batch(batch_uint8_nhwc, self._size, self.max_batch)
        image = self._grpc.InferInput(INPUT_NAME, list(batch.shape), "UINT8")
        image.set_data_from_numpy(batch)
        try:
            result = self._client.infer(self.model, [image], outputs=[self._grpc.InferRequestedOutput(OUTPUT_NAME)],
                                        client_timeout=self._timeout)
        except Exception as exc:
            raise GrmpError(f"Triton at {self.url} failed to score a batch with {self.model!r}: "
                            f"{_first_line(exc)}") from None
        return np.asarray(result.as_numpy(OUTPUT_NAME), dtype=np.float32).reshape(len(batch))

    def describe(self) -> str:
        return f"triton {self.model} at {self.url} ({self.platform}, max batch {self.max_batch or 'none'})"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def open_triton(url: str, size: int) -> TritonBackend:
    """The :class:`TritonBackend` a ``triton://HOST:PORT/MODEL`` text names, for ``size`` crops."""
    address, model = parse_triton_url(url)
    return TritonBackend(address, model, size)
