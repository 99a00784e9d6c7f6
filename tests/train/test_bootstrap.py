"""Offline bootstrap of grmp-tiny: captions, soft targets, the in-memory sampler, a tiny build, caching, evaluation."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from grmp_edge.artifacts import CACHE_ENV  # noqa: E402
from grmp_edge.data.distortions import DISTORTIONS  # noqa: E402
from grmp_edge.data.manifest import load_manifest  # noqa: E402
from grmp_edge.data.pristine import bundled_photos  # noqa: E402
from grmp_edge.spec import ModelSpec  # noqa: E402
from grmp_edge.train import bootstrap as bs  # noqa: E402
from grmp_edge.train import backbones, pretrained  # noqa: E402

TYPES = ["gaussian_blur", "white_noise", "jpeg"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    """A few steps on 2 photos x 3 types at 128 px (shared by the tests below)."""
    folder = tmp_path_factory.mktemp("bootstrap")
    history = bs.build_bootstrap(folder / "tiny.safetensors", bundled_photos()[:2], types=TYPES, steps=20,
                                 seed=0, work_dir=folder / "corpus", size=128, batch_size=16, patch_dropout=0.5,
                                 workers=1, progress=False)
    return folder, history


def test_held_out_types_are_real_and_spread_over_families():
    assert set(bs.HELD_OUT_TYPES) <= set(DISTORTIONS)
    assert len(bs.HELD_OUT_TYPES) == 5 and len(bs.seen_types()) == 20
    assert not set(bs.HELD_OUT_TYPES) & set(bs.seen_types())


def test_captions_grade_quality_by_level():
    assert bs.caption("gaussian_blur", 1) == "a high quality photo with slight gaussian blur"
    assert bs.caption("gaussian_blur", 5) == "a very low quality photo with severe gaussian blur"
    assert bs.caption("color_saturation_2", 4) == "a low quality photo with strong oversaturation"
    assert len({bs.caption(t, lvl) for t in DISTORTIONS for lvl in range(1, 6)}) == 125
    with pytest.raises(bs.GrmpError):
        bs.caption("jpeg", 0)


def test_generic_captions_grade_quality_by_level_and_pseudo_mos():
    assert bs.ZERO_SHOT_PROMPTS == ("a high quality photo", "a low quality photo")
    assert (bs.GENERIC_WORDS[0], bs.GENERIC_WORDS[-1]) == ModelSpec().classnames  # GRMP's class words
    assert [bs.generic_grade(None)] + [bs.generic_grade(lvl, 0.5) for lvl in range(1, 6)] == [0, 1, 1, 2, 3, 3]
    assert bs.generic_grade(1, bs.HIGH_SCORE) == 0 and bs.generic_grade(2, 1.0) == 1
    assert bs.generic_captions(0) == ["a high quality photo", "a photo of high quality"]
    assert bs.generic_captions(0, pristine=True)[-1] == "a pristine photo"
    assert bs.generic_captions(3) == ["a low quality photo", "a photo of low quality"]
    with pytest.raises(bs.GrmpError):
        bs.generic_grade(6)


def test_same_caption_pairs_are_positive_targets():
    ids = torch.tensor([0, 1, 0, 2, 0])
    third = 1 / 3
    expected = torch.tensor([
        [third, 0, third, 0, third],
        [0, 1, 0, 0, 0],
        [third, 0, third, 0, third],
        [0, 0, 0, 1, 0],
        [third, 0, third, 0, third],
    ])
    assert torch.allclose(bs.same_caption_targets(ids), expected)


def test_graded_targets_are_ordinal_soft_labels():
    targets = bs.graded_targets(torch.tensor([0, 0, 1, 3]), decay=2.0)
    assert torch.allclose(targets.sum(dim=1), torch.ones(4))
    row = targets[0]
    assert row[0] == row[1] > row[2] > row[3] > 0  # equal grades are full positives, then by distance
    assert torch.allclose(row[2] / row[0], torch.exp(torch.tensor(-2.0)))
    assert torch.allclose(bs.graded_targets(torch.tensor([0, 1, 2]), decay=50.0), torch.eye(3), atol=1e-6)


def test_with_distinct_captions_the_loss_is_open_clips():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    ours = bs.SoftTargetClipLoss()(img, txt, scale, bs.same_caption_targets(torch.arange(6)))
    theirs = open_clip.loss.ClipLoss()(img, txt, scale)
    assert torch.allclose(ours, theirs)


@pytest.fixture(scope="module")
def corpus(tiny_build):
    folder, _ = tiny_build
    return bs.CaptionedCorpus.from_manifest(folder / "corpus" / "manifest.csv", workers=1)


def test_corpus_captions_and_references(corpus):
    assert len(corpus.pixels) == 2 * 3 * 5 + 2
    # decoded once, resized as grmp-tiny's model spec says (shorter side 256)
    assert {min(p.shape[:2]) for p in corpus.pixels} == {256} and corpus.pixels[0].dtype == np.uint8
    generic = [c for c in corpus.captions if corpus.caption_grades[corpus.captions.index(c)] >= 0]
    assert len(corpus.captions) - len(generic) == 3 * 5 + 1
    assert set(bs.ZERO_SHOT_PROMPTS) | {bs.PRISTINE_GENERIC} <= set(generic)
    assert int(corpus.is_reference.sum()) == 2
    pristine = corpus.captions.index(bs.PRISTINE_CAPTION)
    assert set(corpus.caption_ids[corpus.is_reference].tolist()) == {pristine}
    for i in np.flatnonzero(corpus.is_reference):
        assert [corpus.captions[j] for j in corpus.generic_ids[i]] == bs.generic_captions(0, pristine=True)


def test_sampler_crops_are_deterministic_per_seed_and_captioned(corpus):
    crops, ids, generic = corpus.sample(np.random.default_rng(0), 20, 96)
    assert crops.shape == (20, 96, 96, 3) and crops.dtype.name == "uint8"
    again = corpus.sample(np.random.default_rng(0), 20, 96)
    assert np.array_equal(crops, again[0]) and np.array_equal(ids, again[1]) and np.array_equal(generic, again[2])
    assert not np.array_equal(crops, corpus.sample(np.random.default_rng(1), 20, 96)[0])
    assert corpus.captions.index(bs.PRISTINE_CAPTION) in ids.tolist()  # references are always in a batch
    assert (corpus.caption_grades[ids] == -1).all() and (corpus.caption_grades[generic] >= 0).all()
    # a crop's two captions agree on its quality
    grades = {corpus.captions[i]: corpus.caption_grades[g] for i, g in zip(ids, generic)}
    assert grades[bs.PRISTINE_CAPTION] == 0
    assert all(g == 3 for c, g in grades.items() if "very low quality" in c)
    assert all(g == 2 for c, g in grades.items() if "fair quality" in c)


def test_tiny_build_lowers_the_loss_and_writes_fp16(tiny_build):
    folder, history = tiny_build
    losses = history["losses"]
    assert history["steps"] == 20 == len(losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1
    from safetensors import safe_open

    with safe_open(str(folder / "tiny.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
        meta = f.metadata()
    assert meta["backbone"] == "grmp-tiny" and meta["types"] == ",".join(TYPES)


def test_bootstrap_is_built_once_then_cached(tiny_build, tmp_path, monkeypatch):
    folder, _ = tiny_build
    monkeypatch.setattr(bs, "SHIPPED_WEIGHTS", tmp_path / "not-shipped.safetensors")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    builds = []

    def fake_build(out, sources, **kwargs):
        builds.append(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes((folder / "tiny.safetensors").read_bytes())

    monkeypatch.setattr(bs, "build_bootstrap", fake_build)
    first = pretrained.create_backbone("grmp-tiny", "bootstrap")
    second = pretrained.create_backbone("grmp-tiny", "bootstrap")
    assert builds == [tmp_path / "cache" / "bootstrap" / "grmp-tiny.safetensors"]
    assert torch.equal(first.visual.proj, second.visual.proj)
    # a locally (re)built copy wins over the shipped one; --rebuild builds again even when one exists
    shipped = tmp_path / "shipped.safetensors"
    shipped.write_bytes((folder / "tiny.safetensors").read_bytes())
    monkeypatch.setattr(bs, "SHIPPED_WEIGHTS", shipped)
    cached = tmp_path / "cache" / "bootstrap" / "grmp-tiny.safetensors"
    assert bs.bootstrap_weights() == cached
    assert bs.bootstrap_weights(rebuild=True) == cached and len(builds) == 2
    cached.unlink()
    assert bs.bootstrap_weights() == shipped


def test_zero_shot_level_srcc_reports_every_type(tiny_build):
    folder, _ = tiny_build
    clip = pretrained.create_backbone("grmp-tiny", str(folder / "tiny.safetensors"))
    records = load_manifest(folder / "corpus" / "manifest.csv")
    result = bs.zero_shot_level_srcc(clip, records, backbones.model_spec("grmp-tiny", None).preprocess, crops=2)
    assert set(result) == {"pooled", "per_photo"}
    for per_type in result.values():
        assert list(per_type) == [t for t in DISTORTIONS if t in TYPES]  # KADID order
        assert all(-1.0 <= v <= 1.0 for v in per_type.values())


def test_shipped_weights_fit_and_are_small():
    if not bs.SHIPPED_WEIGHTS.is_file():
        pytest.skip("no shipped bootstrap weights in this checkout")
    assert bs.SHIPPED_WEIGHTS.stat().st_size < 20e6
    clip = pretrained.create_backbone("grmp-tiny", str(bs.SHIPPED_WEIGHTS))
    assert clip.visual.image_size == (96, 96)
