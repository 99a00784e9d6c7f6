"""TensorRT-RTX's real ONNX parser and builder on this machine (no GPU needed): every TensorRT graph of
a real exported bundle builds for SM86, SM89 and SM120 through ``grmp-edge export --engine --trt rtx``,
the plans' sidecars say what each computes, rejected graphs name their node, and the plan gates bite.

CI installs ``grmp-edge[all]``, which holds the ``tensorrt-rtx`` extra, so nothing here is skipped there.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
rtx = pytest.importorskip("tensorrt_rtx_bindings", reason="install grmp-edge[tensorrt-rtx] (x86-64)")

from grmp_edge.artifacts import sha256_file  # noqa: E402
from grmp_edge.cli import main  # noqa: E402
from grmp_edge.errors import GrmpError  # noqa: E402
from grmp_edge.export.gates import GateFailed  # noqa: E402
from grmp_edge.export.tensorrt_build import build_engine, load_sidecar, parse_onnx  # noqa: E402
from grmp_edge.export.trt_layers import EngineLayer, plan_gate_problems  # noqa: E402
from grmp_edge.export.trt_support import gate_tensorrt_support  # noqa: E402
from grmp_edge.runtime.bundle import load_bundle  # noqa: E402
from grmp_edge.train.backbones import model_spec  # noqa: E402
from grmp_edge.train.checkpoint import save_checkpoint  # noqa: E402
from grmp_edge.train.model import build_model  # noqa: E402

TARGETS = ["8.6", "8.9", "12.0"]


@pytest.fixture(scope="module")
def rtx_bundle(tmp_path_factory):
    """A real bundle of a grmp-tiny checkpoint (random weights) exported with every precision and
    TensorRT-RTX plans for SM86, SM89 and SM120, through the CLI; returns (folder, stdout)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("rtx")
    save_checkpoint(build_model(model_spec("grmp-tiny", None, vpt_tokens=8)).eval(), root / "ckpt")
    mp = pytest.MonkeyPatch()
    mp.setenv("GRMP_EDGE_RUNS", str(root / "runs"))
    try:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["export", "--checkpoint", str(root / "ckpt"), "--precision", "all", "--engine",
                         "--trt", "rtx", "--sm", "86,89,120", "--name", "rtx"])
    finally:
        mp.undo()
    assert code == 0, out.getvalue()
    return root / "runs" / "export" / "rtx", out.getvalue()


def test_every_tensorrt_graph_builds_for_three_rtx_targets(rtx_bundle):
    folder, out = rtx_bundle
    bundle = load_bundle(folder)  # hash checks included
    graphs = {f.path: f for f in bundle.manifest.files if f.format == "onnx" and "tensorrt" in f.targets}
    assert set(graphs) == {"model_fp32.onnx", "model_fp16.onnx", "model_int8_qdq.onnx"}
    plans = {f.precision: f for f in bundle.manifest.files if f.format == "plan"}
    assert set(plans) == {"fp32", "fp16", "int8"}
    for precision, plan in plans.items():
        assert plan.path == f"model_{precision}_rtx.plan" and plan.targets == ["tensorrt-rtx"]
        assert plan.info["compute_capabilities"] == TARGETS  # the manifest lists the plan's targets
        sidecar = bundle.sidecar(plan)
        source = graphs[sidecar["onnx"]]
        assert source.precision == precision
        assert sidecar["flavour"] == "tensorrt-rtx" and sidecar["tensorrt_version"] == rtx.__version__
        assert sidecar["compute_capabilities"] == TARGETS and sidecar["precision"] == precision
        assert sidecar["onnx_sha256"] == sha256_file(folder / source.path)
        assert sidecar["plan_bytes"] == (folder / plan.path).stat().st_size > 0
        assert sidecar["plan_gate"] == {"passed": True, "problems": []}
        assert bundle.file_for("tensorrt-rtx", precision) == plan
    assert "ok (TensorRT-RTX" in json.dumps(bundle.manifest.gates["tensorrt_support"])
    assert "--backend tensorrt-rtx --precision int8" in out


def test_sidecars_say_what_each_plan_computes(rtx_bundle):
    folder, _ = rtx_bundle
    layers = {p: load_sidecar(folder / f"model_{p}_rtx.plan")["layers"] for p in ("fp32", "fp16", "int8")}
    for summary in layers.values():
        assert sum(summary["gemm"].values()) > 0 and sum(summary["layernorm"].values()) > 0
        assert sum(summary["softmax"].values()) > 0
    assert set(layers["fp32"]["layers"]) - {"other"} and not layers["fp32"]["layers"]["fp16"] \
        and not layers["fp32"]["layers"]["int8"]
    assert set(layers["fp32"]["gemm"]) == {"fp32"}
    # The FP16 graph keeps LayerNorm in FP32 and runs its GEMMs in FP16; the plan must too.
    assert set(layers["fp16"]["layernorm"]) == {"fp32"}
    assert layers["fp16"]["gemm"].get("fp16", 0) > layers["fp16"]["gemm"].get("fp32", 0)
    assert layers["int8"]["gemm"].get("int8", 0) > 0 and set(layers["int8"]["layernorm"]) == {"fp32"}


def test_export_prints_the_layer_precisions(rtx_bundle):
    _, out = rtx_bundle
    assert "What each plan computes" in out and "int8" in out


