"""Graph passes for the hierarchical / convolutional attention families (edgeseg.rewrite.graph.hier_passes) and
the reference models of examples/byom_hier_models.py (MViTv2, LeViT, CvT, GCNet, HorNet-GF, BoTNet at 16x16).

Per pass: its pattern is matched in a small module written here, the rewritten program is exact on fresh random
inputs with borders, and every tensor has rank <= 4. Per family: the passes its captured program needs are the
ones applied, the result is exact and rank <= 4 with no hostile op left; its onnx-fp32 and tflite-fp32 exports
(slow) are lint clean with parity against the unmodified module."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.rewrite.graph import rewrite_graph

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "byom_hier_models.py"
_spec = importlib.util.spec_from_file_location("byom_hier_models_for_tests", EXAMPLES)
hier = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hier)


def _inputs(shape, n=2):
    """Fresh inputs (not the ones rewrite_graph verified on): noise, and a large-valued one with borders."""
    g = torch.Generator().manual_seed(321)
    border = 6 * torch.randn(shape, generator=g)
    border[..., :2, :] = 0
    border[..., :, -3:] = -2.5
    return [torch.randn(shape, generator=g), border][:n]


def _check(model, shape, name, tol=0.0):
    """Only pass ``name``: it matched, was applied, left rank <= 4, and is exact within ``tol`` (relative)."""
    gm, report = rewrite_graph(model.eval(), shape, "unit", "tflite-fp32", only=(name,))
    (record,) = report["passes"]
    assert record["matches"] and record["applied"], record
    assert report["after"]["max_rank"] <= 4 and report["after"]["rank_over_4"] == [], report["after"]
    with torch.no_grad():
        for x in _inputs(shape):
            ref, out = model(x), gm(x)
            assert out.shape == ref.shape
            assert float((out - ref).abs().max()) <= tol * max(1.0, float(ref.abs().max()))
    return gm, report


# --------------------------------------------------------------------------- per pass
class _EinsumAttention(nn.Module):
    """CvT-style einsum attention with both operands input-dependent."""

    def forward(self, x):  # (B, H, L, D)
        attn = torch.einsum("bhlk,bhtk->bhlt", x, x * 0.5).softmax(-1)
        return torch.einsum("bhlt,bhtv->bhlv", attn, x)


class _EinsumRelLogits(nn.Module):
    """BoTNet / MViT-style: a 5-D (permuted) view of the input against a constant table."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.rel = nn.Parameter(torch.randn(11, 4, generator=g))
        self.table = nn.Parameter(torch.randn(6, 5, 4, generator=g))

    def forward(self, x):  # (1, 2, 36, 4): 2 heads, a 6x6 map, d=4
        q5 = x.reshape(1, 2, 6, 6, 4)
        a = torch.einsum("bhxyd,rd->bhxyr", q5.permute(0, 1, 3, 2, 4), self.rel).reshape(1, 12, 6, 11)
        b = torch.einsum("byhwc,hkc->byhwk", q5, self.table).reshape(1, 2, 36, 5)
        return a.sum(-1, keepdim=True) + b.sum(-1, keepdim=True).reshape(1, 12, 6, 1)


def test_einsum_as_bmm_exact_rank4():
    _, report = _check(_EinsumAttention(), (1, 2, 9, 8), "einsum-as-bmm", tol=1e-5)
    assert report["before"]["hostile_ops"] == {"einsum.default": 2}
    assert report["after"]["hostile_ops"] == {}
    _, report = _check(_EinsumRelLogits(), (1, 2, 36, 4), "einsum-as-bmm", tol=1e-5)
    assert len(report["passes"][0]["matches"]) == 2 and report["before"]["max_rank"] == 5


class _Unsupported(nn.Module):
    def forward(self, x):
        return torch.einsum("bii->bi", x).unsqueeze(-1) + torch.einsum("...ij,...jk->...ik", x, x)


def test_einsum_outside_the_pattern_is_left_and_reported():
    _, report = rewrite_graph(_Unsupported().eval(), (2, 5, 5), "unit", "onnx-fp32", only=("einsum-as-bmm",))
    assert report["passes"][0]["matches"] == [] and report["after"]["hostile_ops"] == {"einsum.default": 2}


class _SliceAssign(nn.Module):
    """MViT's slice assignments: a whole-tensor one and one leaving a class-token row and column."""

    def forward(self, x):  # (B, H, N, N)
        attn = x @ x.transpose(-2, -1)
        attn[:, :, 0:, 0:] = attn[:, :, 0:, 0:] * 2
        attn[:, :, 1:, 1:] = attn[:, :, 1:, 1:] - 1
        out = attn.softmax(-1) @ x
        out[:, :, 1:, :] += x[:, :, 1:, :]
        return out


