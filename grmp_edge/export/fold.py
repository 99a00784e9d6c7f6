"""Fold a trained GRMP model into the deployable image-only module that export traces.

At deployment nothing about the prompts changes, so everything that does not depend on the image is
computed once here and kept as constants:

* the deep visual prompts after their shared projection (dropout is a training-time operation);
* the whole text side: with two class prompts, ``softmax(s * [<f, t_high>, <f, t_low>])[0]`` equals
  ``sigmoid(<f, w>)`` with ``w = s * (t_high - t_low)``, so one ``(D,)`` vector replaces the text
  transformer, the token embedding table and the prompt learner;
* preprocessing after the crop: the uint8 NHWC crop is cast, scaled by 1/255, normalised per channel
  with the spec's mean/std and permuted to NCHW inside the graph.

Only the image tower's modules (and the prompt LayerNorm that follows it) are registered on the folded
module, so neither its ``state_dict`` nor a traced graph can carry a text-tower weight.
"""
from __future__ import annotations

import numpy as np

from grmp_edge.errors import GrmpError, require
from grmp_edge.export.onnx_export import EMBEDDING_NAME
from grmp_edge.spec import ModelSpec, OUTPUT_NAME

torch = require("torch", "train")


class FoldedQualityModel(torch.nn.Module):
    """``image`` uint8 ``(N, S, S, 3)`` RGB -> ``score`` ``(N,)`` in (0, 1) [, ``embedding`` ``(N, D)``].

    Built from a :class:`~grmp_edge.train.model.GRMPModel` (put into eval mode). The image tower is
    shared with that model, not copied; the prompts and the text direction are snapshots taken now.
    """

    def __init__(self, model, embedding: bool = False):
        super().__init__()
        spec: ModelSpec = model.spec
        if len(spec.classnames) != 2:
            raise GrmpError(f"folding needs exactly two class prompts (high, low), the model has {len(spec.classnames)}")
        model.eval()
        self.spec = spec
        self.image_size = spec.preprocess.size
        self.with_embedding = embedding
        # The GRMP model is held outside the module tree: its encode_image is reused as is, while only
        # the image-side modules below are registered (and so traced as weights).
        object.__setattr__(self, "_grmp", model)
        self.visual = model.clip.visual
        self.prompt_norm = model.visual_prompts.norm
        with torch.no_grad():
            prompts = model.visual_prompts.projected()
            high, low = model.text_features()
            direction = model.logit_scale * (high - low)
        self.register_buffer("prompts", prompts.detach().float().clone())
        self.register_buffer("direction", direction.detach().float().clone())
        self.register_buffer("mean", torch.tensor(spec.preprocess.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(spec.preprocess.std, dtype=torch.float32))

    @property
    def output_names(self) -> list[str]:
        """Graph output names, in order."""
        return [OUTPUT_NAME, EMBEDDING_NAME] if self.with_embedding else [OUTPUT_NAME]

    def expected_op_counts(self) -> dict[str, int]:
        """ONNX node counts a faithful export must show: one LayerNormalization per LayerNorm module
        and one Softmax per transformer block (plain attention)."""
        layer_norms = sum(isinstance(m, torch.nn.LayerNorm) for m in self.modules())
        return {"LayerNormalization": layer_norms, "Softmax": len(self.visual.transformer.resblocks)}

    def forward(self, image):
        # Same arithmetic, in the same order, as grmp_edge.preprocess.normalize.
        x = image.to(torch.float32) / 255.0
        x = ((x - self.mean) / self.std).permute(0, 3, 1, 2)
        features = self._grmp.encode_image(x, prompts=self.prompts, plain_attention=True)
        score = torch.sigmoid(features @ self.direction)
        return (score, features) if self.with_embedding else score

    def scores(self, images: np.ndarray, batch: int = 16) -> np.ndarray:
        """Scores of uint8 NHWC ``images`` as float64 numpy, in batches (the PyTorch reference)."""
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                result = self(torch.from_numpy(np.ascontiguousarray(images[i:i + batch])))
                out.append((result[0] if self.with_embedding else result).double().numpy())
        return np.concatenate(out)


def fold_prompts(model, embedding: bool = False) -> FoldedQualityModel:
    """The deployable folded module of a GRMP model (see :class:`FoldedQualityModel`)."""
    return FoldedQualityModel(model, embedding=embedding).eval()
