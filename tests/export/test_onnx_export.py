"""ONNX export of the folded model: pinned opset, graph contract, image-only weights, metadata, parity."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from grmp_edge.errors import GrmpError  # noqa: E402
from grmp_edge.export.fold import fold_prompts  # noqa: E402
from grmp_edge.export.gates import run_onnx  # noqa: E402
from grmp_edge.export.onnx_export import (  # noqa: E402
    METADATA_MODEL_SPEC,
    METADATA_PREPROCESS,
    check_opset,
    export_onnx,
    graph_contract_problems,
    parity_gate,
    read_metadata,
)
from grmp_edge.export.trt_support import check_tensorrt_support  # noqa: E402
from grmp_edge.spec import ModelSpec, PreprocessSpec  # noqa: E402


@pytest.fixture(scope="module")
def folded(model):
    return fold_prompts(model)


@pytest.fixture(scope="module")
def exported(folded, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model_fp32.onnx"
    export_onnx(folded, path, metadata={"grmp_edge.note": "test"})
    return path, onnx.load(str(path))


def test_graph_contract(exported, folded, model):
    path, proto = exported
    assert {o.domain: o.version for o in proto.opset_import} == {"": 17}
    ops = Counter(n.op_type for n in proto.graph.node)
    blocks = len(model.clip.visual.transformer.resblocks)
    assert ops["LayerNormalization"] == 2 * blocks + 3  # one node each: nothing decomposed
    assert ops["Softmax"] == blocks and ops["MatMul"] >= 2 * blocks  # plain MatMul/Softmax/MatMul attention
    assert not {"ReduceMean", "Pow", "Attention", "MultiHeadAttention"} & set(ops)
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    (image,) = proto.graph.input
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert image.name == "image" and image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert isinstance(dims[0], str) and dims[1:] == [96, 96, 3]
    assert [o.name for o in proto.graph.output] == ["score"]
    assert graph_contract_problems(proto, folded) == []
    assert check_tensorrt_support(proto) == []


def test_holds_image_tower_weights_only(exported, folded, model):
    _, proto = exported
    initializer_bytes = sum(onnx.numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)
    image_side = sum(p.numel() * 4 for p in folded.parameters()) + sum(b.numel() * 4 for b in folded.buffers())
    text_side = sum(p.numel() * 4 for m in (model.clip.transformer, model.clip.token_embedding, model.prompt_learner)
                    for p in m.parameters())
    assert abs(initializer_bytes - image_side) <= 0.02 * image_side
    assert initializer_bytes < text_side  # the text tower alone would not fit in what the graph holds
    vocab = tuple(model.clip.token_embedding.weight.shape)
    text_pos = tuple(model.clip.positional_embedding.shape)
    shapes = {tuple(t.dims) for t in proto.graph.initializer}
    assert vocab not in shapes and text_pos not in shapes


def test_metadata_holds_the_specs(exported, model):
    path, _ = exported
    meta = read_metadata(path)
    assert ModelSpec.from_dict(json.loads(meta[METADATA_MODEL_SPEC])).to_dict() == model.spec.to_dict()
    assert PreprocessSpec.from_dict(json.loads(meta[METADATA_PREPROCESS])) == model.spec.preprocess
    assert meta["grmp_edge.note"] == "test"


def test_parity_gate_on_real_photos(exported, folded, crops):
    path, _ = exported
    report = parity_gate(folded, path, crops)
    assert report.passed and report.n == len(crops) >= 64
    assert report.max_abs <= 1e-4
    assert list(report.to_dict()) == ["n", "max_abs", "p99_abs", "mean_abs", "tolerance", "passed"]


def test_parity_gate_fails_with_a_report(exported, model, crops):
    path, _ = exported
    drifted = fold_prompts(model)
    drifted.direction.mul_(1.5)  # the PyTorch side no longer matches what was exported
    with pytest.raises(GrmpError, match=r"parity gate failed: max \|delta score\| .* on 70 images"):
        parity_gate(drifted, path, crops)


def test_parity_gate_needs_64_real_images(exported, folded, crops):
    path, _ = exported
    with pytest.raises(GrmpError, match=">= 64"):
        parity_gate(folded, path, crops[:32])
    with pytest.raises(GrmpError, match="uint8"):
        parity_gate(folded, path, crops.astype(np.float32))


def test_batch_axis_is_dynamic(exported, folded, crops):
    path, _ = exported
    one = run_onnx(path, [crops[:1]])
    five = run_onnx(path, [crops[:5]])
    np.testing.assert_allclose(one, five[:1], atol=1e-6)
    np.testing.assert_allclose(five, folded.scores(crops[:5]), atol=1e-5)


def test_opset_range(folded, tmp_path):
    for bad in (12, 21):
        with pytest.raises(GrmpError, match="between 13 and 20"):
            check_opset(bad)
    path = export_onnx(folded, tmp_path / "opset13.onnx", opset=13, simplify=False)
    proto = onnx.load(str(path))
    assert {o.domain: o.version for o in proto.opset_import} == {"": 13}
    assert "LayerNormalization" not in {n.op_type for n in proto.graph.node}  # below 17 it is decomposed
    assert check_tensorrt_support(proto) == []


def test_embedding_output(model, crops, tmp_path):
    folded = fold_prompts(model, embedding=True)
    path = export_onnx(folded, tmp_path / "emb.onnx")
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["score", "embedding"]
    embedding = run_onnx(path, [crops[:4]], output="embedding")
    np.testing.assert_allclose(np.linalg.norm(embedding.reshape(4, -1), axis=1), 1.0, atol=1e-5)
