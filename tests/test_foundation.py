"""CLI skeleton, doctor, runs/ convention, atomic writes, and the torch-free boundary."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest

from grmp_edge import artifacts, runs
from grmp_edge.cli import main
from grmp_edge.errors import GrmpError, require

BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "open_clip", "torchvision", "onnx"}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
"""


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("data", "train", "eval", "export", "run", "bench", "quickstart", "doctor"):
        assert command in out


def test_doctor_reports_components(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for piece in ("Python", "torch", "onnxruntime", "tensorrt", "opencv", "GStreamer"):
        assert piece in out
    assert "grmp-edge[tensorrt]" in out  # TensorRT cannot be installed here: its extra is named


def test_user_error_is_one_line_and_exit_2(tmp_runs):
    proc = subprocess.run([sys.executable, "-m", "grmp_edge.cli", "export"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_require_names_the_extra():
    with pytest.raises(GrmpError, match=r"grmp-edge\[tensorrt\]"):
        require("tensorrt")


def test_runs_convention(tmp_runs):
    first = runs.new_run_dir("train")
    second = runs.new_run_dir("train")
    assert (first.name, second.name) == ("exp", "exp2")
    (first / "best").mkdir()
    (first / "best" / "spec.json").write_text("{}")
    assert runs.latest_run("train", "best/spec.json") == first
    time.sleep(0.01)
    (second / "best").mkdir()
    (second / "best" / "spec.json").write_text("{}")
    os.utime(second / "best" / "spec.json", (time.time() + 5, time.time() + 5))
    assert runs.latest_run("train", "best/spec.json") == second
    with pytest.raises(GrmpError, match="no export run"):
        runs.latest_run("export")
    with pytest.raises(GrmpError, match="already exists"):
        runs.new_run_dir("train", "exp")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    artifacts.atomic_write_bytes(target, b"old")

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        artifacts.atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    assert artifacts.sha256_file(target) == hashlib.sha256(b"old").hexdigest()


def test_edge_modules_import_without_torch():
    code = BLOCKER + "\n".join([
        "import grmp_edge.runtime, grmp_edge.spec, grmp_edge.metrics, grmp_edge.data",
        "import pkgutil, importlib",
        "for pkg in (grmp_edge.runtime, grmp_edge.data):",
        "    for m in pkgutil.iter_modules(pkg.__path__):",
        "        importlib.import_module(pkg.__name__ + '.' + m.name)",
        "print('ok')",
    ])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_atomic_write_gives_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = artifacts.atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
