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
    batch = corpus.sample(np.random.default_rng(0), 20, 96)
    crops, ids, generic = batch.crops, batch.ids, batch.generic
    assert crops.shape == (20, 96, 96, 3) and crops.dtype.name == "uint8"
    again = corpus.sample(np.random.default_rng(0), 20, 96)
    assert np.array_equal(crops, again.crops) and np.array_equal(ids, again.ids)
    assert np.array_equal(generic, again.generic) and np.array_equal(batch.picks, again.picks)
    assert not np.array_equal(crops, corpus.sample(np.random.default_rng(1), 20, 96).crops)
    assert corpus.captions.index(bs.PRISTINE_CAPTION) in ids.tolist()  # references are always in a batch
    assert (corpus.caption_grades[ids] == -1).all() and (corpus.caption_grades[generic] >= 0).all()
    # a crop's two captions agree on its quality
    grades = {corpus.captions[i]: corpus.caption_grades[g] for i, g in zip(ids, generic)}
    assert grades[bs.PRISTINE_CAPTION] == 0
    assert all(g == 3 for c, g in grades.items() if "very low quality" in c)
    assert all(g == 2 for c, g in grades.items() if "fair quality" in c)


def test_sampler_can_hold_few_types_and_distinct_references(corpus):
    batch = corpus.sample(np.random.default_rng(0), 20, 96, reference_share=0.1, types_per_batch=1)
    kinds = corpus.kinds[batch.picks]
    assert len(set(kinds[kinds >= 0].tolist())) == 1
    refs = batch.picks[corpus.is_reference[batch.picks]]
    assert len(refs) == 2 and len(set(corpus.photos[refs].tolist())) == 2


def test_corpus_knows_strength_type_photo_and_scene(corpus):
    refs = corpus.is_reference
    assert (corpus.kinds[refs] == -1).all() and (corpus.strengths[refs] == 0).all()
    assert set(corpus.strengths[~refs].tolist()) == {1, 2, 3, 4, 5}
    assert {bs.DISTORTIONS[k] for k in corpus.kinds[~refs]} == set(TYPES)
    # bundled_photos()[:2] are astronaut (human) and coffee (still_life) in the committed labels
    assert [bs.SCENE_CLASSES[s] for s in corpus.scenes[refs]] == ["human", "still_life"]


def test_ranking_pairs_order_references_then_levels_then_pseudo_mos():
    # two references, then white_noise at 1 and 3 on different photos, then jpeg at 1.1 with a low pseudo-MOS
    kinds = torch.tensor([-1, -1, 10, 10, 9])
    strengths = torch.tensor([0.0, 0.0, 1.0, 3.0, 1.1])
    quality = torch.tensor([1.0, 1.0, 0.9, 0.6, 0.7])
    pairs = bs.ranking_pairs(strengths, kinds, quality)
    assert pairs[0, 1] == 0 and (pairs[:2, 2:] == 1 / 6).all()  # references above every distorted image
    assert pairs[2, 3] == 1 and pairs[3, 2] == 0  # same type: milder above stronger, across photos
    assert pairs[2, 4] == bs.FR_WEIGHT and pairs[4, 3] == 0  # other types: by pseudo-MOS, with a margin
    assert pairs.sum() == pytest.approx(2 + bs.FR_WEIGHT)  # each kind of pair weighs the same in total
    scores = torch.tensor([0.5, 0.5, 0.3, 0.1, 0.2])
    assert bs.ranking_loss(scores, pairs, 0.03) < bs.ranking_loss(-scores, pairs, 0.03)
    assert bs.pristine_spread(scores, kinds < 0) == 0
    # relative to the batch's spread: scaling every score does not change it
    spread = bs.pristine_spread(torch.tensor([0.0, 0.1, 0.3, 0.5]), torch.tensor([True, True, False, False]))
    assert spread == pytest.approx(bs.pristine_spread(torch.tensor([0.0, 1.0, 3.0, 5.0]),
                                                      torch.tensor([True, True, False, False])))
    assert spread == pytest.approx(0.0025 / 0.036875)


def test_random_strengths_interpolate_between_graded_levels():
    from grmp_edge.data.distortions import PARAMS
    from grmp_edge.train import bootstrap_corpus as bc

    assert bc.strength_param("white_noise", 2.0) == PARAMS["white_noise"][1]
    assert bc.strength_param("white_noise", 2.5) == pytest.approx((0.002 * 0.004) ** 0.5)  # geometric
    assert bc.strength_param("color_saturation_1", 4.5) == pytest.approx(0.075)  # linear down to 0
    assert isinstance(bc.strength_param("jpeg", 1.5), int)
    draws = bc.stratified_strengths(4, np.random.default_rng(0))
    assert ((draws >= [1, 2, 3, 4]) & (draws <= [2, 3, 4, 5])).all()
    with pytest.raises(bs.GrmpError):
        bc.strength_param("jpeg", 0.5)


