"""Hostile input: what a careless or hostile user, a camera or a disk can hand the CLI.

Table-driven: one row per class of bad input and per command that reads it. Each row asserts the
exact exit status, the ``error:`` line that names the problem (no traceback), and that no file under
the test's folder was created or changed. Each reported case has a row or a test
below that fails on the code before the fix (noted per case).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import tiny_bundle
from PIL import Image

from grmp_edge import limits
from grmp_edge.artifacts import replace_folder
from grmp_edge.cli import main
from grmp_edge.images import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, read_rgb

GOOD = 24


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256: equal before and after means nothing changed."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def make_world(root: Path) -> dict[str, Path]:
    """A bundle, a folder of good and hostile images, manifests and a random grmp-tiny checkpoint."""
    rng = np.random.default_rng(0)
    good = root / "good"
    good.mkdir(parents=True)
    for i in range(GOOD):
        cv2.imwrite(str(good / f"{i}.png"), rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    mixed = root / "mixed"
    mixed.mkdir()
    for i in range(GOOD):
        (mixed / f"good{i}.png").write_bytes((good / f"{i}.png").read_bytes())
    # A decompression bomb: 20000 x 20000 grey zeros, a few hundred KB on disk.
    png_bomb(mixed / "bomb.png")
    # A 16-bit grey PNG at 40000: once scored as white (clipped), it must come out as round(40000 / 257) = 156.
    Image.fromarray(np.full((40, 48), 40000, np.uint16)).save(mixed / "wide16.png")
    jpeg = cv2.imencode(".jpg", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))[1].tobytes()
    (mixed / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    bundle = tiny_bundle.make_bundle(root / "bundle")
    rows = [f"{i}.png,{(i + 1) / 20}" for i in range(GOOD)]
    (good / "manifest.csv").write_text("image,score\n" + "\n".join(rows) + "\n")
    bombs = root / "bombs"  # good images and the bomb only: the one hostile file each command must refuse
    bombs.mkdir()
    for name in ("good0.png", "good1.png", "good2.png", "good3.png", "bomb.png"):
        (bombs / name).write_bytes((mixed / name).read_bytes())
    bad = root / "bad.csv"
    # Every one of its 25 rows is read by train --shots 20 (5 test images, all 20 of the pool as shots).
    bad.write_text("image,score\n" + "".join(f"good/{i}.png,{(i + 1) / 20}\n" for i in range(GOOD))
                   + "bombs/bomb.png,0.5\n")
    return {"root": root, "good": good, "mixed": mixed, "bombs": bombs, "bundle": bundle, "bad": bad,
            "manifest": good / "manifest.csv"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random grmp-tiny checkpoint (no training needed to read images through it)."""
    torch = pytest.importorskip("torch")
    from grmp_edge.train.backbones import model_spec
    from grmp_edge.train.checkpoint import save_checkpoint
    from grmp_edge.train.model import build_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt") / "best"
    save_checkpoint(build_model(model_spec("grmp-tiny", None, vpt_tokens=2)).eval(), folder)
    return folder


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, message: str) -> None:
    """One ``error:`` line, no traceback; the message is on it (or, for a manifest, on the indented
    list of its bad rows that follows it)."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(starts) == 1, err
    block = [lines[starts[0]], *(line for line in lines[starts[0] + 1:] if line.startswith("  "))]
    assert message in "\n".join(block), err


def png_bomb(path: Path, side: int = 20000) -> Path:
    """A grey PNG of ``side`` x ``side`` zeros, compressed row by row (a few hundred KB on disk)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pack = zlib.compressobj(1)
    row = bytes(side + 1)  # filter byte + pixels
    data = b"".join(pack.compress(row) for _ in range(side)) + pack.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


# --- rows: (id, argv with {placeholders}, exit status, message in the error line) -----------------

