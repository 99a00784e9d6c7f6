"""A Triton Python-backend model that scores with grmp-edge's own ONNX Runtime backend.

Triton's onnxruntime backend ships only in NVIDIA's containers; the tritonserver that pip's
``nvidia-pytriton`` wheel carries has the Python backend alone. The slow Triton test copies this file
to ``<repo>/<model>/1/model.py`` beside the exported ``model.onnx`` and switches the exported
config from ``platform: "onnxruntime_onnx"`` to ``backend: "python"``: the server then loads the
repository ``grmp-edge export --format triton`` wrote, with its batching, inputs and outputs, and the
scores come from the same graph and engine as local runs.
"""
import json
import os
import sys
from pathlib import Path

# The backend's stub embeds Python without reading PYTHONPATH; the test puts its server environment
# (numpy < 2, onnxruntime) and this checkout there, so add them by hand before the imports below.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]

import numpy as np  # noqa: E402 (after the path fix above)
import triton_python_backend_utils as pb_utils  # noqa: E402 (provided by the Python backend's stub)

from grmp_edge.runtime.onnxruntime_backend import CPU_EP, OnnxRuntimeBackend  # noqa: E402
from grmp_edge.spec import INPUT_NAME, OUTPUT_NAME, BundleFile  # noqa: E402


class TritonPythonModel:
    """Triton's Python-backend interface: ``initialize``, ``execute`` (a list of requests), ``finalize``."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        size = int(next(i for i in config["input"] if i["name"] == INPUT_NAME)["dims"][0])
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.engine = OnnxRuntimeBackend(path, BundleFile(path.name, "", "fp32"), size, [CPU_EP])

    def execute(self, requests):
        # The dynamic batcher hands over several requests at once: one engine call for all of them.
        images = [pb_utils.get_input_tensor_by_name(r, INPUT_NAME).as_numpy() for r in requests]
        scores = self.engine.infer(np.concatenate(images))
        ends = np.cumsum([len(i) for i in images])
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT_NAME, part.astype(np.float32))])
                for part in np.split(scores, ends[:-1])]

    def finalize(self):
        self.engine.close()
