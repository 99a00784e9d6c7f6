"""A Triton Inference Server model repository from a bundle (``grmp-edge export --format triton``).

Layout (Triton's)::

    <repo>/grmp_iqa/config.pbtxt        platform onnxruntime_onnx
    <repo>/grmp_iqa/1/model.onnx        the bundle's ONNX graph for the chosen device and precision
    <repo>/grmp_iqa_trt/config.pbtxt    platform tensorrt_plan, only where the bundle has a plan
    <repo>/grmp_iqa_trt/1/model.plan

Every model takes the bundle's own input, ``image``: uint8 RGB ``(N, S, S, 3)`` preprocessed by the
client exactly as ``grmp-edge run`` does (normalisation is inside the graph), and returns ``score``,
one float per image. Triton describes a per-item scalar as ``dims: [ 1 ]`` reshaped to ``[ ]``.
Triton's dynamic batcher merges the requests of many cameras into batches of up to
``max_batch_size``: the plan's profile maximum for the plan, ``max_batch`` for the ONNX graph.
Instances run on the GPU (``KIND_GPU``) for plans and ``device="gpu"``, else on the CPU.

Nothing here needs torch or Triton; the text format is Triton's protobuf text format of
``inference.ModelConfig``, which the tests parse with the ``model_config_pb2`` that
``tritonclient[grpc]`` ships.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from grmp_edge.artifacts import atomic_write, atomic_write_text
from grmp_edge.errors import GrmpError
from grmp_edge.runtime.bundle import LoadedBundle, auto_precisions
from grmp_edge.spec import PRECISIONS, BundleFile, INPUT_NAME, OUTPUT_NAME

MODEL_NAME = "grmp_iqa"
DEVICES = {"cpu": ("onnxruntime-cpu", "KIND_CPU"), "gpu": ("onnxruntime-cuda", "KIND_GPU")}
# How long Triton may hold a request to fill a batch: a few ms against a frame period of 33 ms.
QUEUE_DELAY_US = 2000


def model_config(name: str, platform: str, size: int, max_batch: int, kind: str, instances: int = 1) -> str:
    """The ``config.pbtxt`` text of one model: ``image`` in, ``score`` out, dynamic batching."""
    if max_batch < 1:
        raise GrmpError(f"a Triton model needs max_batch_size >= 1, got {max_batch}")
    return f"""name: "{name}"
platform: "{platform}"
max_batch_size: {max_batch}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_UINT8
    dims: [ {size}, {size}, 3 ]
  }}
]
output [
  {{
    name: "{OUTPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ 1 ]
    reshape: {{ shape: [ ] }}
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {QUEUE_DELAY_US}
}}
instance_group [
  {{
    count: {instances}
    kind: {kind}
  }}
]
"""


def _add_model(repo: Path, name: str, source: Path, filename: str, config: str) -> Path:
    folder = repo / name
    atomic_write(folder / "1" / filename, lambda tmp: shutil.copyfile(source, tmp))
    atomic_write_text(folder / "config.pbtxt", config)
    return folder


def export_triton(bundle: LoadedBundle, repo: Path, device: str = "cpu", precision: str = "auto",
                  max_batch: Optional[int] = None, name: str = MODEL_NAME) -> list[Path]:
    """Write the model repository of ``bundle`` into ``repo``; returns the model folders.

    ``device`` (``cpu`` or ``gpu``) picks the ONNX file as ``grmp-edge run`` would for ONNX Runtime
    on that device at ``precision`` (``auto``: fp32 on CPUs, fp16 on GPUs) and its instance kind;
    ``max_batch`` is the ONNX model's ``max_batch_size`` (default: room for a few frames of the
    bundle's crop plan, :func:`~grmp_edge.export.options.default_batch_max`). Each plan of the bundle
    at that precision (or any, for ``auto``) becomes ``<name>_trt`` with its profile's maximum batch;
    a TensorRT plan only loads in a Triton built with the TensorRT release and for the GPU it was
    built for.
    """
    if device not in DEVICES:
        raise GrmpError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    from grmp_edge.export.options import default_batch_max

    target, kind = DEVICES[device]
    size = bundle.preprocess.size
    if max_batch is None:
        max_batch = default_batch_max(bundle.preprocess.crops)
    onnx = bundle.file_for(target, precision)
    models = [_add_model(repo, name, bundle.path_of(onnx), "model.onnx",
                         model_config(name, "onnxruntime_onnx", size, max_batch, kind))]
    plan = _plan(bundle, precision)
    if plan is not None:
        batch = bundle.sidecar(plan).get("batch", {})
        if "max" not in batch:
            raise GrmpError(f"the sidecar of {plan.path} has no batch profile; "
                            "rebuild the plan with grmp-edge export --engine")
        plan_name = f"{name}_trt"
        models.append(_add_model(repo, plan_name, bundle.verify(plan), "model.plan",
                                 model_config(plan_name, "tensorrt_plan", size, int(batch["max"]), "KIND_GPU")))
    return models


def _plan(bundle: LoadedBundle, precision: str) -> Optional[BundleFile]:
    """The bundle's best plan at ``precision`` (``auto``: the GPU order of precisions), or None."""
    for p in auto_precisions("tensorrt") if precision == "auto" else (precision,):
        found = bundle.candidates("tensorrt", p)
        if found:
            return found[0]
    return None


def serve_command(repo: Path) -> str:
    """The ``docker run`` line that serves ``repo`` with NVIDIA's Triton container (gRPC on 8001)."""
    return (f"docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 -v {repo.resolve()}:/models "
            f"nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models")


def export_repository(bundle: Optional[Path] = None, device: str = "cpu", precision: str = "auto",
                      max_batch: Optional[int] = None, name: Optional[str] = None, echo=print) -> Path:
    """``grmp-edge export --format triton``: the repository of ``bundle`` (default: the newest export)
    in ``runs/triton/<name>/``; ``echo`` gets what was written and the commands that use it."""
    from grmp_edge.runs import discard_on_failure, new_run_dir, slug
    from grmp_edge.runtime.bundle import load_bundle

    if precision != "auto" and precision not in PRECISIONS:
        raise GrmpError(f"--precision for --format triton must be auto, fp32, fp16 or int8, got {precision!r}")
    loaded = load_bundle(bundle)
    repo = new_run_dir("triton", slug(name) if name else None)
    with discard_on_failure(repo):
        models = export_triton(loaded, repo, device, precision, max_batch)
    for model in models:
        echo(f"wrote {model}/config.pbtxt and {next((model / '1').iterdir()).name}")
    echo("serve it (GPU server, NVIDIA's container; pick the release whose TensorRT built the plan):")
    echo(f"  {serve_command(repo)}")
    echo("score cameras through it:")
    echo(f"  grmp-edge run --bundle {loaded.folder} --backend triton://127.0.0.1:8001/{MODEL_NAME} --source ...")
    return repo
