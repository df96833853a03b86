"""Graph passes for local-window attention (edgeseg.rewrite.graph.local_passes) and the NAT / QnA / ELSA reference
models of examples/byom_local_models.py (written after the papers' public code).

Per pass: its pattern is matched in a small module, the rewritten program is exact on fresh random inputs with
borders, and what it rewrites ends at rank <= 4. Per family: every pass it needs is applied, the program ends at
rank <= 4 with no hostile op, and (slow) its onnx-fp32 / tflite-fp32 exports are lint clean with parity."""

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

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "byom_local_models.py"
_spec = importlib.util.spec_from_file_location("byom_local_models_for_tests", EXAMPLES)
local = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local)

SHAPE = (1, 3, 64, 64)


def _fresh(shape, seed=123):
    """Inputs the passes were not verified on: normal noise, and large values with a zero and a constant border."""
    g = torch.Generator().manual_seed(seed)
    border = 6 * torch.randn(shape, generator=g)
    border[..., :2, :] = 0
    border[..., :, -3:] = -2.5
    return [torch.randn(shape, generator=g), border]


def _check(model, shape, only, tol=0.0):
    """Rewrite with the passes ``only``; the report, after asserting every named pass matched and was applied
    and the result is within ``tol`` (relative to the largest output value) on fresh inputs."""
    model = model.eval()
    gm, report = rewrite_graph(model, shape, "test", "tflite-fp32", only=only)
    records = {p["name"]: p for p in report["passes"]}
    for name in only:
        assert records[name]["matches"] and records[name]["applied"], records[name]
    with torch.no_grad():
        for x in _fresh(shape):
            ref, out = model(x), gm(x)
            assert out.shape == ref.shape
            assert float((out - ref).abs().max()) <= tol * max(1.0, float(ref.abs().max()))
    return gm, report


def _ops(gm) -> set[str]:
    return {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}


# --------------------------------------------------------------------------- per pass
class _Pads(nn.Module):
    def forward(self, x):
        a = F.pad(x, (2, 1, 3, 0), "replicate")
        b = F.pad(x, (1, 2, 2, 1), "reflect")
        c = F.pad(x, (3, 1, 0, 2), "circular")
        return a[..., :7, :9] + b[..., :7, :9] * c[..., :7, :9]


def test_pad_as_slices_exact_no_pad_op():
    gm, report = _check(_Pads(), (1, 3, 7, 9), ("pad-as-slices",))
    (record,) = [p for p in report["passes"] if p["name"] == "pad-as-slices"]
    assert len(record["matches"]) == 3
    assert not any("pad" in op for op in _ops(gm))


class _ConstantSubgraphs(nn.Module):
    """ELSA's ghost head (5-D expand + reshape + select of a parameter) and QnA's fused query-key einsum."""

    def __init__(self):
        super().__init__()
        self.ghost = nn.Parameter(torch.randn(2, 1, 4, 3, 3))
        self.q = nn.Parameter(torch.randn(2, 2, 2))
        self.wk = nn.Parameter(torch.randn(4, 2, 2))

    def forward(self, x):  # (1, 4, 3, 3)
        gh = self.ghost.expand(2, 1, 4, 3, 3).reshape(2, 2, 2, 3, 3)
        qwk = torch.einsum("qhd,Dhd->Dqh", self.q, self.wk).reshape(4, 4)
        y = x.reshape(2, 2, 3, 3) * gh[0] + gh[1]
        return (y.reshape(1, 4, 9).transpose(1, 2) @ qwk).transpose(1, 2).reshape(1, 4, 3, 3)


def test_constant_subgraph_fold_exact_rank4():
    gm, report = _check(_ConstantSubgraphs(), (1, 4, 3, 3), ("constant-subgraph-fold",))
    assert report["before"]["max_rank"] == 5 and "einsum.default" in report["before"]["hostile_ops"]
    assert report["after"]["max_rank"] <= 4 and report["after"]["hostile_ops"] == {}


