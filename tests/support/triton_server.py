"""A real Triton Inference Server on 127.0.0.1 for the slow tests, from pip's ``nvidia-pytriton`` wheel.

That wheel carries ``tritonserver`` 2.51 with the Python backend only, and pins numpy < 2, which its
backend's worker also needs; this project keeps numpy 2. So the server gets its own virtual
environment (:func:`server_env`), built once from this interpreter's base Python and cached under
``~/.cache/grmp-edge`` (or ``$GRMP_EDGE_TRITON_ENV``), holding the wheel, numpy < 2 and the same
onnxruntime release as this environment, so that server and local scores come from the same engine.

:func:`as_python_backend` turns a repository from ``grmp-edge export --format triton`` into one this
server can load (see ``triton_python_model.py``); :class:`TritonServer` runs it.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from loopback import free_port

from grmp_edge.artifacts import cache_root

PYTRITON = "nvidia-pytriton==0.7.0"
REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_PY = Path(__file__).with_name("triton_python_model.py")


def _onnxruntime_version() -> str:
    from importlib.metadata import version

    return version("onnxruntime")


def server_env() -> Path:
    """The server's virtual environment (built on first use; a lock keeps parallel runs from racing)."""
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    env = Path(os.environ.get("GRMP_EDGE_TRITON_ENV")
               or cache_root() / f"triton-env-py{py}-ort{_onnxruntime_version()}")
    done = env / ".complete"
    if done.exists():
        return env
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / f".{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(env, ignore_errors=True)
            base = Path(sys.base_prefix) / "bin" / f"python{py}"
            subprocess.run([str(base), "-m", "venv", str(env)], check=True)
            subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", PYTRITON, "numpy<2",
                            f"onnxruntime=={_onnxruntime_version()}"], check=True)
            done.touch()
    return env


def _site_packages(env: Path) -> Path:
    out = subprocess.run([str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def as_python_backend(repo: Path, model: str) -> None:
    """Serve ``repo``'s ONNX model ``model`` through the Python backend (this wheel has no onnxruntime
    backend): the exported config, with only its platform swapped, plus ``1/model.py``."""
    config = repo / model / "config.pbtxt"
    text = config.read_text()
    assert 'platform: "onnxruntime_onnx"' in text, text
    config.write_text(text.replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
    shutil.copyfile(MODEL_PY, repo / model / "1" / "model.py")


class TritonServer:
    """``tritonserver`` serving ``repo`` on 127.0.0.1 (gRPC at ``.grpc``), as a context manager that
    waits until every model is ready and stops the server on exit; its log is in ``.log``."""

    def __init__(self, repo: Path, env: Path, workdir: Path):
        self.repo, self.env, self.workdir = repo, env, workdir
        self.grpc_port = free_port()
        self.grpc = f"127.0.0.1:{self.grpc_port}"
        self.log = workdir / "tritonserver.log"
        self._process: subprocess.Popen | None = None

    def _install(self) -> Path:
        """The server's files with the backend stub for this Python (as pytriton itself arranges them)."""
        site = _site_packages(self.env)
        server = self.workdir / "tritonserver"
        shutil.copytree(site / "pytriton" / "tritonserver", server,
                        ignore=shutil.ignore_patterns("python_backend_stubs"))
        py = f"{sys.version_info.major}.{sys.version_info.minor}"
        shutil.copy(site / "pytriton" / "tritonserver" / "python_backend_stubs" / py / "triton_python_backend_stub",
                    server / "backends" / "python")
        return server

    def __enter__(self) -> "TritonServer":
        import tritonclient.grpc as grpcclient

        server = self._install()
        site = _site_packages(self.env)
        # The backend's worker links libpython dynamically: this interpreter's own first, when it is
        # not the system's, so that it matches the environment's standard library.
        libs = [sysconfig.get_config_var("LIBDIR"), str(site / "nvidia_pytriton.libs")]
        env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join([*libs, os.environ.get("LD_LIBRARY_PATH", "")]),
                   PYTHONPATH=os.pathsep.join([str(site), str(REPO_ROOT)]), OMP_NUM_THREADS="1")
        args = [str(server / "bin" / "tritonserver"), f"--model-repository={self.repo}",
                f"--backend-directory={server / 'backends'}", "--grpc-address=127.0.0.1",
                f"--grpc-port={self.grpc_port}", "--http-address=127.0.0.1", f"--http-port={free_port()}",
                "--allow-metrics=false", "--exit-timeout-secs=5"]
        self._log_file = open(self.log, "w")
        self._process = subprocess.Popen(args, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)
        client = grpcclient.InferenceServerClient(self.grpc)
        try:
            deadline = time.monotonic() + 120
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(f"tritonserver exited ({self._process.returncode}):\n{self.log.read_text()[-3000:]}")
                with contextlib.suppress(Exception):
                    if client.is_server_ready(client_timeout=1):
                        return self
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tritonserver not ready after 120 s:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.2)
        except BaseException:
            self.__exit__()
            raise
        finally:
            client.close()

    def __exit__(self, *exc) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log_file.close()