BOMB = "over the 64 MP limit"
ROWS = [
    # 1. decompression bombs, in every command that decodes images (before: Pillow's
    #    DecompressionBombError escaped as a traceback from each of these; train and export also left
    #    their run folder behind, config.json and an empty bundle folder: case 5)
    ("bomb-validate", ["data", "validate", "{bad}", "--check-images"], 2, BOMB),
    ("bomb-bench", ["bench", "--bundle", "{bundle}", "--data", "{bad}"], 2, BOMB),
    ("bomb-eval", ["eval", "--data", "{bad}", "--checkpoint", "{checkpoint}", "--device", "cpu"], 2, BOMB),
    ("bomb-export-calib", ["export", "--checkpoint", "{checkpoint}", "--calib", "{bombs}", "--precision", "fp32",
                           "--name", "b"], 2, BOMB),
    ("bomb-train", ["train", "--data", "{bad}", "--checkpoint", "{checkpoint}", "--shots", "20", "--splits", "1",
                    "--val-size", "0", "--epochs", "1", "--name", "t"], 2, BOMB),
    ("bomb-limit-zero", ["--max-image-pixels", "0", "data", "validate", "{manifest}"], 2,
     "--max-image-pixels must be >= 1"),
    # 2. unbounded options (before: --crops 100000 allocated until the kernel killed the process)
    ("run-crops-huge", ["run", "--bundle", "{bundle}", "--source", "{good}", "--crops", "100000"], 2,
     "--crops must be between 1 and 1024, got 100000"),
    ("run-crops-zero", ["run", "--bundle", "{bundle}", "--source", "{good}", "--crops", "0"], 2, "--crops must be"),
    ("run-stdin-size-huge", ["run", "--bundle", "{bundle}", "--source", "-", "--stdin-size", "100000x100000"], 2,
     "--stdin-size width must be between 1 and 16384"),
    # 7. options that reached Python unchecked (before: OverflowError / ValueError tracebacks)
    ("run-port", ["run", "--bundle", "{bundle}", "--source", "{good}", "--metrics-port", "70000"], 2,
     "--metrics-port must be between 0 and 65535"),
    ("run-threads", ["run", "--bundle", "{bundle}", "--source", "{good}", "--threads", "0"], 2, "--threads must be"),
    ("run-duration-nan", ["run", "--bundle", "{bundle}", "--source", "{good}", "--duration", "nan"], 2,
     "--duration must be a finite number"),
    ("run-csi-flip", ["run", "--bundle", "{bundle}", "--source", "{good}", "--csi-flip", "9"], 2, "--csi-flip must be"),
    ("run-batch-window", ["run", "--bundle", "{bundle}", "--source", "{good}", "--batch-window-ms", "5000"], 2,
     "--batch-window-ms must be between 0 and 1000"),
    ("bench-batch-zero", ["bench", "--bundle", "{bundle}", "--data", "{manifest}", "--batch", "0"], 2,
     "--batch must be between 1"),
    ("bench-iters", ["bench", "--bundle", "{bundle}", "--data", "{manifest}", "--iters", "0"], 2, "--iters must be"),
    ("eval-batch", ["eval", "--data", "{manifest}", "--checkpoint", "{checkpoint}", "--batch-size", "0"], 2,
     "--batch-size must be"),
    ("train-lr-nan", ["train", "--data", "{manifest}", "--checkpoint", "{checkpoint}", "--lr", "nan"], 2,
     "--lr must be a finite number"),
    ("train-workers", ["train", "--data", "{manifest}", "--checkpoint", "{checkpoint}", "--workers", "-1"], 2,
     "--workers must be"),
    ("train-checkpoint-model", ["train", "--data", "{manifest}", "--checkpoint", "{checkpoint}", "--vpt-tokens", "100"],
     2, "differs from the checkpoint's 2"),
    ("export-batch-max", ["export", "--checkpoint", "{checkpoint}", "--batch-max", "100000"], 2, "--batch-max must be"),
    ("export-workspace-inf", ["export", "--checkpoint", "{checkpoint}", "--workspace-gib", "inf"], 2,
     "--workspace-gib must be a finite number"),
    # 3. outputs that would replace a file the command did not create (before: exit 0, manifest gone)
    ("run-jsonl-over-manifest", ["run", "--bundle", "{bundle}", "--source", "{good}", "--jsonl",
                                 "{bundle}/manifest.json"], 2, "already exists; pass --overwrite"),
    ("run-csv-over-file", ["run", "--bundle", "{bundle}", "--source", "{good}", "--csv", "{manifest}"], 2,
     "already exists; pass --overwrite"),
    ("run-video-over-file", ["run", "--bundle", "{bundle}", "--source", "{good}", "--save-video",
                             "{good}/0.png"], 2, "already exists"),
    ("run-two-outputs-one-file", ["run", "--bundle", "{bundle}", "--source", "{good}", "--jsonl", "{root}/o.txt",
                                  "--csv", "{root}/o.txt"], 2, "name the same file"),
    ("run-output-is-folder", ["run", "--bundle", "{bundle}", "--source", "{good}", "--jsonl", "{good}"], 2,
     "is a folder"),
    ("import-out-over-file", ["data", "import", "koniq", "{manifest}", "--images", "{good}", "--out", "{bad}"], 2,
     "already exists; pass --overwrite"),
    # 6. failures that exited 0 (before: an all-corrupt folder "succeeded" with 0 frames)
    ("run-nothing-decodable", ["run", "--bundle", "{bundle}", "--source", "{mixed}/bomb.png", "--no-save"], 2,
     "no frame was scored (1 corrupt"),
]