class _QnaScores(nn.Module):
    """QnA's scores in miniature: learned queries fused with the key weights (an einsum of constants), a 5-D
    einsum of the input with it, exp and a 6-D broadcast with the values, a sum over the queries."""

    def __init__(self):
        super().__init__()
        self.q = nn.Parameter(torch.randn(2, 2, 3))  # (queries, heads, d)
        self.wk = nn.Parameter(torch.randn(6, 2, 3) / 3)  # (D, heads, d)
        self.to_v = nn.Linear(6, 6, bias=False)

    def forward(self, x):  # (1, 5, 4, 6)
        qwk = torch.einsum("qhd,Dhd->Dqh", self.q, self.wk)
        cost = torch.einsum("bHWD,Dqh->bHWqh", x, qwk)  # (1, 5, 4, 2, 2)
        v = self.to_v(x).reshape(1, 5, 4, 1, 2, 3)
        return (cost.exp().unsqueeze(-1) * v).sum(dim=3).reshape(1, 5, 4, 6)


def test_constant_einsum_folded_then_einsum_as_bmm_then_rank_lower():
    """constant-subgraph-fold runs before einsum-as-bmm: the einsum of constants is one constant, not a bmm at
    run time; the live einsum becomes a bmm and rank-lower folds the 5-D / 6-D ops after it."""
    only = ("constant-subgraph-fold", "einsum-as-bmm", "rank-lower")
    gm, report = _check(_QnaScores(), (1, 5, 4, 6), only, tol=1e-5)
    assert report["before"]["hostile_ops"] == {"einsum.default": 2}
    assert report["after"]["hostile_ops"] == {} and report["after"]["max_rank"] <= 4
    bmms = [n for n in gm.graph.nodes if n.target is torch.ops.aten.bmm.default]
    assert len(bmms) == 1  # the live einsum; the one of constants is a constant