def test_random_strength_corpus_is_cached_per_photo(tmp_path):
    photos = bundled_photos()[:1]
    first = bs.CaptionedCorpus.from_photos(photos, ["gaussian_blur"], 3, 0, tmp_path, workers=1)
    assert len(first.pixels) == 4 and first.is_reference.sum() == 1
    strengths = first.strengths[~first.is_reference]
    assert ((strengths >= [1, 7 / 3, 11 / 3]) & (strengths <= [7 / 3, 11 / 3, 5])).all()  # one per slice
    assert (np.diff(first.quality[~first.is_reference]) < 0).all()  # stronger blur, lower pseudo-MOS
    again = bs.CaptionedCorpus.from_photos(photos, ["gaussian_blur"], 3, 0, tmp_path, workers=1)
    assert all(np.array_equal(a, b) for a, b in zip(first.pixels, again.pixels))


def test_harsher_strengths_go_on_at_the_types_last_step():
    from grmp_edge.train import bootstrap_corpus as bc

    # JPEG quality 10 -> 5 at levels 4 -> 5, so one level further is 2.5 and two are 1.25 (rounded)
    assert [bc.strength_param("jpeg", s) for s in (5.0, 6.0, 6.5, 7.0)] == [5, 2, 2, 1]
    assert bc.strength_param("white_noise", 6.0) == pytest.approx(0.032)
    for bad in (("color_saturation_1", 5.5), ("jpeg", 7.5)):  # no ratio to go on with; past the end
        with pytest.raises(bs.GrmpError):
            bc.strength_param(*bad)


def test_harsher_draws_add_to_the_graded_draws_and_are_captioned_as_level_5(tmp_path):
    photos = bundled_photos()[:1]
    plain = bs.CaptionedCorpus.from_photos(photos, ["jpeg"], 2, 0, tmp_path / "plain", workers=1)
    harsh = bs.CaptionedCorpus.from_photos(photos, ["jpeg"], 2, 0, tmp_path / "harsh", workers=1,
                                           harsher={"jpeg": 2})
    extra = harsh.strengths[3:]  # reference, the two graded draws, then the harsher ones
    assert len(harsh.pixels) == 5 and ((extra > [5, 6]) & (extra <= [6, 7])).all()
    assert all(np.array_equal(a, b) for a, b in zip(plain.pixels, harsh.pixels))  # graded draws unchanged
    assert {harsh.captions[i] for i in harsh.caption_ids[3:]} == {bs.caption("jpeg", 5)}
    assert harsh.quality[4] < harsh.quality[2]  # quality 1-2 looks worse than any graded draw
    # the cached corpus knows what it was made with: a plain rerun in the harsh folder is remade plain
    again = bs.CaptionedCorpus.from_photos(photos, ["jpeg"], 2, 0, tmp_path / "harsh", workers=1)
    assert len(again.pixels) == 3
    with pytest.raises(bs.GrmpError, match="harsher"):
        bs.CaptionedCorpus.from_photos(photos, ["jpeg"], 2, 0, tmp_path / "bad", workers=1,
                                       harsher={"gaussian_blur": 1})


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


def test_cross_photo_terms_train_and_resume_from_a_checkpoint(tmp_path):
    corpus = bs.CaptionedCorpus.from_photos(bundled_photos()[:2], TYPES, 2, 0, tmp_path / "corpus", workers=1)
    recipe = bs.CrossPhotoLoss(types_per_batch=2)
    checkpoint = tmp_path / "state.pt"
    torch.manual_seed(0)
    first = bs.train_contrastive(pretrained.create_backbone("grmp-tiny", None), corpus, steps=4, batch_size=16,
                                 recipe=recipe, checkpoint=checkpoint, checkpoint_every=2, progress=False)
    assert set(first["terms"]) == {"loss", "specific", "generic", "rank", "spread", "scene"}
    assert checkpoint.is_file() and first["steps"] == 4
    resumed = bs.train_contrastive(pretrained.create_backbone("grmp-tiny", None), corpus, steps=6, batch_size=16,
                                   recipe=recipe, checkpoint=checkpoint, checkpoint_every=2, progress=False)
    assert resumed["steps"] == 6 and resumed["losses"][:4] == first["losses"]


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
