"""Training datasets: the shared preprocessing, seeded augmentation, the image cache, crop plans."""
from __future__ import annotations

import pytest
import torch

from graded_corpus import make_graded_corpus
from grmp_edge.errors import GrmpError

torch.set_num_threads(1)  # the test machines are shared; oversubscribed threads are 5x slower


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return (make_graded_corpus(tmp_path_factory.mktemp("datasets") / "target", refs=3, levels=8, kinds=("noise",), seed=1),)


def test_dataset_transforms_match_the_shared_preprocessing(corpora):
    import numpy as np

    from grmp_edge.images import read_rgb
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.preprocess import normalize, preprocess, resize
    from grmp_edge.spec import PreprocessSpec
    from grmp_edge.train.datasets import QualityDataset, ResizedImageCache

    records = load_manifest(corpora[0])[:6]
    spec = PreprocessSpec.release(64)  # square resize to 70, then a 64 crop
    evaluation = QualityDataset(records, spec, train=False)
    image, label = evaluation[2]
    expected = normalize(preprocess(read_rgb(records[2].image), spec)[None], spec)[0]
    assert np.array_equal(image.numpy(), expected)
    scores = np.array([r.score for r in records])
    assert float(label) == pytest.approx((scores[2] - scores.min()) / (scores.max() - scores.min()))
    assert evaluation.labels.min() == 0 and evaluation.labels.max() == 1

    train = QualityDataset(records, spec, train=True, seed=5)
    resized = resize(read_rgb(records[0].image), spec)
    crops = []
    for epoch in range(6):
        train.set_epoch(epoch)
        crop = train.crop(0)
        assert crop.shape == (64, 64, 3)
        crops.append(crop.tobytes())
        windows = [resized[y:y + 64, x:x + 64] for y in range(7) for x in range(7)]
        assert any(np.array_equal(crop, w) or np.array_equal(crop, w[:, ::-1]) for w in windows)
    train.set_epoch(3)
    assert train.crop(0).tobytes() == crops[3]  # seeded by (seed, epoch, index)
    assert len(set(crops)) > 1

    small = ResizedImageCache(spec, max_bytes=2 * 70 * 70 * 3)
    for r in records:
        small.get(r.image)
    assert small.used == 2 * 70 * 70 * 3


def test_evaluation_with_a_crop_plan_scores_the_runtimes_crops_averaged(corpora):
    import numpy as np

    from grmp_edge.images import read_rgb
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.preprocess import native_crops, normalize
    from grmp_edge.spec import PreprocessSpec
    from grmp_edge.train.datasets import QualityDataset, predict_quality

    class MeanBrightness(torch.nn.Module):
        """A stand-in model whose quality of a crop is its mean normalised pixel."""

        def quality(self, images):
            return images.flatten(1).mean(dim=1)

    records = load_manifest(corpora[0])[:5]
    spec = PreprocessSpec(size=64, resize=96, crops=4)
    planned = QualityDataset(records, spec, train=False, crops=4)
    crops = [normalize(native_crops(read_rgb(r.image), spec, 4), spec) for r in records]
    image, _ = planned[1]
    assert image.shape == (4, 3, 64, 64) and np.array_equal(image.numpy(), crops[1])
    scores = predict_quality(MeanBrightness(), planned, torch.device("cpu"), batch_size=2)
    np.testing.assert_allclose(scores, [c.mean() for c in crops], rtol=1e-5)
    single = predict_quality(MeanBrightness(), QualityDataset(records, spec), torch.device("cpu"))
    assert single.shape == (5,) and not np.allclose(single, scores)
    with pytest.raises(GrmpError, match="crop plan is for evaluation"):
        QualityDataset(records, spec, train=True, crops=4)
