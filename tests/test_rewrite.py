"""Each rewrite against its reference module: fp32 parity, fp16 safety, unchanged state-dict keys."""

import pytest
import torch

from edgeseg.models.efficientvit import LiteMLA, UpSampleLayer
from edgeseg.models.efficientvit.rewrites import LiteMLAFp32Normaliser, UpSampleFp32
from edgeseg.models.registry import create_model
from edgeseg.rewrite import REWRITES, DeployWrapper, apply_rewrites


def _mla(dim=16, channels=64):
    torch.manual_seed(0)
    mla = LiteMLA(channels, channels, dim=dim).eval()
    for p in mla.parameters():  # non-trivial BN statistics
        p.data.normal_(0, 0.2)
    return mla


@pytest.mark.parametrize("hw", [(12, 15), (3, 4)])  # linear branch (180 tokens > dim) and quadratic (12 <= 16)
def test_attention_rewrite_matches_reference_fp32(hw):
    ref = _mla()
    new = LiteMLAFp32Normaliser(ref)
    x = torch.randn(2, 64, *hw)
    with torch.no_grad():
        a, b = ref(x), new(x)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_attention_rewrite_has_no_pad_and_keeps_keys():
    ref = _mla()
    new = LiteMLAFp32Normaliser(ref)
    assert list(new.state_dict()) == list(ref.state_dict())
    graph = torch.export.export(new, (torch.randn(1, 64, 12, 15),)).graph_module.code
    assert "pad" not in graph and "clamp_min" in graph


def test_attention_rewrite_survives_fp16_where_reference_overflows():
    ref = _mla()
    # large activations: per-head token sums of v k^T exceed fp16's 65504
    x = 40 * torch.rand(1, 64, 32, 32)
    with torch.no_grad():
        gold = ref(x)
        ref16 = ref.half()(x.half()).float()
        new16 = LiteMLAFp32Normaliser(ref).half()(x.half()).float()
    assert not torch.isfinite(ref16).all()  # the hazard is real
    assert torch.isfinite(new16).all()
    assert (new16 - gold).abs().max() <= 2e-2 * gold.abs().max()


def test_upsample_rewrite_matches_reference_and_keeps_dtype():
    ref = UpSampleLayer(factor=4)
    new = UpSampleFp32(ref)
    x = torch.randn(1, 8, 6, 7)
    assert torch.equal(ref(x), new(x))
    assert new(x.half()).dtype == torch.float16
    bilinear = REWRITES["bicubic-to-bilinear"].replace(ref)
    assert torch.allclose(bilinear(x), torch.nn.functional.interpolate(x, scale_factor=4, mode="bilinear"))


def test_apply_rewrites_whole_model_parity_and_counts():
    model, _ = create_model("efficientvit-b0", "camvid")
    deploy, counts = apply_rewrites(model, ["attention-fp32-normaliser", "upsample-fp32"])
    assert counts == {"attention-fp32-normaliser": 4, "upsample-fp32": 2}
    assert list(deploy.state_dict()) == list(model.state_dict())
    assert any(isinstance(m, LiteMLA) for m in model.modules())  # the reference is untouched (a copy)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        a, b = model(x), deploy(x)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_half_precision_model_runs_strongly_typed():
    model, _ = create_model("efficientvit-b0", "camvid")
    deploy, _ = apply_rewrites(model, ["attention-fp32-normaliser", "upsample-fp32"])
    wrapped = DeployWrapper(deploy.half(), dtype=torch.float16)
    with torch.no_grad():
        y = wrapped(torch.randn(1, 3, 64, 96))
        labels = DeployWrapper(deploy, dtype=torch.float16, with_argmax=True)(torch.randn(1, 3, 64, 96))
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert labels.dtype == torch.int32 and labels.shape == (1, 64, 96)


@pytest.mark.parametrize("factor", [2, 4])
def test_bicubic_as_conv_equals_pytorch_bicubic(factor):
    from edgeseg.models.efficientvit.rewrites import BicubicAsConv

    ref = UpSampleLayer(factor=factor)
    new = BicubicAsConv(ref)
    x = torch.randn(1, 16, 12, 15) * 3
    a, b = ref(x), new(x)
    assert a.shape == b.shape and (a - b).abs().max() <= 1e-5 * a.abs().max()
    assert new(x.half()).dtype == torch.float16
    assert dict(new.state_dict()) == {}  # no new keys in the model's state dict