def test_slice_assign_as_cat_exact():
    _, report = _check(_SliceAssign(), (1, 2, 7, 7), "slice-assign-as-cat")
    ops = {k.split(".")[0] for k in report["after"]["hostile_ops"]}
    assert not ops & {"slice_scatter", "copy", "index_put"}


class _Broadcast6D(nn.Module):
    """MViT's ``attn.view(B, heads, qh, qw, kh, kw) + rel_h[..., None] + rel_w[..., None, :]``."""

    def forward(self, x):  # (1, 2, 12, 12): q 4x3, k 3x4
        attn = x.view(1, 2, 4, 3, 3, 4)
        rel_h = x[:, :, :, :3].reshape(1, 2, 4, 3, 3)
        rel_w = (x[:, :, :, 8:] * 3).reshape(1, 2, 4, 3, 4)
        return ((attn + rel_h[:, :, :, :, :, None]) * 0.5 - rel_w[:, :, :, :, None, :]).view(1, 2, 12, 12)


def test_broadcast_rank_lower_exact_rank4():
    _, report = _check(_Broadcast6D(), (1, 2, 12, 12), "broadcast-rank-lower")
    assert report["before"]["max_rank"] == 6


class _ExpandPermute(nn.Module):
    """BoTNet's ``logits.unsqueeze(3).expand(-1, -1, -1, h, -1, -1).permute(...)`` for both directions."""

    def forward(self, x):  # (1, 2, 20, 5): heads 2, h 4, w 5
        lw = x.reshape(1, 2, 4, 5, 5).unsqueeze(3).expand(-1, -1, -1, 4, -1, -1)
        lw = lw.permute(0, 1, 2, 4, 3, 5).reshape(1, 2, 20, 20)
        lh = x[:, :, :, :4].reshape(1, 2, 5, 4, 4).unsqueeze(3).expand(-1, -1, -1, 5, -1, -1)
        lh = lh.permute(0, 1, 4, 2, 5, 3).reshape(1, 2, 20, 20)
        return lw + 2 * lh


def test_expand_rank_lower_exact_rank4():
    _, report = _check(_ExpandPermute(), (1, 2, 20, 5), "expand-rank-lower")
    assert len(report["passes"][0]["matches"]) == 2 and report["before"]["max_rank"] == 6


class _Interleave(nn.Module):
    """HorNet's ``cat([x1.unsqueeze(2), x2.unsqueeze(2)], 2).reshape(B, 2C, H, W)`` and a 5-D stack."""

    def forward(self, x):  # (B, C, H, W)
        b, c, h, w = x.shape
        y = torch.cat([x.unsqueeze(2), (x * x).unsqueeze(2)], dim=2).reshape(b, 2 * c, h, w)
        z = torch.stack([x, -x, x + 1], dim=-1).reshape(b, c, h, 3 * w)
        return y[:, :c] + z[..., :w]


def test_cat_rank_lower_exact_rank4():
    _, report = _check(_Interleave(), (1, 4, 6, 5), "cat-rank-lower")
    assert len(report["passes"][0]["matches"]) == 2


class _ContextPool(nn.Module):
    """GCNet's attention pooling: a matrix times a column (softmax over HW), then a view to (N, C, 1, 1)."""

    def forward(self, x):  # (N, C, H, W)
        n, c, h, w = x.shape
        mask = x.mean(1, keepdim=True).view(n, 1, h * w).softmax(2).unsqueeze(-1)
        return x + torch.matmul(x.view(n, c, h * w).unsqueeze(1), mask).view(n, c, 1, 1)


def test_matvec_as_row_matmul_exact():
    gm, _ = _check(_ContextPool(), (2, 3, 5, 6), "matvec-as-row-matmul", tol=1e-5)
    mms = [n for n in gm.graph.nodes if n.target is torch.ops.aten.matmul.default]
    assert mms and all(n.args[1].meta["tensor_meta"].shape[-1] != 1 for n in mms)


class _FullSlices(nn.Module):
    def forward(self, x):
        return x[:, :, 0:] * 2 + x[:, 0:, :, 0:]


def test_alias_drop_exact():
    gm, report = _check(_FullSlices(), (1, 2, 4, 4), "alias-drop")
    assert not any(n.target is torch.ops.aten.alias.default for n in gm.graph.nodes)


