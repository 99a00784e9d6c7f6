"""Pretrained weights: local files, bad tags, and the offline error that names both ways out."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from grmp_edge.errors import GrmpError  # noqa: E402
from grmp_edge.train import pretrained  # noqa: E402
from grmp_edge.train.pretrained import create_backbone  # noqa: E402

torch.set_num_threads(1)  # the test machines are shared


@pytest.mark.parametrize("reachable", [True, False])
def test_offline_default_backbone_names_both_ways_out(monkeypatch, reachable):
    def no_network(cfg, **kwargs):
        raise OSError("[Errno -2] Name or service not known\nsecond line")

    monkeypatch.setattr(pretrained, "host_reachable", lambda url: reachable)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", no_network)
    with pytest.raises(GrmpError) as err:
        create_backbone("ViT-B-16", "openai")
    message = str(err.value)
    assert "\n" not in message
    assert "--pretrained /path/to/open_clip_checkpoint.pt" in message
    assert "--backbone grmp-tiny --pretrained bootstrap" in message


def test_local_checkpoint_file_and_bad_tags(tmp_path):
    torch.manual_seed(3)
    source = create_backbone("grmp-tiny", None)
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    loaded = create_backbone("grmp-tiny", str(path))
    assert torch.equal(loaded.visual.proj, source.visual.proj)
    with pytest.raises(GrmpError, match="checkpoint not found"):
        create_backbone("grmp-tiny", str(tmp_path / "missing.pt"))
    with pytest.raises(GrmpError, match="neither a file nor an open_clip tag"):
        create_backbone("ViT-B-16", "no-such-tag")
    with pytest.raises(GrmpError, match="only for grmp-tiny"):
        create_backbone("ViT-B-16", "bootstrap")
