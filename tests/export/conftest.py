"""Fixtures for the export tests: a tiny ViT-like quality graph and structured test images.

The graph has the shape of what ``grmp-edge export`` writes (input ``image`` uint8 NHWC with
cast/scale/normalise inside, conv patchify, pre-norm transformer blocks with one-node LayerNorm and
plain MatMul/Softmax/MatMul attention, GELU MLPs, ln_post, projection, L2 normalisation, a constant
text direction times a logit scale, sigmoid -> ``score``), small enough to export and quantise in
seconds. Its text direction is the first principal axis of its own embeddings on the test images, so
its scores spread over (0, 1) instead of sitting on one value, and rank agreement is meaningful.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SIZE = 32
PATCH = 8
WIDTH = 48
HEADS = 2
LAYERS = 2
EMBED = 32
N_IMAGES = 64
OPSET = 17


def structured_images(n: int = N_IMAGES, size: int = SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, size, size, 3)`` uint8 RGB crops with real structure, plus a per-image degradation level.

    Uses the bundled natural photos when the data package provides them, else smooth colour
    gradients with shapes; every crop then gets a seeded blur/noise degradation, so the set spans
    quality the way real calibration images do. Returns (images, levels).
    """
    import cv2

    rng = np.random.default_rng(seed)
    sources = _photo_sources()
    if not sources:
        sources = [_synthetic_scene(rng, 128) for _ in range(6)]
    images = np.empty((n, size, size, 3), np.uint8)
    levels = np.empty(n, np.int64)
    for i in range(n):
        src = sources[i % len(sources)]
        h, w = src.shape[:2]
        side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = cv2.resize(src[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
        level = int(rng.integers(0, 4))
        if level:
            crop = cv2.GaussianBlur(crop, (0, 0), 0.6 * level)
            noise = rng.normal(0, 6 * level, crop.shape)
            crop = np.clip(crop.astype(np.float64) + noise, 0, 255).astype(np.uint8)
        images[i] = crop
        levels[i] = level
    return images, levels


def _photo_sources() -> list[np.ndarray]:
    try:
        from grmp_edge.images import read_rgb
        from grmp_edge.data.pristine import bundled_photos
    except ImportError:
        return []
    return [read_rgb(p) for p in bundled_photos()[:8]]


def _synthetic_scene(rng: np.random.Generator, side: int) -> np.ndarray:
    import cv2

    yy, xx = np.mgrid[0:side, 0:side] / side
    base = np.stack([xx, yy, 1 - xx * yy], -1) * rng.uniform(80, 255, 3)
    img = np.ascontiguousarray(base.astype(np.uint8))
    for _ in range(6):
        centre = tuple(int(v) for v in rng.integers(0, side, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.circle(img, centre, int(rng.integers(4, side // 3)), colour, -1)
    return img


def build_tiny_vit(images: np.ndarray | None = None, seed: int = 0):
    """The tiny quality ViT as a torch module (eval mode); its head is fitted to ``images``' spread."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(WIDTH)
            self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
            self.proj = nn.Linear(WIDTH, WIDTH)
            self.ln_2 = nn.LayerNorm(WIDTH)
            self.fc = nn.Linear(WIDTH, 4 * WIDTH)
            self.act = nn.GELU()
            self.out = nn.Linear(4 * WIDTH, WIDTH)

        def forward(self, x):
            n, t, _ = x.shape
            q, k, v = self.qkv(self.ln_1(x)).reshape(n, t, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4).unbind(0)
            attn = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (WIDTH // HEADS) ** -0.5, dim=-1)
            x = x + self.proj(torch.matmul(attn, v).transpose(1, 2).reshape(n, t, WIDTH))
            return x + self.out(self.act(self.fc(self.ln_2(x))))

    class TinyQualityViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.481, 0.458, 0.408]).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor([0.269, 0.261, 0.276]).view(1, 3, 1, 1) * 255)
            self.conv = nn.Conv2d(3, WIDTH, PATCH, PATCH, bias=False)
            self.cls = nn.Parameter(torch.randn(WIDTH) * 0.5)
            self.pos = nn.Parameter(torch.randn((SIZE // PATCH) ** 2 + 1, WIDTH) * 0.5)
            self.ln_pre = nn.LayerNorm(WIDTH)
            self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
            self.ln_post = nn.LayerNorm(WIDTH)
            self.visual_proj = nn.Parameter(torch.randn(WIDTH, EMBED) * WIDTH ** -0.5)
            self.register_buffer("direction", torch.zeros(EMBED))
            self.register_buffer("centre", torch.zeros(()))

        def embed(self, image):
            # Cast before the transpose: TensorRT takes uint8 only as a network input, so the exported
            # graph must not transpose it (the folded model's forward casts first too).
            x = (image.float().permute(0, 3, 1, 2) - self.mean) / self.std
            x = self.conv(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], 1, WIDTH), x], dim=1) + self.pos
            x = self.ln_pre(x)
            for block in self.blocks:
                x = block(x)
            x = torch.matmul(self.ln_post(x[:, 0]), self.visual_proj)
            return x / x.norm(dim=-1, keepdim=True)

        def forward(self, image):
            return torch.sigmoid(torch.matmul(self.embed(image), self.direction) - self.centre)

    torch.manual_seed(seed)
    model = TinyQualityViT().eval()
    with torch.no_grad():
        # Trained LayerNorms have distinct affine parameters; identical ones would be shared by the
        # exporter through Identity nodes, which no real checkpoint produces.
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    if images is not None:
        with torch.no_grad():
            emb = model.embed(torch.from_numpy(images)).double()
            centred = emb - emb.mean(0)
            axis = torch.linalg.svd(centred, full_matrices=False).Vh[0]
            proj = emb @ axis
            # Scale so the scores span roughly (0.1, 0.9): a saturated sigmoid would hide drift.
            scale = 4.0 / (proj.std() * 3 + 1e-12)
            model.direction.copy_((axis * scale).float())
            model.centre.copy_((proj.mean() * scale).float())
    return model


def export_tiny_vit(model, path: Path, opset: int = OPSET) -> Path:
    """Export with the TorchScript exporter: opset 17, LayerNormalization as one node, dynamic batch."""
    import torch

    # dynamo=True needs onnxscript; the TorchScript exporter still writes opset 17 with one
    # LayerNormalization node, and warns that it is legacy.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["score"],
            dynamic_axes={"image": {0: "batch"}, "score": {0: "batch"}},
            opset_version=opset,
        )
    return path


@dataclass(frozen=True)
class TinyGraph:
    """An exported tiny quality graph with its images and torch reference scores."""

    onnx_path: Path
    images: np.ndarray
    levels: np.ndarray
    torch_scores: np.ndarray

    def batches(self, size: int = 8, start: int = 0, stop: int | None = None) -> list[np.ndarray]:
        """The images (optionally a slice) in uint8 NHWC batches of ``size``."""
        imgs = self.images[start:stop]
        return [imgs[i:i + size] for i in range(0, len(imgs), size)]


@pytest.fixture(scope="session")
def tiny_images():
    """(images, levels): 64 structured uint8 NHWC 32x32 crops and their degradation levels."""
    return structured_images()


@pytest.fixture(scope="session")
def tiny_vit(tiny_images):
    """The tiny quality ViT torch module (session-wide, eval mode)."""
    pytest.importorskip("torch", reason="building the test graph needs torch")
    return build_tiny_vit(tiny_images[0])


@pytest.fixture(scope="session")
def tiny_graph(tiny_vit, tiny_images, tmp_path_factory) -> TinyGraph:
    """The tiny quality ViT exported to ONNX (opset 17), with its images and torch scores."""
    import torch

    pytest.importorskip("onnxruntime", reason="export tests need onnxruntime")
    torch.set_num_threads(1)
    images, levels = tiny_images
    path = export_tiny_vit(tiny_vit, tmp_path_factory.mktemp("tiny_vit") / "model_fp32.onnx")
    with torch.no_grad():
        scores = tiny_vit(torch.from_numpy(images)).numpy()
    return TinyGraph(path, images, levels, scores)


@pytest.fixture(scope="module")
def model():
    """grmp-tiny with random weights (few prompts keep it fast; folding does not depend on the count)."""
    import torch

    from grmp_edge.train.backbones import model_spec
    from grmp_edge.train.model import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_model(model_spec("grmp-tiny", None, vpt_tokens=8)).eval()


@pytest.fixture(scope="module")
def crops(model):
    """70 real-photo crops (the bundled photos, several crops each) at the model's input size."""
    from grmp_edge.export.calibration import load_calibration

    return load_calibration(None, model.spec.preprocess, 16, 70).eval.images
