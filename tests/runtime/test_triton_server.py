"""A real Triton server (tritonserver 2.51 from pip's nvidia-pytriton, Python backend, CPU) serving the
repository that ``grmp-edge export --format triton`` writes from the quickstart bundle: scores through
tritonclient and through ``grmp-edge run --backend triton://`` equal local ONNX Runtime's.

The bundle is ``$GRMP_EDGE_QUICKSTART_BUNDLE`` when set (a finished ``runs/export/quickstart``),
else made here with ``grmp-edge quickstart --fast`` (minutes). The server's environment is built
once and cached (see ``tests/support/triton_server.py``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

grpcclient = pytest.importorskip("tritonclient.grpc")

import triton_server  # noqa: E402
from loopback import free_port  # noqa: E402

from grmp_edge.export.options import default_batch_max  # noqa: E402
from grmp_edge.export.triton import MODEL_NAME  # noqa: E402
from grmp_edge.runtime.backends import open_backend  # noqa: E402
from grmp_edge.runtime.bundle import load_bundle  # noqa: E402

TOLERANCE = 1e-6


def grmp_edge(args: list[str], runs: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, GRMP_EDGE_RUNS=str(runs), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "grmp_edge.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quickstart_bundle(tmp_path_factory) -> Path:
    given = os.environ.get("GRMP_EDGE_QUICKSTART_BUNDLE")
    if given:
        return Path(given)
    runs = tmp_path_factory.mktemp("quickstart") / "runs"
    done = grmp_edge(["quickstart", "--fast"], runs, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return runs / "export" / "quickstart"


@pytest.fixture(scope="module")
def served(quickstart_bundle, tmp_path_factory):
    """The quickstart bundle's exported repository, served: ``(server, bundle folder)``."""
    root = tmp_path_factory.mktemp("triton")
    done = grmp_edge(["export", "--format", "triton", "--bundle", str(quickstart_bundle), "--name", "qs"], root / "runs")
    assert done.returncode == 0, done.stderr
    repo = root / "runs" / "triton" / "qs"
    triton_server.as_python_backend(repo, MODEL_NAME)
    with triton_server.TritonServer(repo, triton_server.server_env(), root) as server:
        yield server, quickstart_bundle


def test_tritonclient_scores_equal_local_onnxruntime(served):
    server, bundle = served
    loaded = load_bundle(bundle)
    size = loaded.preprocess.size
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8) for n in (1, 3, 8)]
    local = open_backend(loaded, backend="onnxruntime", precision="fp32")
    client = grpcclient.InferenceServerClient(server.grpc)
    try:
        config = client.get_model_config(MODEL_NAME).config
        # the exported config, platform swapped; max_batch_size defaults to four frames of the crop plan
        assert config.backend == "python" and config.max_batch_size == default_batch_max(loaded.preprocess.crops)
        for batch in batches:
            image = grpcclient.InferInput("image", list(batch.shape), "UINT8")
            image.set_data_from_numpy(batch)
            served_scores = client.infer(MODEL_NAME, [image]).as_numpy("score").reshape(-1)
            np.testing.assert_allclose(served_scores, local.infer(batch), rtol=0, atol=TOLERANCE)
    finally:
        client.close()
        local.close()


def test_run_with_a_triton_backend_scores_a_folder_like_the_local_engine(served, image_folder, tmp_path):
    server, bundle = served
    common = ["run", "--bundle", str(bundle), "--source", str(image_folder), "--no-save", "--alpha", "1"]
    remote = grmp_edge([*common, "--backend", f"triton://{server.grpc}/{MODEL_NAME}"], tmp_path / "runs")
    assert remote.returncode == 0, remote.stderr
    assert f"backend triton {MODEL_NAME} at {server.grpc}" in remote.stderr
    local = grmp_edge([*common, "--backend", "onnxruntime", "--precision", "fp32"], tmp_path / "runs")
    assert local.returncode == 0, local.stderr
    remote_records = [json.loads(line) for line in remote.stdout.splitlines()]
    local_records = [json.loads(line) for line in local.stdout.splitlines()]
    assert [r["path"] for r in remote_records] == [r["path"] for r in local_records] and len(remote_records) == 5
    np.testing.assert_allclose([r["score"] for r in remote_records], [r["score"] for r in local_records],
                               rtol=0, atol=TOLERANCE)


def test_absent_model_and_absent_server_are_one_line_errors(served, image_folder, tmp_path):
    server, bundle = served
    for url, message in ((f"triton://{server.grpc}/nope", f"has no ready model 'nope'; its repository holds: {MODEL_NAME}"),
                         (f"triton://127.0.0.1:{free_port()}/{MODEL_NAME}", "no Triton server answers")):
        done = grmp_edge(["run", "--bundle", str(bundle), "--source", str(image_folder), "--no-save",
                          "--backend", url], tmp_path / "runs")
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
