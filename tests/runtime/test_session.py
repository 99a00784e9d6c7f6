"""The library behind ``grmp-edge run``: RunOptions checked before a model loads, run() end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from grmp_edge.errors import GrmpError
from grmp_edge.runtime.pipeline import Pipeline
from grmp_edge.runtime.session import CaptureOptions, Outputs, RunOptions, run
from grmp_edge.runtime.sources import FrameSource
from grmp_edge.runtime.summary import StopKind


def test_run_scores_a_video_and_writes_the_run_folder(bundle, video, tmp_runs):
    logs = []
    result = run(RunOptions(sources=[str(video)], bundle=bundle, outputs=Outputs(stdout=False, name="lib")),
                 log=logs.append)
    assert result.summary.frames == 24 and result.summary.stopped_by.kind is StopKind.END_OF_SOURCE
    assert result.backend == "onnxruntime-cpu" and result.precision == "fp32" and result.crops == 1
    assert result.run_dir == tmp_runs / "run" / "lib"
    assert len((result.run_dir / "frames.jsonl").read_text().splitlines()) == 24
    written = json.loads((result.run_dir / "summary.json").read_text())
    assert written == json.loads(json.dumps(result.to_dict()))
    assert written["stopped_by"] == "end of source" and written["stride"] == 1 and written["bundle"] == str(bundle)
    assert logs[0] == f"bundle {bundle}" and any(line.startswith("24 frames") for line in logs)


@pytest.mark.parametrize("options, message", [
    (RunOptions(crops=0), "--crops must be between 1 and 1024, got 0"),
    (RunOptions(max_frames=0), "--max-frames must be >= 1"),
    (RunOptions(duration=0.0), "--duration must be >= 0.001"),
    (RunOptions(batch_window_ms=2000), "--batch-window-ms must be between 0 and 1000, got 2000"),
    (RunOptions(capture=CaptureOptions(csi_flip=9)), "--csi-flip must be between 0 and 7"),
    (RunOptions(outputs=Outputs(serve="nope")), "--serve takes [HOST:]PORT"),
])
def test_options_are_checked_before_any_source_or_model_is_opened(options, message):
    options.bundle, options.sources = Path("/no/such/bundle"), ["/no/such/video.mp4"]
    with pytest.raises(GrmpError) as info:
        run(options)
    assert message in str(info.value)  # not "source not found" nor "not a bundle": nothing was opened


def test_the_pipeline_and_the_options_share_one_limit_check(spec, fake_backend):
    messages = []
    for attempt in (lambda: RunOptions(crops=0, batch_window_ms=5).check(),
                    lambda: Pipeline(FrameSource("x"), fake_backend(), spec, crops=0)):
        with pytest.raises(GrmpError) as info:
            attempt()
        messages.append(str(info.value))
    assert messages[0] == messages[1] == "--crops must be between 1 and 1024, got 0"


def test_a_run_in_which_every_source_fails_is_an_error_after_its_summary_is_written(bundle, tmp_path, tmp_runs):
    broken = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for path in broken:
        path.write_bytes(b"not a video")
    options = RunOptions(sources=[str(p) for p in broken], bundle=bundle, outputs=Outputs(stdout=False, name="bad"))
    with pytest.raises(GrmpError, match="every source failed"):
        run(options)
    summary = json.loads((tmp_runs / "run" / "bad" / "summary.json").read_text())
    assert all(part["stopped_by"].startswith("failed: cannot open video") for part in summary["sources"])