def test_rejected_node_is_named_with_its_op(rtx_bundle, tmp_runs, capsys):
    folder, _ = rtx_bundle
    with pytest.raises(GrmpError, match=r"node '[^']+' \((DynamicQuantizeLinear|MatMulInteger)\)"):
        parse_onnx(folder / "model_int8_cpu.onnx", "tensorrt-rtx")
    # Through the CLI: one error line naming the node, no traceback, nothing written.
    assert main(["export", "--engine", "--trt", "rtx", "--onnx", str(folder / "model_int8_cpu.onnx"),
                 "--precision", "int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: TensorRT's ONNX parser rejects model_int8_cpu.onnx: node ") and "\n" not in err
    assert not (folder / "model_int8_rtx.plan.tmp").exists()


def test_export_gate_uses_the_parser_where_one_imports(rtx_bundle, monkeypatch):
    folder, _ = rtx_bundle
    assert gate_tensorrt_support(folder / "model_fp16.onnx", "model_fp16.onnx").startswith("TensorRT-RTX ")
    with pytest.raises(GrmpError, match=r"\((DynamicQuantizeLinear|MatMulInteger)\)"):
        gate_tensorrt_support(folder / "model_int8_cpu.onnx", "model_int8_cpu.onnx")
    # Where no TensorRT imports, the static operator table decides.
    from grmp_edge.runtime import plan_compat

    absent = {k: plan_compat.Flavour(f.name, "grmp_no_such_module", f.extra, f.label, f.option, f.aot)
              for k, f in plan_compat.FLAVOURS.items()}
    monkeypatch.setattr(plan_compat, "FLAVOURS", absent)
    assert gate_tensorrt_support(folder / "model_fp16.onnx", "model_fp16.onnx") == "TensorRT 10 operator table"


def test_plan_that_does_not_compute_its_precision_fails_its_gate(rtx_bundle, tmp_path, caplog):
    folder, _ = rtx_bundle
    # The FP32 graph built as if it were the INT8 one: no GEMM runs INT8, so no plan is written.
    with caplog.at_level(logging.DEBUG, logger="grmp_edge.runtime.tensorrt_backend"):
        with pytest.raises(GateFailed, match="no GEMM runs in INT8"):
            build_engine(folder / "model_fp32.onnx", tmp_path / "x.plan", "int8", flavour_name="tensorrt-rtx",
                         compute_capabilities=["8.9"])
    assert not (tmp_path / "x.plan").exists()
    # No TensorRT error lines: no timing cache is used where its calls would be no-ops failing on CUDA.
    assert not [r for r in caplog.records if "TensorRT error" in r.getMessage()]
    plan = build_engine(folder / "model_fp32.onnx", tmp_path / "x.plan", "int8", flavour_name="tensorrt-rtx",
                        compute_capabilities=["8.9"], allow_drift=True)
    sidecar = load_sidecar(plan)
    assert sidecar["plan_gate"]["passed"] is False and sidecar["compute_capabilities"] == ["8.9"]


def test_unknown_target_names_the_ones_it_builds(rtx_bundle, tmp_path):
    folder, _ = rtx_bundle
    with pytest.raises(GrmpError, match=r"cannot build for sm_87; it builds for .*sm_86.*sm_120"):
        build_engine(folder / "model_fp16.onnx", tmp_path / "x.plan", "fp16", flavour_name="tensorrt-rtx",
                     compute_capabilities=["87"])


def test_fp16_gate_catches_layernorms_left_in_fp16():
    """Pure rule check on hand-written layers (the real builder keeps them FP32, as tested above)."""
    norm = EngineLayer("ln", "kgen", ("Half",), ("Half",), ("Half",), ("/ln_1/LayerNormalization",))
    kinds, asked = {"/ln_1/LayerNormalization": "layernorm"}, {"/ln_1/LayerNormalization": "fp32"}
    assert "LayerNorms the graph keeps in FP32 run in FP16: ln" in plan_gate_problems("fp16", [norm], kinds, asked)[0]
    assert plan_gate_problems("fp16", [norm], kinds, {"/ln_1/LayerNormalization": "fp16"}) == []
    wide = EngineLayer("fc", "gemm", ("Float",), ("Int8", "Float"), ("Float",))
    int8 = EngineLayer("fc2", "gemm", ("Int8",), ("Int8", "Float"), ("Float",))
    assert plan_gate_problems("int8", [wide, int8], {}, {}) == ["GEMMs with INT8 weights run wider: fc"]
    assert plan_gate_problems("int8", [int8], {}, {}) == []
    assert plan_gate_problems("fp32", [], {}, {}) == ["the builder reported no layer information"]


@pytest.mark.slow
def test_vit_b16_grmp_graph_builds_in_every_precision(tmp_path):
    """The paper's ViT-B/16 GRMP graph (random weights, 100 prompt tokens) through the same path."""
    from grmp_edge.export.fold import fold_prompts
    from grmp_edge.export.fp16 import to_fp16
    from grmp_edge.export.int8 import quantize_int8_qdq
    from grmp_edge.export.onnx_export import export_onnx

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_model(model_spec("ViT-B-16", None)).eval()
    fp32 = export_onnx(fold_prompts(model), tmp_path / "model_fp32.onnx")
    fp16 = to_fp16(fp32, tmp_path / "model_fp16.onnx")
    rng = np.random.default_rng(0)
    size = model.spec.preprocess.size
    calib = [rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8) for _ in range(2)]
    qdq = quantize_int8_qdq(fp32, tmp_path / "model_int8_qdq.onnx", calib)
    for path, precision in ((fp32, "fp32"), (fp16, "fp16"), (qdq, "int8")):
        plan = build_engine(path, tmp_path / f"model_{precision}_rtx.plan", precision, flavour_name="tensorrt-rtx",
                            compute_capabilities=TARGETS)
        sidecar = load_sidecar(plan)
        assert sidecar["plan_gate"]["passed"] and sidecar["compute_capabilities"] == TARGETS
        assert sum(sidecar["layers"]["gemm"].values()) >= 12 * 4  # four products per block at least
