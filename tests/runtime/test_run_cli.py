"""``grmp-edge run`` end to end on a real (tiny) ONNX bundle through ONNX Runtime."""
from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time

import numpy as np
import pytest
import tiny_bundle

from grmp_edge.cli import main


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_video_scores_every_frame_to_stdout_and_the_run_folder(bundle, video, tmp_runs, capsys):
    assert main(["run", "--bundle", str(bundle), "--source", str(video), "--name", "cam"]) == 0
    out, err = capsys.readouterr()
    records = _lines(out)
    assert [r["frame"] for r in records] == list(range(24))
    assert set(records[0]) == {"frame", "ts", "media_s", "score", "smoothed", "event", "latency_ms"}
    assert [r["media_s"] for r in records] == pytest.approx([i / 10 for i in range(24)])  # a 10 fps file
    assert 0 < records[0]["score"] < 1
    assert "backend onnxruntime-cpu fp32 model_fp32.onnx" in err
    assert "24 frames" in err and "stopped by end of source" in err
    run_dir = tmp_runs / "run" / "cam"
    assert _lines((run_dir / "frames.jsonl").read_text()) == records
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["frames"] == 24 and summary["backend"] == "onnxruntime-cpu" and summary["precision"] == "fp32"
    assert summary["command"].startswith("grmp-edge ")


def test_int8_precision_crops_and_stride(bundle, video, tmp_runs, capsys):
    assert main(["run", "--bundle", str(bundle), "--source", str(video), "--precision", "int8",
                 "--crops", "3", "--stride", "2", "--max-frames", "3", "--no-save"]) == 0
    out, err = capsys.readouterr()
    assert [r["frame"] for r in _lines(out)] == [0, 2, 4] and "onnxruntime-cpu int8 model_int8_cpu.onnx" in err
    assert not (tmp_runs / "run").exists()


def test_crops_default_to_the_bundles_plan_and_the_option_overrides_it(bundle_factory, tmp_path, tmp_runs, capsys):
    from PIL import Image

    from grmp_edge.preprocess import native_crops, preprocess
    from grmp_edge.spec import BundleManifest

    bundle = bundle_factory(tmp_path / "planned", crops=4)
    spec = BundleManifest.load(bundle / "manifest.json").preprocess
    # A left-to-right ramp: the corner crops at native resolution and the resized centre crop differ in brightness.
    rgb = np.repeat(np.repeat(np.linspace(0, 255, 96, dtype=np.float32)[None, :, None], 72, 0), 3, 2).astype(np.uint8)
    rgb[:36] //= 3
    Image.fromarray(rgb).save(tmp_path / "ramp.png")
    expected = {4: float(tiny_bundle.reference_scores(native_crops(rgb, spec, 4)).mean()),
                1: float(tiny_bundle.reference_scores(preprocess(rgb, spec)[None])[0])}
    assert abs(expected[4] - expected[1]) > 1e-3
    for args, crops, said in (([], 4, "crops 4 per frame (the model's crop plan)"),
                              (["--crops", "1"], 1, "crops 1 per frame (--crops; the model's crop plan is 4)")):
        assert main(["run", "--bundle", str(bundle), "--source", str(tmp_path / "ramp.png"), "--name", f"c{crops}",
                     *args]) == 0
        out, err = capsys.readouterr()
        assert said in err
        assert _lines(out)[0]["score"] == pytest.approx(expected[crops], abs=1e-5)
        summary = json.loads((tmp_runs / "run" / f"c{crops}" / "summary.json").read_text())
        assert summary["crops"] == crops


def test_a_crop_plan_beyond_the_engines_maximum_batch_is_refused_before_the_first_frame(
        bundle_factory, fake_backend, video, tmp_path, tmp_runs, monkeypatch, capsys):
    from grmp_edge.runtime import session

    engine = fake_backend()
    engine.max_batch, engine.reason = 2, "test"
    monkeypatch.setattr(session, "open_backend", lambda *a, **k: engine)
    bundle = bundle_factory(tmp_path / "planned", crops=4)
    assert main(["run", "--bundle", str(bundle), "--source", str(video), "--no-save"]) == 2
    err = capsys.readouterr().err
    assert "4 crops per frame (the model's crop plan) exceed the engine's maximum batch 2" in err
    assert engine.batches == [] and engine.closed
    assert main(["run", "--bundle", str(bundle), "--source", str(video), "--no-save", "--quiet",
                 "--crops", "2"]) == 0
    assert set(engine.batches) == {(2, 32, 32, 3)}


def test_paced_sources_let_the_engine_threads_sleep_between_frames(bundle, fake_backend, video, monkeypatch):
    from grmp_edge.runtime import session

    asked = []

    def opened(*args, **kwargs):
        asked.append(kwargs["spin"])
        engine = fake_backend()
        engine.reason = "test"
        return engine

    monkeypatch.setattr(session, "open_backend", opened)
    for extra in ([], ["--realtime"]):
        assert main(["run", "--bundle", str(bundle), "--source", str(video), "--no-save", "--quiet",
                     "--max-frames", "2", *extra]) == 0
    assert asked == [True, False]  # as fast as it can: spin; at the video's own rate: sleep


