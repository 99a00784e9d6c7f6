"""`grmp-edge bench`: the four report files, their schema, failed rows, and the plot's points."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_bundle import STANDARD_FILES, make_bundle, reference_scores

from grmp_edge.artifacts import sha256_file
from grmp_edge.cli import main
from grmp_edge.data.manifest import Record, write_manifest
from grmp_edge.report.plots import pareto_front, score_timeline
from grmp_edge.report.results import BenchReport
from grmp_edge.spec import BundleManifest


@pytest.fixture
def labelled(tmp_path):
    """Twelve photos-to-be whose label is their brightness (what the tiny graph scores)."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(12):
        img = np.clip(rng.normal(20 * i + 10, 5, size=(24, 32, 3)), 0, 255).astype(np.uint8)
        path = tmp_path / "img" / f"{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(path)
        records.append(Record(image=path, score=float(i)))
    return write_manifest(tmp_path / "labels.csv", records)


def _run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out


def test_bench_writes_report_table_and_plot(tmp_path, tmp_runs, labelled, capsys):
    bundle = make_bundle(tmp_path / "bundle")
    _run(["bench", "--bundle", str(bundle), "--data", str(labelled), "--iters", "5", "--warmup", "1",
          "--batch", "1,4", "--name", "t"], capsys)
    out = tmp_runs / "bench" / "t"
    for name in ("report.json", "report.md", "report.csv", "accuracy_vs_latency.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["command"].startswith("grmp-edge bench")
    assert BenchReport.from_dict(report).to_dict() == report  # the typed report keeps every JSON key
    assert report["machine"]["threads"] >= 1 and report["machine"]["gemm_peak_gflops"]["peak"] > 0
    rows = {v["name"]: v for v in report["variants"]}
    ort = [v for v in rows.values() if v["backend"] == "onnxruntime-cpu"]
    assert len(ort) == 4 and all(v["status"] == "ok" for v in ort)
    for v in ort:
        r = v["result"]
        # The tiny graph's score is monotone in brightness, and brightness is the label.
        assert r["accuracy"]["srcc"] == pytest.approx(1.0)
        assert r["agreement"]["max_abs"] < 1e-6
        lat = r["latency_ms"]["infer"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["n"] == 5
        assert r["throughput"]["batch"] == 4 and r["throughput"]["images_per_s"] > 0
        assert 10 < r["peak_rss_mb"] < 1000  # the child's own peak, not the test process's
    plan = next(v for v in rows.values() if v["format"] == "plan")
    assert plan["status"] == "skipped" and "tensorrt" in plan["reason"]
    with open(out / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(report["variants"])
    assert "| variant |" in (out / "report.md").read_text()
    with Image.open(out / "accuracy_vs_latency.png") as im:
        im.verify()
        assert im.format == "PNG"


def test_scores_match_the_graph(tmp_path, tmp_runs, labelled, capsys):
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.images import read_rgb
    from grmp_edge.preprocess import preprocess

    bundle = make_bundle(tmp_path / "bundle")
    _run(["bench", "--bundle", str(bundle), "--data", str(labelled), "--iters", "3", "--warmup", "1",
          "--name", "s"], capsys)
    report = json.loads((tmp_runs / "bench" / "s" / "report.json").read_text())
    manifest = BundleManifest.load(bundle / "manifest.json")
    crops = np.stack([preprocess(read_rgb(r.image), manifest.preprocess) for r in load_manifest(labelled)])
    expected = reference_scores(crops[:8])
    row = next(v for v in report["variants"] if v["status"] == "ok")
    np.testing.assert_allclose(row["result"]["scores_head"], expected, atol=1e-5)


def test_broken_variant_is_a_failed_row_not_a_crash(tmp_path, tmp_runs, labelled, capsys):
    bundle = make_bundle(tmp_path / "bundle")
    broken = bundle / "model_fp16.onnx"
    broken.write_bytes(b"this is not an onnx graph")
    manifest = BundleManifest.load(bundle / "manifest.json")
    for f in manifest.files:
        if f.path == broken.name:
            f.sha256 = sha256_file(broken)  # intact hash, broken content: the load itself must fail
    manifest.save(bundle / "manifest.json")
    _run(["bench", "--bundle", str(bundle), "--data", str(labelled), "--iters", "3", "--warmup", "1",
          "--name", "b"], capsys)
    report = json.loads((tmp_runs / "bench" / "b" / "report.json").read_text())
    statuses = {v["path"]: v for v in report["variants"]}
    assert statuses["model_fp16.onnx"]["status"] == "failed"
    assert "cannot load" in statuses["model_fp16.onnx"]["reason"]
    assert statuses["model_fp32.onnx"]["status"] == "ok"


def test_pareto_front():
    pts = [(10.0, 0.9), (5.0, 0.8), (20.0, 0.85), (2.0, 0.5), (5.0, 0.7)]
    assert pareto_front(pts) == [3, 1, 0]


def test_score_timeline_plot(tmp_path):
    lines = [json.dumps({"frame": i, "ts": 100 + i / 10, "score": s, "smoothed": s,
                         "event": "degraded" if i == 5 else None}) for i, s in enumerate(np.linspace(0.9, 0.2, 10))]
    log = tmp_path / "frames.jsonl"
    log.write_text("\n".join(lines) + "\n")
    summary = score_timeline(log, tmp_path / "score_timeline.png")
    assert summary.frames == 10 and summary.events == 1
    assert summary.duration_s == pytest.approx(0.9)
    with Image.open(tmp_path / "score_timeline.png") as im:
        assert im.format == "PNG"


def test_score_timeline_uses_the_video_time_when_every_frame_has_it(tmp_path):
    # Scored 3x faster than real time: the plot's axis is the video's 2 s, not the 0.67 s it took.
    lines = [json.dumps({"frame": i, "ts": 100 + i / 30, "media_s": i / 10, "score": 0.5, "smoothed": 0.5,
                         "event": None}) for i in range(21)]
    log = tmp_path / "frames.jsonl"
    log.write_text("\n".join(lines) + "\n")
    assert score_timeline(log, tmp_path / "t.png").duration_s == pytest.approx(2.0)
    log.write_text("\n".join(lines[:-1] + [json.dumps({"frame": 20, "ts": 100 + 20 / 30, "score": 0.5,
                                                         "smoothed": 0.5, "event": None})]) + "\n")
    assert score_timeline(log, tmp_path / "t.png").duration_s == pytest.approx(20 / 30)


def test_run_report_writes_the_timeline(tmp_path, tmp_runs, capsys):
    import cv2

    bundle = make_bundle(tmp_path / "bundle")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(12):
        writer.write(np.full((24, 32, 3), 20 * i, np.uint8))
    writer.release()
    _run(["run", "--bundle", str(bundle), "--source", str(video), "--name", "r", "--quiet", "--report"], capsys)
    out = tmp_runs / "run" / "r"
    summary = json.loads((out / "report.json").read_text())
    assert summary["frames"] == 12 and summary["duration_s"] == pytest.approx(1.1)  # 12 frames at 10 fps
    with Image.open(out / "score_timeline.png") as im:
        assert im.format == "PNG"


def test_bench_scores_with_the_bundles_crop_plan_and_times_a_frame_at_both(tmp_path, tmp_runs, labelled, capsys):
    from grmp_edge.images import read_rgb
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.preprocess import native_crops

    bundle = make_bundle(tmp_path / "bundle", files=[f for f in STANDARD_FILES if f[0] == "model_fp32.onnx"], crops=3)
    spec = BundleManifest.load(bundle / "manifest.json").preprocess
    images = [read_rgb(r.image) for r in load_manifest(labelled)][:8]
    for args, crops, said in (([], 3, "the model's crop plan"), (["--crops", "1"], 1, "--crops")):
        name = f"p{crops}"
        err = _run(["bench", "--bundle", str(bundle), "--data", str(labelled), "--iters", "3", "--warmup", "1",
                    "--name", name, *args], capsys).err
        assert f"crops per frame: {crops} ({said}" in err
        report = json.loads((tmp_runs / "bench" / name / "report.json").read_text())
        assert report["settings"]["crops"] == crops
        row = next(v for v in report["variants"] if v["status"] == "ok")
        expected = [reference_scores(native_crops(rgb, spec, crops)).mean() for rgb in images]
        np.testing.assert_allclose(row["result"]["scores_head"], expected, atol=1e-5)
        frame = row["result"]["latency_ms"]["frame"]
        assert frame["crops"] == crops and frame["infer"]["n"] == 3 and frame["e2e"]["p50"] > 0
        table = (tmp_runs / "bench" / name / "report.md").read_text()
        assert f"Crops per frame: {crops} (" in table and "frame_e2e_p50_ms" in table
    assert report["settings"]["crops_from"].startswith("--crops; the model's crop plan is 3")


def test_a_report_from_before_crop_plans_still_reads():
    report = json.loads((Path(__file__).resolve().parents[2] / "benchmarks" / "bench_quickstart.json").read_text())
    typed = BenchReport.from_dict(report)
    assert typed.settings.crops is None and "crops" not in typed.to_dict()["settings"]
    assert [v.name for v in typed.measured] == [v["name"] for v in report["variants"] if v["status"] == "ok"]


def test_the_committed_report_renders_as_it_was_written():
    from grmp_edge.report.tables import to_markdown

    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    report = BenchReport.from_dict(json.loads((folder / "bench_crop_plan.json").read_text()))
    assert to_markdown(report) == (folder / "bench_crop_plan.md").read_text()