def test_bicubic_as_conv_graph_has_no_resize_and_stays_4d():
    from edgeseg.models.efficientvit.rewrites import BicubicAsConv

    new = BicubicAsConv(UpSampleLayer(factor=4)).eval()
    gm = torch.export.export(new, (torch.randn(1, 8, 6, 7),)).run_decompositions({}).graph_module
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert not any("upsample" in t or "pad" in t or "gather" in t for t in targets), targets
    ranks = [len(n.meta["val"].shape) for n in gm.graph.nodes if "val" in n.meta and hasattr(n.meta["val"], "shape")]
    assert max(ranks) == 4


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("shape", [(1, 32, 12, 15), (1, 5, 1, 7), (2, 3, 6, 2)])
def test_bicubic_as_matmul_equals_pytorch_bicubic(factor, shape):
    from edgeseg.models.efficientvit.rewrites import BicubicAsMatmul

    ref = UpSampleLayer(factor=factor)
    new = BicubicAsMatmul(ref)
    x = torch.randn(*shape) * 3
    x[..., 0, :] += 20  # large border rows/columns: the clamped taps must add up there
    x[..., -1] -= 20
    a, b = ref(x), new(x)
    assert a.shape == b.shape and (a - b).abs().max() <= 1e-5 * a.abs().max()
    assert new(x.half()).dtype == torch.float16
    assert dict(new.state_dict()) == {}


def test_bicubic_as_matmul_graph_is_two_matmuls_rank_4():
    from edgeseg.models.efficientvit.rewrites import BicubicAsMatmul

    new = BicubicAsMatmul(UpSampleLayer(factor=4)).eval()
    gm = torch.export.export(new, (torch.randn(1, 8, 6, 7),)).run_decompositions({}).graph_module
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert not any("upsample" in t or "pad" in t or "gather" in t or "cat" in t for t in targets), targets
    assert sum("matmul" in t or "mm" in t for t in targets) == 2, targets
    ranks = [len(n.meta["val"].shape) for n in gm.graph.nodes if "val" in n.meta and hasattr(n.meta["val"], "shape")]
    assert max(ranks) == 4


def test_model_with_exact_bicubic_matches_reference():
    model, _ = create_model("efficientvit-b1", "camvid")
    deploy, counts = apply_rewrites(model, ["attention-fp32-normaliser", "bicubic-as-conv"])
    assert counts == {"attention-fp32-normaliser": 7, "bicubic-as-conv": 2}  # b1: 3 + 4 blocks
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        a, b = model(x), deploy(x)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_hardswish_as_clamp_equals_hardswish():
    from edgeseg.rewrite.common import HardswishAsClamp

    x = torch.linspace(-8, 8, 4001).reshape(1, 1, 1, -1)
    assert torch.allclose(HardswishAsClamp()(x), torch.nn.Hardswish()(x), atol=1e-6)


def test_hardswish_as_clamp_int8_tflite_stays_nhwc(tmp_path):
    """With scalar constants PT2E made 0-D quantized inputs and litert-torch's layout pass ran the activation in
    NCHW between two TRANSPOSEs of the whole feature map; the 4-D constants keep conv -> activation -> conv NHWC."""
    pytest.importorskip("litert_torch")
    from ai_edge_litert.interpreter import Interpreter

    from edgeseg.exporters.tflite import export_tflite
    from edgeseg.rewrite.common import HardswishAsClamp

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(8, 16, 1), HardswishAsClamp(), torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
    ).eval()
    x = torch.randn(1, 8, 16, 20)
    path = tmp_path / "hs.tflite"
    export_tflite(net, x, path, "int8", True, calib_inputs=[torch.randn(1, 8, 16, 20) for _ in range(2)])
    ops = [o["op_name"] for o in Interpreter(model_path=str(path))._get_ops_details()]  # before delegation
    assert "TRANSPOSE" not in ops and "HARD_SWISH" not in ops, ops
    assert ops.count("CONV_2D") + ops.count("DEPTHWISE_CONV_2D") == 2