class _HighRank(nn.Module):
    """NAT's shapes in miniature: a 6-D reshape + permute + select of keys and values, 5-D queries, a 5-D
    matmul + constant bias + softmax, and QnA's 6-D broadcast product and its sum over one dim."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(12, 2, 1, 5))

    def forward(self, x):  # (1, 4, 3, 40): 2 (k, v) x 2 heads x 2 dims x 5 window positions, 12 queries
        kv = x.reshape(1, 2, 2, 2, 5, 12).permute(1, 0, 5, 2, 4, 3)
        k, v = kv[0], kv[1]
        q = x[:, 0, :, :16].reshape(1, 12, 2, 2, 1).transpose(3, 4) * 0.5
        attn = (q @ k.transpose(-2, -1) + self.bias).softmax(dim=-1)
        out = (attn @ v).reshape(1, 4, 3, 4)
        prod6 = attn.reshape(1, 4, 3, 2, 5, 1) * x[..., :6].reshape(1, 4, 3, 2, 1, 3)  # (1, 4, 3, 2, 5, 3)
        return out + prod6.sum(dim=-2).reshape(1, 4, 3, 6)[..., :4].exp()


def test_rank_lower_exact_rank4():
    gm, report = _check(_HighRank(), (1, 4, 3, 40), ("rank-lower",), tol=1e-5)
    assert report["before"]["max_rank"] == 6
    assert report["after"]["max_rank"] <= 4 and report["after"]["rank_over_4"] == []


class _Movement(nn.Module):
    """Data movement, elementwise ops, a reduction and a softmax at rank 6 (no matmul): bit-exact."""

    def forward(self, x):  # (1, 4, 3, 40)
        kv = x.reshape(1, 2, 2, 2, 5, 12).permute(1, 0, 5, 2, 4, 3)
        k, v = kv[0], kv[1]  # (1, 12, 2, 5, 2)
        w = (k.unsqueeze(-1) * v.unsqueeze(-2)).softmax(dim=-2).sum(dim=3)  # (1, 12, 2, 2, 2)
        return w.reshape(1, 4, 3, 8) + v.transpose(-2, -1).reshape(1, 4, 3, 20)[..., :8].exp()


def test_rank_lower_data_movement_is_bit_exact():
    gm, report = _check(_Movement(), (1, 4, 3, 40), ("rank-lower",), tol=0.0)
    assert report["before"]["max_rank"] == 6 and report["after"]["max_rank"] <= 4


# --------------------------------------------------------------------------- NAT semantics
def _natten_reference(attn: local.NeighborhoodAttention, x: torch.Tensor) -> torch.Tensor:
    """Neighborhood attention as NATTEN documents it, one query at a time: the k x k window starts at
    ``clamp(i - k // 2, 0, H - k)`` per axis, the bias is ``rpb[head, key_i - i + k - 1, key_j - j + k - 1]``."""
    b, h, w, c = x.shape
    k, heads, d = attn.kernel_size, attn.heads, attn.head_dim
    q, key, val = attn.qkv(x).reshape(b, h, w, 3, heads, d).unbind(3)
    out = torch.zeros(b, h, w, heads, d)
    for i in range(h):
        si = min(max(i - k // 2, 0), h - k)
        for j in range(w):
            sj = min(max(j - k // 2, 0), w - k)
            keys = key[:, si : si + k, sj : sj + k].reshape(b, k * k, heads, d)
            vals = val[:, si : si + k, sj : sj + k].reshape(b, k * k, heads, d)
            logits = torch.einsum("bhd,bnhd->bhn", q[:, i, j] * attn.scale, keys)
            bias = attn.rpb[:, si - i + k - 1 : si - i + 2 * k - 1, sj - j + k - 1 : sj - j + 2 * k - 1]
            weights = (logits + bias.reshape(heads, k * k)).softmax(-1)
            out[:, i, j] = torch.einsum("bhn,bnhd->bhd", weights, vals)
    return attn.proj(out.reshape(b, h, w, c))


def test_nat_reference_is_neighborhood_attention_with_clamped_windows():
    torch.manual_seed(0)
    attn = local.NeighborhoodAttention(8, kernel_size=5, heads=2, resolution=(7, 9)).eval()
    with torch.no_grad():
        attn.rpb.normal_()
        x = torch.randn(1, 7, 9, 8)
        assert torch.allclose(attn(x), _natten_reference(attn, x), atol=1e-5)


# --------------------------------------------------------------------------- per family
EXPECTED = {  # family -> the passes its hostile constructs need (measured on the reference models)
    "nat": {"im2col-as-conv", "constant-gather-fold", "pad-as-slices", "rank-lower"},
    "qna": {"constant-subgraph-fold", "einsum-as-bmm", "rank-lower"},  # einsum-as-bmm: hier_passes
    "elsa": {"im2col-as-conv", "constant-subgraph-fold"},
}
TOLERANCE = {"nat": 1e-5, "qna": 1e-5, "elsa": 0.0}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_family_rewritten_exact_rank4(family):
    torch.manual_seed(0)
    model = local.FAMILIES[family]().eval()
    gm, report = rewrite_graph(model, SHAPE, family, "tflite-fp32")
    applied = {p["name"] for p in report["passes"] if p["applied"]}
    assert applied == EXPECTED[family], report["passes"]
    assert report["before"]["max_rank"] > 4 or report["before"]["hostile_ops"]
    assert report["after"]["max_rank"] <= 4 and report["after"]["rank_over_4"] == []
    assert report["after"]["hostile_ops"] == {}
    with torch.no_grad():
        for x in _fresh(SHAPE):
            ref, out = model(x), gm(x)
            assert float((out - ref).abs().max()) <= TOLERANCE[family] * max(1.0, float(ref.abs().max()))
            assert torch.equal(out.argmax(1), ref.argmax(1))


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _disagreements(folder: Path, manifest: dict, family: str, count: int) -> list[tuple[float, float]]:
    """Rerun the artifact and the unmodified module on the parity images: (reference top-2 margin, max abs diff)
    at every pixel whose class differs."""
    from edgeseg.backends import backend_for
    from edgeseg.commands.evaluate import load_model
    from edgeseg.data.datasets import load_split
    from edgeseg.data.transforms import auto_fit, fit_input, to_tensor
    from edgeseg.paths import SAMPLE_DATA

    reference = load_model(f"{EXAMPLES}:{family}", None, None).model.eval()
    artifact = backend_for(manifest["format"]).load(folder, manifest, 1)
    size = tuple(manifest["input"]["shape"][2:])
    found = []
    for image in load_split(SAMPLE_DATA, "val")[1][:count]:
        x = fit_input(to_tensor(image), auto_fit(image.shape[:2], size))
        with torch.no_grad():
            ref, out = reference(x).float(), artifact.run(x).float()
        ref_up = F.interpolate(ref, size=size, mode="bilinear", align_corners=False)
        out_up = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        top2 = ref_up.topk(2, dim=1).values
        flips = ref_up.argmax(1) != out_up.argmax(1)
        diff = float((out - ref).abs().max())
        found += [(float(m), diff) for m in (top2[:, 0] - top2[:, 1])[flips]]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(EXPECTED))
@pytest.mark.parametrize("target", ["onnx-fp32", "tflite-fp32"])
def test_family_exports(family, target, tmp_path, export_manifest):
    """The user-model path end to end: lint clean, rank <= 4, parity against the unmodified module on the
    sample images within 1e-4 relative, every pixel's class the same, except where the reference itself has
    a tie at fp32 resolution (its two best classes closer than the artifact's max abs diff: no fp32 runtime
    decides those the same way; seen once, ELSA on ONNX Runtime, top-2 margin 3e-8)."""
    m = export_manifest(f"{EXAMPLES}:{family}", target, tmp_path / "a")
    assert m["lint"]["clean"], m["lint"]
    assert m["graph_passes"]["after"]["max_rank"] <= 4 and m["graph_passes"]["after"]["hostile_ops"] == {}
    assert set(m["rewrites"]) == EXPECTED[family]
    lint = json.loads((next((tmp_path / "a").glob("*/manifest.json")).parent / "lint.json").read_text())
    assert lint["max_rank"] <= 4
    torch.manual_seed(0)
    with torch.no_grad():
        scale = float(local.FAMILIES[family]().eval()(torch.randn(SHAPE)).abs().max())
    assert m["parity"]["max_abs_diff"] <= 1e-4 * max(1.0, scale), m["parity"]
    if m["parity"]["argmax_agreement"] < 1.0:
        flips = _disagreements(next((tmp_path / "a").glob("*/manifest.json")).parent, m, family, 2)
        assert flips and all(margin <= diff for margin, diff in flips), flips


class _NattenGather(nn.Module):
    """Neighborhood attention after NATTEN's semantics written with gathers: keys and values read by the clamped
    window index ``clamp(i - k // 2, 0, L - k) + j`` along rows, then columns (``x[:, :, idx]``,
    ``index_select``)."""

    def __init__(self, h=7, w=9, k=3):
        super().__init__()
        self.k = k

        def window(n):
            starts = (torch.arange(n) - k // 2).clamp(0, n - k)
            return (starts[:, None] + torch.arange(k)).reshape(-1)

        self.register_buffer("rows", window(h))
        self.register_buffer("cols", window(w))

    def forward(self, x):  # (B, C, H, W) -> per position the mean-free sum over its clamped k x k window
        b, c, h, w = x.shape
        win = x[:, :, self.rows].index_select(3, self.cols)  # (B, C, H * k, W * k)
        win = win.reshape(b * c, h, self.k, w * self.k).transpose(1, 2).reshape(b * c * self.k, h, w, self.k)
        return (win * win.softmax(-1)).sum(-1).reshape(b, c * self.k, h, w)


def test_constant_index_as_slices_exact_no_gather():
    model = _NattenGather()
    gm, report = _check(model, (1, 3, 7, 9), ("constant-index-as-slices",))
    (record,) = [p for p in report["passes"] if p["name"] == "constant-index-as-slices"]
    assert len(record["matches"]) == 2
    assert report["before"]["hostile_ops"] and report["after"]["hostile_ops"] == {}
    assert not any("index" in op for op in _ops(gm))
    # clamped border windows: the first two rows read the same window (one slice used twice)
    x = torch.randn(1, 3, 7, 9)
    assert torch.equal(x[:, :, model.rows][:, :, :3], x[:, :, model.rows][:, :, 3:6])