def test_default_bundle_is_the_latest_export(bundle_factory, video, tmp_runs, capsys):
    bundle_factory(tmp_runs / "export" / "exp")
    assert main(["run", "--source", str(video), "--max-frames", "2", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and str(tmp_runs / "export" / "exp") in err


def test_folder_with_a_corrupt_image_and_every_file_output(bundle, image_folder, tmp_path, tmp_runs, capsys):
    outs = tmp_path / "outs"
    args = ["run", "--bundle", str(bundle), "--source", str(image_folder), "--quiet",
            "--jsonl", str(outs / "f.jsonl"), "--csv", str(outs / "f.csv"), "--save-video", str(outs / "f.avi"),
            "--metrics-port", "0"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out == ""  # --quiet
    records = _lines((outs / "f.jsonl").read_text())
    assert len(records) == 5 and all(r["path"].endswith(".png") for r in records)
    assert "corrupt 1" in err and "f02.jpg" in err and "metrics at http://127.0.0.1:" in err
    assert len((outs / "f.csv").read_text().splitlines()) == 6
    assert (outs / "f.avi").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--source", "nope.mp4"], "source not found"),
    (["--source", "-"], "--stdin-size"),
    (["--bundle", "/no/such/bundle", "--camera", "0"], "not a bundle"),
    (["--source", "x.mp4", "--camera", "1"], "not both"),
    (["--alpha", "2"], "alpha"),
])
def test_user_errors_exit_2_with_one_line(bundle, video, args, message, tmp_runs, capsys):
    if "--bundle" not in args:
        args = ["--bundle", str(bundle), *args]
    if "--alpha" in args:
        args += ["--source", str(video)]
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_stdin_raw_frames_in_a_subprocess(bundle, cli):
    w, h = 40, 30
    frames = [np.full((h, w, 3), 25 * (i + 1), np.uint8) for i in range(6)]
    result = cli.run(["run", "--bundle", str(bundle), "--source", "-", "--stdin-size", f"{w}x{h}", "--alpha", "1"],
                     input=b"".join(f.tobytes() for f in frames))
    assert result.returncode == 0, result.stderr.decode()
    records = _lines(result.stdout.decode())
    assert [r["frame"] for r in records] == list(range(6))
    # Flat grey frames: the brightness graph's score is known in closed form.
    expected = tiny_bundle.reference_scores(np.stack(frames))
    assert [r["score"] for r in records] == pytest.approx(expected.tolist(), abs=1e-6)


def test_sigterm_drains_flushes_and_exits_143(bundle, tmp_path, tmp_runs, cli):
    w, h = 40, 30
    out = tmp_path / "live.jsonl"
    proc = cli.popen(["run", "--bundle", str(bundle), "--source", "-", "--stdin-size", f"{w}x{h}",
                      "--jsonl", str(out), "--quiet", "--name", "term"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for i in range(3):
            proc.stdin.write(np.full((h, w, 3), 60 + i, np.uint8).tobytes())
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
            time.sleep(0.05)
        assert len(out.read_text().splitlines()) == 3, "the run did not score the frames in time"
        proc.send_signal(signal.SIGTERM)  # stdin stays open: the run must not wait for it
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err.decode()  # 128 + SIGTERM, after draining (the README's contract)
    assert "stopped by SIGTERM" in err.decode()
    assert [r["frame"] for r in _lines(out.read_text())] == [0, 1, 2]
    summary = json.loads((tmp_runs / "run" / "term" / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and summary["frames"] == 3
    assert len(_lines((tmp_runs / "run" / "term" / "frames.jsonl").read_text())) == 3


BLOCK_HEAVY_IMPORTS = textwrap.dedent("""
    import importlib.abc, sys

    BLOCKED = {"torch", "torchvision", "open_clip", "onnx"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed on the device (blocked by the test)")
            return None

    sys.meta_path.insert(0, Block())
    from grmp_edge.cli import main
    code = main(sys.argv[1:])
    leaked = sorted(BLOCKED & {m.split(".")[0] for m in sys.modules})
    assert not leaked, leaked
    sys.exit(code)
""")


def test_runtime_scores_a_video_with_torch_and_onnx_unimportable(bundle, tmp_path, make_video, cli):
    video = make_video(tmp_path / "v.avi", 8)
    result = cli.python(BLOCK_HEAVY_IMPORTS, ["run", "--bundle", str(bundle), "--source", str(video)])
    assert result.returncode == 0, result.stderr.decode()
    assert len(_lines(result.stdout.decode())) == 8
