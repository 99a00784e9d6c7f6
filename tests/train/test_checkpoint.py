"""Checkpoint folders: spec.json + model.safetensors round trip offline; corrupt weights are one line."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from grmp_edge.errors import GrmpError  # noqa: E402
from grmp_edge.train.backbones import model_spec  # noqa: E402
from grmp_edge.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from grmp_edge.train.model import build_model  # noqa: E402

torch.set_num_threads(1)  # the test machines are shared


def tiny(**fields):
    torch.manual_seed(0)
    return build_model(model_spec("grmp-tiny", None, **fields)).eval()


def images(n, size=96, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_checkpoint_round_trip_needs_no_registry(tmp_path, monkeypatch):
    model = tiny()
    with torch.no_grad():
        model.visual_prompts.shallow.add_(0.5)  # make sure trained values, not init, come back
        model.clip.visual.proj.mul_(2.0)
    folder = save_checkpoint(model, tmp_path / "best")
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "spec.json"]
    monkeypatch.setattr(open_clip, "get_model_config", lambda name: pytest.fail("registry used"))
    loaded = load_checkpoint(folder)
    x = images(2)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.spec.to_dict() == model.spec.to_dict()


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    folder = save_checkpoint(tiny(), tmp_path / "ck")
    (folder / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(GrmpError, match="does not match its spec.json"):
        load_checkpoint(folder)