@pytest.mark.parametrize("argv, status, message", [pytest.param(*row[1:], id=row[0]) for row in ROWS])
def test_hostile_input_is_one_line_and_changes_nothing(world, checkpoint, tmp_path, monkeypatch, capsys,
                                                        argv, status, message):
    monkeypatch.setenv("GRMP_EDGE_RUNS", str(world["root"] / "runs"))
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    values = {**{k: str(v) for k, v in world.items()}, "checkpoint": str(checkpoint)}
    before = {**tree(world["root"]), **{f"ckpt/{k}": v for k, v in tree(checkpoint).items()}}
    code, _, err = run_cli(capsys, [arg.format(**values) for arg in argv])
    assert code == status, err
    assert_one_line_error(err, message)
    after = {**tree(world["root"]), **{f"ckpt/{k}": v for k, v in tree(checkpoint).items()}}
    assert after == before


# --- 1 + 4 + done-when: a live run over a folder of good and hostile images --------------------

def test_run_scores_good_and_16_bit_images_and_counts_bomb_and_truncated_jpeg(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GRMP_EDGE_RUNS", str(tmp_path / "runs"))
    code, out, err = run_cli(capsys, ["run", "--bundle", str(world["bundle"]), "--source", str(world["mixed"]),
                                      "--name", "mixed"])
    assert code == 0, err
    assert "Traceback" not in err
    records = [json.loads(line) for line in out.splitlines()]
    scored = {Path(r["path"]).name: r["score"] for r in records}
    assert set(scored) == {f"good{i}.png" for i in range(GOOD)} | {"wide16.png"}
    # The tiny graph scores sigmoid(mean / 255): a 16-bit mid grey must not score as white.
    expected = tiny_bundle.reference_scores(np.full((1, 8, 8, 3), round(40000 / 257), np.uint8))[0]
    assert scored["wide16.png"] == pytest.approx(float(expected), abs=1e-5)
    summary = json.loads((tmp_path / "runs" / "run" / "mixed" / "summary.json").read_text())
    assert summary["corrupt"] == 2 and summary["frames"] == GOOD + 1
    assert "corrupt 2" in err


# --- 4: the decoder maps every depth and layout to the same 8-bit RGB ---------------------------

def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    if array.dtype == np.uint16 and array.ndim == 3:
        cv2.imwrite(str(path), array[..., [2, 1, 0, 3][: array.shape[2]]])  # OpenCV writes BGR(A)
    else:
        Image.fromarray(array).convert(mode or Image.fromarray(array).mode).save(path)
    return path


@pytest.mark.parametrize("layout", ["grey16", "rgb16", "rgba16", "grey8", "rgb8", "rgba8", "palette", "ppm16"])
def test_every_layout_decodes_to_the_same_rgb(tmp_path, layout):
    rng = np.random.default_rng(1)
    wide = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
    if layout.endswith("16"):
        expected = np.repeat(((wide.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)[..., None], 3, 2)
        colour = np.repeat(wide[..., None], 3, 2)
        source = {"grey16": lambda: _save(tmp_path / "x.png", wide),
                  "rgb16": lambda: _save(tmp_path / "x.png", colour),
                  "rgba16": lambda: _save(tmp_path / "x.png", np.concatenate([colour, wide[..., None]], 2)),
                  "ppm16": lambda: (cv2.imwrite(str(tmp_path / "x.ppm"), colour), tmp_path / "x.ppm")[1]}[layout]()
    else:
        expected = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
        if layout == "grey8":
            expected[..., 1] = expected[..., 2] = expected[..., 0]
            source = _save(tmp_path / "x.png", np.ascontiguousarray(expected[..., 0]))
        elif layout == "rgba8":
            source = _save(tmp_path / "x.png", np.concatenate([expected, np.zeros((6, 7, 1), np.uint8)], 2))
        elif layout == "palette":
            source = _save(tmp_path / "x.png", expected, "P")
            expected = np.asarray(Image.open(source).convert("RGB"))
        else:
            source = _save(tmp_path / "x.png", expected)
    assert read_rgb(source).tolist() == expected.tolist()


def test_16_bit_extremes_scale_not_clip(tmp_path):
    values = np.array([[0, 128, 129, 257, 32896, 65535]], np.uint16)
    assert read_rgb(_save(tmp_path / "x.png", values))[0, :, 0].tolist() == [0, 0, 1, 1, 128, 255]


def test_pixel_limit_is_raisable_and_refused_before_decoding(tmp_path, monkeypatch):
    path = _save(tmp_path / "big.png", np.zeros((100, 100), np.uint8))
    monkeypatch.setenv(MAX_PIXELS_ENV, "9999")
    with pytest.raises(Exception, match="over the 0.009999 MP limit"):
        read_rgb(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "10000")
    assert read_rgb(path).shape == (100, 100, 3)
    assert DEFAULT_MAX_PIXELS == 64_000_000  # the README documents this number


# --- 2: memory-heavy options have a ceiling derived from this machine ---------------------------

def test_crops_within_range_but_beyond_this_machines_memory_are_refused(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GRMP_EDGE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(limits, "available_memory", lambda: 64 << 20)  # a 64 MiB device
    code, _, err = run_cli(capsys, ["run", "--bundle", str(world["bundle"]), "--source", str(world["good"]),
                                    "--crops", "1000"])
    assert code == 2
    assert_one_line_error(err, "--crops 1000 needs about")
    assert "available here; use at most" in err
    assert not (tmp_path / "runs").exists()


# --- 3: --overwrite is the way to replace an output --------------------------------------------

def test_overwrite_replaces_an_existing_output(world, tmp_path, monkeypatch, capsys):
    target = tmp_path / "scores.jsonl"
    target.write_text("old\n")
    code, out, err = run_cli(capsys, ["run", "--bundle", str(world["bundle"]), "--source", str(world["good"]),
                                      "--no-save", "--quiet", "--jsonl", str(target), "--overwrite"])
    assert code == 0, err
    assert len(target.read_text().splitlines()) == GOOD


# --- 5: interrupted export leaves nothing; --force replaces only a finished bundle -------------

def _grmp(*argv: str, env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "grmp_edge.cli", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def _wait_for(ready, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)


@pytest.mark.slow  # a real export process (torch import, model load): ~10 s
def test_sigterm_during_export_leaves_no_folder_and_no_partial(world, checkpoint, tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "GRMP_EDGE_RUNS": str(runs)}
    proc = _grmp("export", "--checkpoint", str(checkpoint), "--calib", str(world["good"]), "--precision", "all",
                 "--num-calib", "16", "--num-eval", "64", "--name", "x", env=env)
    _wait_for(lambda: bool(list(runs.glob("export/.x.partial-*"))), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    assert "stopped by SIGTERM" in err.decode() and "Traceback" not in err.decode()
    assert list((runs / "export").iterdir()) == []  # neither x/ nor .x.partial-PID


def test_taken_bundle_name_names_force_and_a_failed_forced_export_keeps_the_old_bundle(world, checkpoint, tmp_path,
                                                                                        monkeypatch, capsys):
    monkeypatch.setenv("GRMP_EDGE_RUNS", str(tmp_path / "runs"))
    old = tiny_bundle.make_bundle(tmp_path / "runs" / "export" / "x")
    before = tree(old)
    base = ["export", "--checkpoint", str(checkpoint), "--name", "x", "--precision", "fp32"]
    code, _, err = run_cli(capsys, base)
    assert code == 2
    assert_one_line_error(err, "already exists; pick another --name, or pass --force to replace it")
    code, _, err = run_cli(capsys, [*base, "--force", "--calib", str(world["bombs"])])  # fails on the bomb
    assert code == 2
    assert_one_line_error(err, BOMB)
    assert tree(old) == before
    assert sorted(p.name for p in (tmp_path / "runs" / "export").iterdir()) == ["x"]


def test_replace_folder_swaps_a_finished_folder_in(tmp_path):
    old, new = tmp_path / "x", tmp_path / ".x.new"
    old.mkdir()
    (old / "a").write_text("old")
    new.mkdir()
    (new / "b").write_text("new")
    assert replace_folder(new, old) == old
    assert [p.name for p in tmp_path.iterdir()] == ["x"] and (old / "b").read_text() == "new"


@pytest.mark.slow
def test_train_from_a_checkpoint_records_the_model_it_trained(world, checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GRMP_EDGE_RUNS", str(tmp_path / "runs"))
    code, _, err = run_cli(capsys, ["train", "--data", str(world["manifest"]), "--checkpoint", str(checkpoint),
                                    "--shots", "12", "--splits", "1", "--val-size", "0", "--epochs", "1", "--name", "t"])
    assert code == 0, err
    config = json.loads((tmp_path / "runs" / "train" / "t" / "config.json").read_text())
    # The model actually trained: the checkpoint's, not the paper's ViT-B-16 / 100 tokens.
    assert (config["backbone"], config["vpt_tokens"]) == ("grmp-tiny", 2)


# --- 6: signals: drained, summarised, and the shell's exit status ------------------------------

@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_run_stopped_by_a_signal_writes_its_summary_and_exits_128_plus_signal(world, tmp_path, sig, status):
    runs = tmp_path / "runs"
    env = {**os.environ, "GRMP_EDGE_RUNS": str(runs)}
    proc = _grmp("run", "--bundle", str(world["bundle"]), "--source", "-", "--stdin-size", "8x8", "--name", "s",
                 env=env, stdin=subprocess.PIPE)
    proc.stdin.write(bytes(8 * 8 * 3 * 2))
    proc.stdin.flush()
    frames = runs / "run" / "s" / "frames.jsonl"
    _wait_for(lambda: frames.exists() and len(frames.read_text().splitlines()) == 2, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == status, err.decode()
    summary = json.loads((runs / "run" / "s" / "summary.json").read_text())
    assert summary["frames"] == 2 and summary["stopped_by"] == signal.Signals(sig).name
    assert len(out.decode().splitlines()) == 2  # every scored line reached stdout


def test_run_on_empty_stdin_is_an_error(world, tmp_path):
    env = {**os.environ, "GRMP_EDGE_RUNS": str(tmp_path / "runs")}
    proc = _grmp("run", "--bundle", str(world["bundle"]), "--source", "-", "--stdin-size", "8x8", "--no-save",
                 env=env, stdin=subprocess.DEVNULL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err.decode()
    assert_one_line_error(err.decode(), "no frame was scored")


def test_bench_with_every_variant_failed_exits_non_zero(world, tmp_path, monkeypatch, capsys):
    from grmp_edge.report import bench as bench_lib

    def broken(v, common, workdir, timeout):
        v.status, v.reason = "failed", "crashed (exit 1): broken on purpose"

    monkeypatch.setenv("GRMP_EDGE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(bench_lib, "_run_variant", broken)
    code, _, err = run_cli(capsys, ["bench", "--bundle", str(world["bundle"]), "--data", str(world["manifest"]),
                                    "--name", "b"])
    assert code == 2
    assert_one_line_error(err, "every variant failed or was skipped")
    assert (tmp_path / "runs" / "bench" / "b" / "report.json").is_file()  # the reasons are kept


# --- 7: a bundle whose manifest describes something no backend can hold -------------------------

@pytest.mark.parametrize("edit, message", [
    (lambda m: m["files"][0].update(precision="fp64"), "names precision 'fp64'"),
    (lambda m: m["files"][0].update(format="exe"), "names format 'exe'"),
    (lambda m: m["model"]["preprocess"].update(size=10**9, resize=10**9), "preprocess size must be"),
    (lambda m: m["model"]["preprocess"].update(std=[0, 1, 1]), "preprocess std must be > 0"),
    (lambda m: m.pop("model"), "is malformed"),
    (lambda m: m.update(files="model_fp32.onnx"), "is malformed"),
], ids=["precision", "format", "size", "std", "no-model", "files-not-a-list"])
def test_tampered_bundle_spec_is_one_line(world, tmp_path, capsys, edit, message):
    bundle = tiny_bundle.make_bundle(tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    before = tree(tmp_path)
    code, _, err = run_cli(capsys, ["run", "--bundle", str(bundle), "--source", str(world["good"]), "--no-save"])
    assert code == 2
    assert_one_line_error(err, message)
    assert tree(tmp_path) == before
