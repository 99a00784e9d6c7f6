"""The runtime's numpy preprocessing equals the training-side transform on real photos.

Training feeds ``QualityDataset`` tensors to PyTorch; the edge feeds uint8 crops to the exported
graph. On real photos, the training tensor de-normalised and rounded must equal the runtime crop
within one grey level, and the two paths must give the same score through the same model.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from grmp_edge.images import read_rgb  # noqa: E402
from grmp_edge.data.manifest import Record  # noqa: E402
from grmp_edge.data.pristine import bundled_photos  # noqa: E402
from grmp_edge.export.fold import fold_prompts  # noqa: E402
from grmp_edge.export.gates import run_onnx  # noqa: E402
from grmp_edge.export.onnx_export import export_onnx  # noqa: E402
from grmp_edge.preprocess import preprocess  # noqa: E402
from grmp_edge.spec import PreprocessSpec  # noqa: E402
from grmp_edge.train.datasets import QualityDataset  # noqa: E402
from grmp_edge.train.backbones import model_spec  # noqa: E402
from grmp_edge.train.model import build_model  # noqa: E402


@pytest.mark.parametrize("policy", ["clip", "release"])
def test_runtime_crop_and_score_equal_the_training_transform(policy, tmp_path):
    torch.manual_seed(0)
    spec = model_spec("grmp-tiny", None, vpt_tokens=4)
    spec.preprocess = PreprocessSpec.named(policy, spec.preprocess.size)
    model = build_model(spec).eval()
    photos = bundled_photos()
    records = [Record(image=p, score=float(i)) for i, p in enumerate(photos)]
    dataset = QualityDataset(records, spec.preprocess, train=False)

    train_x = torch.stack([dataset[i][0] for i in range(len(records))])
    mean = torch.tensor(spec.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.preprocess.std).view(1, 3, 1, 1)
    train_pixels = ((train_x * std + mean) * 255).round().permute(0, 2, 3, 1).numpy()
    runtime_crops = np.stack([preprocess(read_rgb(p), spec.preprocess) for p in photos])
    assert np.abs(train_pixels - runtime_crops.astype(np.float64)).max() <= 1

    with torch.inference_mode():
        train_scores = model.quality(train_x).numpy()
    onnx_path = export_onnx(fold_prompts(model), tmp_path / "m.onnx")
    edge_scores = run_onnx(onnx_path, [runtime_crops])
    assert np.abs(train_scores - edge_scores).max() <= 1e-3
