"""Residency: the rewrites that keep the models on the mobile accelerators (parity with the reference), residency
figures of a hand-built ONNX graph against a hand count, the residency gates (a planted unsupported op fails with
one line naming the op and the accelerator), the TFLite GPU table and the profile / config schema."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper

from edgeseg.gates import Evidence, Thresholds, failures, judge_absolute
from edgeseg.residency import Residency, ResidencyLimit, cell

# --------------------------------------------------------------------------------------------------------------
# rewrites: parity at 1e-5 in fp32
# --------------------------------------------------------------------------------------------------------------


def test_hardswish_as_clip_matches_hardswish_and_is_declared_for_onnx():
    from edgeseg.models.registry import deploy_rewrites
    from edgeseg.rewrite.common import HardswishAsClamp

    x = torch.linspace(-8, 8, 4001).reshape(1, 1, 1, -1)
    assert (HardswishAsClamp()(x) - F.hardswish(x)).abs().max().item() <= 1e-5
    assert "hardswish-as-clip" in deploy_rewrites("efficientvit-b0", "onnx", "fp16")
    # fp32 ONNX is ORT CPU's artifact, where HardSwish fuses into the conv (the 4-op form cost latency)
    for fmt, precision in (("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tensorrt", "fp16")):
        assert "hardswish-as-clip" not in deploy_rewrites("efficientvit-b0", fmt, precision)


@pytest.mark.parametrize("size", [(12, 10), (2, 2)])  # linear branch (120 tokens > dim) and quadratic (4 <= dim)
def test_attention_normaliser_matmul_matches_litemla(size):
    from edgeseg.models.efficientvit.model import LiteMLA
    from edgeseg.models.efficientvit.rewrites import LiteMLAOnesMatmulNormaliser

    torch.manual_seed(0)
    ref = LiteMLA(32, 32, dim=8).eval()
    x = torch.randn(1, 32, *size)
    with torch.no_grad():
        diff = (LiteMLAOnesMatmulNormaliser(ref)(x) - ref(x)).abs().max().item()
    assert diff <= 1e-5, diff


def test_attention_normaliser_matmul_is_onnx_only_and_supersedes():
    from edgeseg.models.registry import deploy_rewrites

    onnx_rw = deploy_rewrites("efficientvit-b1", "onnx", "fp16")
    assert "attention-normaliser-matmul" in onnx_rw and "attention-fp32-normaliser" not in onnx_rw
    assert "attention-fp32-normaliser" in deploy_rewrites("efficientvit-b1", "tensorrt", "fp16")


def test_gelu_erfc_rational_matches_erf_gelu():
    from edgeseg.models.registry import deploy_rewrites
    from edgeseg.rewrite.common import GeluErfcRational

    x = torch.linspace(-12, 12, 240001)
    assert (GeluErfcRational(nn.GELU())(x) - F.gelu(x)).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="erf GELU"):
        GeluErfcRational(nn.GELU(approximate="tanh"))
    for model in ("lvt", "segformer-b0"):
        assert "gelu-erfc-rational" in deploy_rewrites(model, "onnx", "fp16")
        assert "gelu-erfc-rational" not in deploy_rewrites(model, "onnx", "fp32")
        assert "gelu-erfc-rational" not in deploy_rewrites(model, "tflite", "fp16")


def test_layernorm_matmul_matches_layernorm_and_supersedes_in_fp16_onnx():
    from edgeseg.models.registry import deploy_rewrites
    from edgeseg.rewrite.common import LayerNormMatmulFp32

    torch.manual_seed(0)
    ref = nn.LayerNorm(64, eps=1e-6)
    nn.init.normal_(ref.weight)
    nn.init.normal_(ref.bias)
    x = torch.randn(2, 50, 64) * 3 + 1
    with torch.no_grad():
        assert (LayerNormMatmulFp32(ref)(x) - ref(x)).abs().max().item() <= 1e-5
    for model in ("lvt", "segformer-b0"):
        fp16 = deploy_rewrites(model, "onnx", "fp16")
        assert "layernorm-matmul-fp32" in fp16 and "layernorm-fp32" not in fp16
        assert "layernorm-fp32" in deploy_rewrites(model, "onnx", "fp32")


def test_gelu_erfc_rational_exports_only_ops_every_mobile_ep_takes(tmp_path):
    from edgeseg.backends.onnx.residency import partition_model
    from edgeseg.rewrite.common import GeluErfcRational

    path = tmp_path / "gelu.onnx"
    torch.onnx.export(GeluErfcRational().eval(), (torch.randn(1, 4, 8, 8),), str(path), dynamo=True, opset_version=18)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Erf", "Exp", "Abs", "Neg", "Reciprocal"}, ops
    for acc in ("nnapi", "coreml-neuralnetwork", "coreml-mlprogram"):
        r = partition_model(model, acc)
        assert (r.partitions, r.nodes_supported) == (1, r.nodes_total), r.summary()


# --------------------------------------------------------------------------------------------------------------
# residency of a hand-built graph, counted by hand
# --------------------------------------------------------------------------------------------------------------


def _chain_model(path) -> None:
    """x -> Relu -> HardSwish -> Relu -> ReduceSum(axis 1, keepdims) -> Relu: five nodes in a chain."""
    shape = [1, 4, 8, 8]
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu0"),
        helper.make_node("HardSwish", ["a"], ["b"], name="hswish"),
        helper.make_node("Relu", ["b"], ["c"], name="relu1"),
        helper.make_node("ReduceSum", ["c", "axes"], ["d"], name="rsum", keepdims=1),
        helper.make_node("Relu", ["d"], ["y"], name="relu2"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


def test_ort_partitions_of_a_hand_built_graph_match_a_hand_count(tmp_path):
    from edgeseg.backends.onnx.residency import partition_model

    path = tmp_path / "chain.onnx"
    _chain_model(path)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    # NNAPI: no HardSwish, no ReduceSum -> Relu | x | Relu | x | Relu: 3 partitions, 3 of 5 nodes
    nnapi = partition_model(model, "nnapi")
    assert (nnapi.nodes_total, nnapi.nodes_supported, nnapi.partitions) == (5, 3, 3)
    assert nnapi.unsupported_ops == {"HardSwish": 1, "ReduceSum": 1}
    # Core ML MLProgram: ReduceSum yes, HardSwish no -> Relu | x | Relu ReduceSum Relu: 2 partitions, 4 of 5
    ml = partition_model(model, "coreml-mlprogram")
    assert (ml.nodes_supported, ml.partitions, ml.unsupported_ops) == (4, 2, {"HardSwish": 1})
    assert "onnxruntime" in ml.tool and ml.fraction == pytest.approx(0.8)
    assert ml.summary() == "coreml-mlprogram: 4/5 nodes, 2 partitions (not taken: HardSwish x1)"


def test_onnx_backend_residency_names_its_tools(tmp_path):
    from edgeseg.backends import backend_for

    path = tmp_path / "chain.onnx"
    _chain_model(path)
    records = backend_for("onnx").residency(path)
    by_acc = {r.accelerator: r for r in records}
    assert set(by_acc) == {"nnapi", "coreml-neuralnetwork", "coreml-mlprogram", "ort-cpu"}
    assert by_acc["nnapi"].partitions > 1 and by_acc["nnapi"].nodes_supported < by_acc["nnapi"].nodes_total
    cpu = by_acc["ort-cpu"]
    assert cpu.nodes_supported == cpu.nodes_total > 0 and "CPUExecutionProvider" in cpu.tool
    assert all(r.tool for r in records)


def test_tensorrt_onnx_side_residency_is_labelled(tmp_path):
    from edgeseg.backends.tensorrt.residency import onnx_side_residency

    path = tmp_path / "chain.onnx"
    _chain_model(path)
    r = onnx_side_residency(path)
    assert (r.nodes_total, r.nodes_supported, r.partitions) == (5, 5, 1)
    assert r.tool.startswith("ONNX-side") and "not the engine" in r.tool


# --------------------------------------------------------------------------------------------------------------
# gates
# --------------------------------------------------------------------------------------------------------------


def _planted(tmp_path) -> list[dict]:
    from edgeseg.backends.onnx.residency import partition_model

    path = tmp_path / "chain.onnx"
    _chain_model(path)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    return [partition_model(model, a).model_dump() for a in ("nnapi", "coreml-mlprogram")]


def test_residency_gate_fails_on_a_planted_unsupported_op_with_one_line(tmp_path):
    limits = {"nnapi": ResidencyLimit(max_partitions=1, min_delegated_fraction=1.0)}
    ev = Evidence(precision="fp32", residency=_planted(tmp_path), profile_residency=limits)
    failed = {g.name: g for g in failures(judge_absolute(ev))}
    assert set(failed) == {"partitions", "delegated"}
    line = failed["partitions"].reason()
    assert "\n" not in line and "nnapi" in line and "HardSwish x1" in line and "ReduceSum x1" in line
    assert line.startswith("partitions: nnapi: 3 partitions > 1")
    assert "nnapi: 3/5 nodes (60.00 %) < 100.00 %" in failed["delegated"].reason()


def test_residency_gate_config_overrides_the_profile_and_skips_other_formats(tmp_path):
    records = _planted(tmp_path)
    profile = {"nnapi": ResidencyLimit(max_partitions=1), "tflite-gpu": ResidencyLimit(max_partitions=1)}
    loose = Thresholds(residency={"nnapi": {"max_partitions": 3}, "coreml-mlprogram": {"max_partitions": 2}})
    gates = judge_absolute(Evidence(precision="fp32", thresholds=loose, residency=records, profile_residency=profile))
    (partitions,) = [g for g in gates if g.name == "partitions"]
    assert partitions.status == "passed" and "tflite-gpu" not in partitions.detail  # no record: not this artifact's
    # no records (an artifact exported before residency, a format with none): no gate at all
    assert not [g for g in judge_absolute(Evidence("fp32", profile_residency=profile)) if g.name == "partitions"]


def test_device_profiles_name_their_accelerators():
    from edgeseg.bench.profiles import get_profile

    assert {"nnapi", "qnn", "tflite-gpu"} <= set(get_profile("galaxy-s24").accelerators)
    assert "coreml-ane" in get_profile("iphone-15-pro").accelerators
    assert set(get_profile("jetson-orin").accelerators) == {"tensorrt"}


# --------------------------------------------------------------------------------------------------------------
# TFLite GPU delegate table, records in cells
# --------------------------------------------------------------------------------------------------------------


def test_tflite_gpu_table_counts_rejected_ops_and_ranks():
    from edgeseg.backends.tflite.residency import analyzer_flags, gpu_residency_of

    ops = [
        {"index": 0, "op_name": "CONV_2D", "inputs": np.array([0]), "outputs": np.array([1])},
        {"index": 1, "op_name": "GATHER_ND", "inputs": np.array([1]), "outputs": np.array([2])},
        {"index": 2, "op_name": "RESHAPE", "inputs": np.array([2]), "outputs": np.array([3])},  # to 5-D
        {"index": 3, "op_name": "ADD", "inputs": np.array([2, -1]), "outputs": np.array([4])},
        {"index": 4, "op_name": "MUL", "inputs": np.array([4]), "outputs": np.array([5])},  # flagged by the analyzer
    ]
    ranks = {0: 4, 1: 4, 2: 4, 3: 5, 4: 4, 5: 4}
    r = gpu_residency_of(ops, ranks, {4}, "1 nodes flagged", "tool")
    assert (r.nodes_total, r.nodes_supported, r.partitions) == (5, 2, 2)
    assert r.unsupported_ops == {"GATHER_ND": 1, "RESHAPE (>4-D)": 1, "MUL": 1}
    warning = "GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 3, 7"
    flagged, ok = analyzer_flags(warning)
    assert flagged == {3, 7} and not ok
    verdict = "Your model looks compatible with GPU delegate on TFLite runtime version 2.22"
    assert analyzer_flags(verdict) == (set(), True)


def test_residency_cell():
    r = Residency(accelerator="nnapi", tool="t", nodes_total=10, nodes_supported=9, partitions=2)
    assert cell([r.model_dump(), {**r.model_dump(), "accelerator": "x", "partitions": None}]) == "nnapi 9/10 2p; x 9/10"
    assert cell([]) == "-"


@pytest.mark.slow
def test_coreml_static_residency_counts_fp16_ops_only(tmp_path):
    """A three-op mlprogram: in fp16 the Neural Engine table takes all three; in fp32 none (the Neural Engine has
    no fp32 path). Off macOS the record says it is static."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    from edgeseg.backends.coreml.residency import coreml_residency

    def program():
        @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 8, 8))], opset_version=ct.target.iOS17)
        def prog(x):
            return mb.sigmoid(x=mb.add(x=mb.relu(x=x), y=1.0))

        return prog

    found = {}
    for name, precision in (("fp16", ct.precision.FLOAT16), ("fp32", ct.precision.FLOAT32)):
        model = ct.convert(program(), convert_to="mlprogram", compute_precision=precision)
        model.save(str(tmp_path / f"{name}.mlpackage"))
        (found[name],) = coreml_residency(tmp_path / f"{name}.mlpackage")
    assert (found["fp16"].nodes_total, found["fp16"].nodes_supported, found["fp16"].partitions) == (3, 3, 1)
    assert (found["fp32"].nodes_supported, found["fp32"].partitions) == (0, 0)
    assert found["fp32"].unsupported_ops == {"relu (fp32)": 1, "add (fp32)": 1, "sigmoid (fp32)": 1}
    if sys.platform != "darwin":
        assert found["fp16"].note.startswith("static")