# --------------------------------------------------------------------------- per family
EXPECTED = {  # family -> the passes its captured program needs
    "mvit": {
        "constant-gather-fold",
        "select-rank-lower",
        "einsum-as-bmm",
        "slice-assign-as-cat",
        "broadcast-rank-lower",
        "alias-drop",
    },
    "levit": set(),
    "cvt": {"einsum-as-bmm"},
    "gcnet": {"matvec-as-row-matmul"},
    "hornet": {"fft-filter-as-conv", "cat-rank-lower", "layernorm-fold"},  # its channels-first LayerNorm
    "botnet16": {"einsum-as-bmm", "expand-rank-lower"},
}
# fp32-exact passes (another summation order)
INEXACT = {"fft-filter-as-conv", "einsum-as-bmm", "einsum-region-as-matmul", "matvec-as-row-matmul", "layernorm-fold"}


def _shape(family):
    return (1, 3, *hier.FAMILIES[family]().input_size)


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_family_rewritten_exact_rank4(family):
    torch.manual_seed(0)
    model = hier.FAMILIES[family]().eval()
    shape = _shape(family)
    gm, report = rewrite_graph(model, shape, family, "tflite-fp32")
    applied = {p["name"] for p in report["passes"] if p["applied"]}
    assert applied == EXPECTED[family], report["passes"]
    assert not any(p.get("refused") for p in report["passes"]), report["passes"]
    assert report["after"]["max_rank"] <= 4 and report["after"]["rank_over_4"] == []
    assert report["after"]["hostile_ops"] == {}
    tol = 1e-5 if applied & INEXACT else 0.0
    with torch.no_grad():
        for x in _inputs(shape):
            ref, out = model(x), gm(x)
            assert float((out - ref).abs().max()) <= tol * max(1.0, float(ref.abs().max()))
            assert torch.equal(out.argmax(1), ref.argmax(1))
    again = torch.export.export(gm, (torch.zeros(shape),))
    ranks = [len(n.meta["val"].shape) for n in again.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)]
    assert max(ranks) <= 4


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _reference_max(family, images=2):
    """The largest |logit| of the unmodified module on the parity images (what the relative parity is against)."""
    from edgeseg.data.datasets import load_split
    from edgeseg.data.transforms import auto_fit, fit_input, to_tensor
    from edgeseg.export_request import RANDOM_SEED
    from edgeseg.paths import SAMPLE_DATA

    torch.manual_seed(RANDOM_SEED)  # as edgeseg builds it
    model = hier.FAMILIES[family]().eval()
    _, imgs, _ = load_split(SAMPLE_DATA, "val")
    xs = [fit_input(to_tensor(i), auto_fit(i.shape[:2], model.input_size)) for i in imgs[:images]]
    with torch.no_grad():
        return max(float(model(x).abs().max()) for x in xs)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(EXPECTED))
@pytest.mark.parametrize("target", ["onnx-fp32", "tflite-fp32"])
def test_family_exports(family, target, tmp_path, export_manifest):
    m = export_manifest(f"{EXAMPLES}:{family}", target, tmp_path / "a")
    assert m["lint"]["clean"], m["lint"]
    assert m["parity"]["argmax_agreement"] == 1.0, m["parity"]
    assert m["parity"]["max_abs_diff"] <= 1e-4 * max(1.0, _reference_max(family)), m["parity"]
    assert m["graph_passes"]["after"]["max_rank"] <= 4
    assert set(m["rewrites"]) == EXPECTED[family]
    lint = json.loads((next((tmp_path / "a").glob("*/manifest.json")).parent / "lint.json").read_text())
    assert 0 < lint["max_rank"] <= 4


def test_levit_uncached_attention_biases_are_folded():
    """LeViT's bias gather ``attention_biases[:, attention_bias_idxs]`` where the eval-mode cache is not used: a
    gather of constants, folded to the gathered table."""
    torch.manual_seed(0)
    model = hier.levit().eval()
    model.block.block.attn.training = True  # the uncached branch; BatchNorm layers stay in eval mode
    gm, report = rewrite_graph(model, _shape("levit"), "levit", "tflite-fp32")
    fold = next(p for p in report["passes"] if p["name"] == "constant-gather-fold")
    assert fold["applied"] and fold["matches"] == ["index.Tensor -> constant [2, 256, 256]"]
    assert not any(n.target is torch.ops.aten.index.Tensor for n in gm.graph.nodes)
    with torch.no_grad():
        for x in _inputs(_shape("levit")):
            assert torch.equal(gm(x), model(x))
