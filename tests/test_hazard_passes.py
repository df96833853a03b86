"""The fp16 / int8 hazard passes (edgeseg.rewrite.graph.hazard_passes) on user-style modules: each pattern is
matched by its ATen ops whatever the module is called, the rewrite is exact in fp32, and in half precision the
rewritten program stays close to the fp32 reference where the unmodified one overflows."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.rewrite.graph import rewrite_graph

SHAPE = (1, 3, 64, 64)
aten = torch.ops.aten


def _inputs(scale: float = 1.0):
    g = torch.Generator().manual_seed(5)
    border = 4 * torch.randn(SHAPE, generator=g)
    border[..., :4, :] = 0
    border[..., :, -6:] = -2
    return [scale * torch.randn(SHAPE, generator=g), scale * border]


def _applied(report) -> dict[str, int]:
    return {p["name"]: len(p["matches"]) for p in report["passes"] if p["applied"]}


def _targets(gm) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


class _Tokens(nn.Module):
    """Stride-4 patch embedding to (B, N, C) tokens, scaled up so fp16 holds the values but not their squares or
    sums; a 1x1 classifier on the map."""

    def __init__(self, c=16, scale=300.0):
        super().__init__()
        self.embed, self.head, self.c, self.scale = nn.Conv2d(3, c, 4, 4), nn.Conv2d(c, 5, 1), c, scale

    def tokens(self, x):
        return self.embed(x).flatten(2).transpose(1, 2) * self.scale

    def out(self, t, hw=16):
        return self.head(t.transpose(1, 2).reshape(1, self.c, hw, hw) / self.scale)


class WrittenOutLayerNorm(_Tokens):
    def __init__(self, variance="pow"):
        super().__init__(scale=1000.0)  # values in fp16's range, their squares not
        self.variance = variance
        self.w, self.b = nn.Parameter(torch.rand(16) + 0.5), nn.Parameter(torch.randn(16))

    def forward(self, x):
        t = self.tokens(x)
        u = t.mean(-1, keepdim=True)
        if self.variance == "pow":
            y = (t - u) / torch.sqrt((t - u).pow(2).mean(-1, keepdim=True) + 1e-6)
        else:
            y = (t - u) * torch.rsqrt(t.var(-1, unbiased=False, keepdim=True) + 1e-6)
        return self.out((y * self.w + self.b) * self.scale)  # out() divides by the scale


class ChannelsFirstLayerNorm(_Tokens):
    """ConvNeXt's LayerNorm2d: over dim 1 of an NCHW map, optionally with its ``w[:, None, None] * y +
    b[:, None, None]`` affine (folded into permute + layer_norm + permute, kept fp32)."""

    def __init__(self, affine: bool = False):
        super().__init__(scale=1000.0)
        self.affine = affine
        channels = self.embed.out_channels
        self.w, self.b = nn.Parameter(torch.rand(channels) + 0.5), nn.Parameter(torch.randn(channels))

    def forward(self, x):
        y = self.embed(x) * self.scale
        u = y.mean(1, keepdim=True)
        s = (y - u).pow(2).mean(1, keepdim=True)
        y = (y - u) / torch.sqrt(s + 1e-6)
        if self.affine:
            y = self.w[:, None, None] * y + self.b[:, None, None]
        return self.head(y)


class SoftmaxAttention(_Tokens):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(256, 256))

    def forward(self, x):
        t = self.tokens(x)
        attn = (t @ t.transpose(1, 2)) * 0.25 + self.bias
        return self.out(attn.softmax(-1) @ t)


class LinearAttentionNormaliser(_Tokens):
    def __init__(self):
        super().__init__(scale=3000.0)  # tokens within fp16's range, their sum over 256 tokens not

    def forward(self, x):
        t = self.tokens(x)
        a = F.relu(t)
        return self.out(a / (a.sum(1, keepdim=True) + 1e-4) * (256 * self.scale))  # ~1 per token after out()


class GeluHardswish(_Tokens):
    def __init__(self):
        super().__init__(scale=1.0)
        self.act1, self.act2 = nn.GELU(), nn.Hardswish()

    def forward(self, x):
        return self.out(self.act2(self.act1(self.tokens(x)) * 3))


def _half_errors(model, gm, x):
    """Relative max error of the unmodified and the rewritten module in fp16 against the fp32 reference (CPU half
    arithmetic: the numerics of a half-precision graph)."""
    import copy

    with torch.no_grad():
        ref = model(x)
        plain = copy.deepcopy(model).half()(x.half()).float()
        fixed = copy.deepcopy(gm).half()(x.half()).float()
    scale = float(ref.abs().max())
    err = lambda y: float((y - ref).abs().max()) / scale if torch.isfinite(y).all() else float("inf")  # noqa: E731
    return err(plain), err(fixed)


@pytest.mark.parametrize("variance", ["pow", "var"])
def test_layernorm_fold_is_one_op_and_exact(variance):
    torch.manual_seed(0)
    model = WrittenOutLayerNorm(variance).eval()
    gm, report = rewrite_graph(model, SHAPE, "user-ln", "onnx-fp32", fmt="onnx", precision="fp32")
    assert _applied(report) == {"layernorm-fold": 1}
    targets = _targets(gm)
    assert targets.count(aten.layer_norm.default) == 1
    assert not {aten.sqrt.default, aten.rsqrt.default, aten.var.correction, aten.pow.Tensor_Scalar} & set(targets)
    with torch.no_grad():
        for x in _inputs():
            ref = model(x)
            assert float((gm(x) - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


@pytest.mark.parametrize("affine", [False, True])
def test_channels_first_layernorm_folds_between_permutes(affine):
    """A LayerNorm over the channels of an NCHW map becomes permute -> layer_norm over C -> permute, exact to fp32
    summation order, with its per-channel affine moved into the op."""
    torch.manual_seed(0)
    model = ChannelsFirstLayerNorm(affine).eval()
    gm, report = rewrite_graph(model, SHAPE, "user-ln", "tflite-int8", fmt="tflite", precision="int8")
    assert _applied(report) == {"layernorm-fold": 1}
    targets = _targets(gm)
    assert targets.count(aten.layer_norm.default) == 1 and targets.count(aten.permute.default) == 2
    assert not {aten.sqrt.default, aten.pow.Tensor_Scalar, aten.mean.dim} & set(targets)
    ln = next(n for n in gm.graph.nodes if n.target is aten.layer_norm.default)
    assert (ln.args[2] is not None) == affine and list(ln.args[1]) == [model.embed.out_channels]
    with torch.no_grad():
        for x in _inputs():
            ref = model(x)
            assert float((gm(x) - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


def test_layernorm_fp32_keeps_the_variance_out_of_fp16():
    torch.manual_seed(0)
    for model, expect in ((WrittenOutLayerNorm().eval(), 1), (ChannelsFirstLayerNorm().eval(), 1)):
        gm, report = rewrite_graph(model, SHAPE, "user-ln", "trt-fp16", fmt="tensorrt", precision="fp16")
        applied = _applied(report)
        assert applied["layernorm-fp32"] == expect, report["passes"]
        assert report["max_rel_diff"] <= 1e-5
        plain, fixed = _half_errors(model, gm, _inputs()[0])
        assert plain > 0.1 and fixed < 1e-2, (type(model).__name__, plain, fixed)


def test_layernorm_to_matmul_for_onnx_fp16():
    """onnx-fp16: the LayerNorm (here folded from its written-out form) becomes fp32 matmul means, no
    layer_norm op left, exact to fp32 rounding, and fp16-safe."""
    torch.manual_seed(0)
    model = WrittenOutLayerNorm().eval()
    gm, report = rewrite_graph(model, SHAPE, "user-ln", "onnx-fp16", fmt="onnx", precision="fp16")
    assert _applied(report) == {"layernorm-fold": 1, "layernorm-to-matmul": 1}
    assert aten.layer_norm.default not in _targets(gm) and report["max_rel_diff"] <= 1e-5
    plain, fixed = _half_errors(model, gm, _inputs()[0])
    assert plain > 0.1 and fixed < 1e-2, (plain, fixed)


def test_softmax_fp32_region_from_scores_to_values():
    torch.manual_seed(0)
    model = SoftmaxAttention().eval()
    gm, report = rewrite_graph(model, SHAPE, "user-attn", "trt-fp16", fmt="tensorrt", precision="fp16")
    (match,) = next(p for p in report["passes"] if p["name"] == "softmax-fp32")["matches"]
    assert match.startswith("scores matmul -> softmax -> @ v")
    assert report["max_rel_diff"] == 0.0
    plain, fixed = _half_errors(model, gm, _inputs()[0])
    assert plain > 0.1 and fixed < 1e-2, (plain, fixed)


def test_normaliser_fp32_keeps_the_token_sum_out_of_fp16():
    torch.manual_seed(0)
    model = LinearAttentionNormaliser().eval()
    gm, report = rewrite_graph(model, SHAPE, "user-linear", "onnx-fp16", fmt="onnx", precision="fp16")
    assert _applied(report).get("normaliser-fp32") == 1 and report["max_rel_diff"] == 0.0
    plain, fixed = _half_errors(model, gm, _inputs()[0])
    assert plain > 0.1 and fixed < 1e-2, (plain, fixed)


def test_gelu_and_hardswish_by_target():
    torch.manual_seed(0)
    model = GeluHardswish().eval()
    gm, report = rewrite_graph(model, SHAPE, "user-act", "onnx-fp16", fmt="onnx", precision="fp16")
    assert {"gelu-erfc-rational", "hardswish-to-clamp"} <= set(_applied(report))
    assert not {aten.gelu.default, aten.hardswish.default} & set(_targets(gm))
    assert report["max_rel_diff"] <= 1e-5
    gm, report = rewrite_graph(model, SHAPE, "user-act", "tflite-int8", fmt="tflite", precision="int8")
    assert set(_applied(report)) == {"hardswish-to-clamp"}
    _, report = rewrite_graph(model, SHAPE, "user-act", "executorch-int8", fmt="executorch", precision="int8")
    assert _applied(report) == {}  # ExecuTorch's XNNPACK runs int8 Hardswish as one kernel
    _, report = rewrite_graph(model, SHAPE, "user-act", "onnx-fp32", fmt="onnx", precision="fp32")
    assert _applied(report) == {}
    skipped = {p["name"]: p.get("skipped", "") for p in report["passes"]}
    assert skipped["gelu-erfc-rational"].startswith("not for onnx-fp32")


EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "byom_models.py"


def test_swin_fp16_passes_match_by_pattern():
    """The Swin-like reference model: its LayerNorms, window attention and GELU are found by their ATen ops."""
    spec = importlib.util.spec_from_file_location("byom_models_for_hazards", EXAMPLES)
    byom = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(byom)
    torch.manual_seed(0)
    model = byom.swin().eval()
    gm, report = rewrite_graph(model, SHAPE, "swin", "onnx-fp16", fmt="onnx", precision="fp16")
    applied = _applied(report)
    assert applied["layernorm-to-matmul"] >= 2 and applied["softmax-fp32"] >= 1 and applied["gelu-erfc-rational"] >= 1
    assert report["after"]["max_rank"] <= 4 and report["max_rel_diff"] <= 1e-5


def test_onnx_fp16_export_casts_the_hazards(tmp_path):
    """A user file through `edgeseg export --target onnx-fp16`: the LayerNorm as fp32 matmul means and the softmax
    on fp32 inputs (Cast nodes) in a half graph, no Erf or LayerNormalization (one NNAPI partition), parity against
    the user's module."""
    import onnx

    user = tmp_path / "act_net.py"
    user.write_text(
        "import torch, torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.input_size = (32, 32)\n"
        "        self.embed, self.norm = nn.Conv2d(3, 8, 4, 4), nn.LayerNorm(8)\n"
        "        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))\n"
        "        self.head = nn.Conv2d(8, 4, 1)\n"
        "    def forward(self, x):\n"
        "        t = self.norm(self.embed(x).flatten(2).transpose(1, 2))\n"
        "        t = t + (t @ t.transpose(1, 2) * 0.3).softmax(-1) @ t\n"
        "        t = t + self.mlp(t)\n"
        "        return self.head(t.transpose(1, 2).reshape(1, 8, 8, 8))\n"
        "def build():\n"
        "    return Net()\n"
    )
    r = CliRunner().invoke(
        app,
        [
            "export",
            "--model",
            f"{user}:build",
            "--target",
            "onnx-fp16",
            "--out",
            str(tmp_path / "a"),
            "--parity-images",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    (manifest,) = (tmp_path / "a").glob("*/manifest.json")
    m = json.loads(manifest.read_text())
    for name in ("layernorm-to-matmul", "softmax-fp32", "gelu-erfc-rational"):
        assert m["rewrites"].get(name, 0) >= 1, m["rewrites"]
    nnapi = next(r for r in m["residency"] if r["accelerator"] == "nnapi")
    assert nnapi["unsupported_ops"] == {} and nnapi["partitions"] == 1, nnapi
    assert m["parity"]["argmax_agreement"] >= 0.99 and m["lint"]["clean"], (m["parity"], m["lint"])
    graph = onnx.shape_inference.infer_shapes(onnx.load(manifest.parent / m["file"])).graph
    ops = [n.op_type for n in graph.node]
    assert not {"Erf", "Gelu", "LayerNormalization"} & set(ops)
    elem = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    elem.update({t.name: t.data_type for t in graph.initializer})
    for op in ("Softmax", "Sqrt"):  # the attention softmax, the LayerNorm's variance root
        nodes = [n for n in graph.node if n.op_type == op]
        assert nodes and all(elem.get(n.input[0]) == onnx.TensorProto.FLOAT for n in nodes), op
    assert onnx.TensorProto.FLOAT16 in {elem[n.input[0]] for n in graph.node if n.op_type == "Conv"}  # a half graph


def test_folded_layernorm_keeps_its_statistics_out_of_pt2e_int8():
    """INT8 (PT2E, as TFLite / Core ML / ExecuTorch quantize): the written-out LayerNorm's mean, variance, eps add
    and quotient get int8 outputs; once folded into one layer_norm, none of them is quantized (the op is float, as
    the policy keeps LayerNorm)."""
    pytest.importorskip("litert_torch")
    from edgeseg.quantize.pt2e import pt2e_int8

    def quantized_producers(module) -> dict[str, int]:
        q, _ = pt2e_int8(module, torch.zeros(SHAPE), _inputs(), fold_quantize=False)
        out: dict[str, int] = {}
        for n in q.graph.nodes:
            name = str(n.target)
            if n.op == "call_function" and "quantize_per_tensor" in name and "dequantize" not in name:
                src = n.args[0]
                key = str(getattr(src, "target", src)).replace("aten.", "")
                out[key] = out.get(key, 0) + 1
        return out

    torch.manual_seed(0)
    model = WrittenOutLayerNorm().eval()
    gm, report = rewrite_graph(model, SHAPE, "user-ln", "tflite-int8", fmt="tflite", precision="int8")
    assert _applied(report) == {"layernorm-fold": 1}
    before, after = quantized_producers(model), quantized_producers(gm)
    assert before.get("mean.dim", 0) >= 2 and before.get("add.Tensor", 0) >= 2, before
    assert "mean.dim" not in after and "add.Tensor" not in after and after.get("layer_norm.default") == 1, after
