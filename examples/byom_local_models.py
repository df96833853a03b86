"""Small segmentation models built from the local-window attention families of the survey (NAT, QnA, ELSA),
written after the papers' public code, for ``edgeseg export --model examples/byom_local_models.py:NAME``.

Each NAME is a zero-argument function returning an ``nn.Module`` that maps a ``(1, 3, H, W)`` image to
``(1, C, H/4, W/4)`` logits: a stride-4 patch embedding, one block of the family, a 1x1 classifier (the shape of
``examples/byom_models.py``). Their reference code is export-hostile in the ways ``docs/byom.md`` lists:

- NAT (SHI-Labs/Neighborhood-Attention-Transformer, the pure-PyTorch ``LegacyNeighborhoodAttention``, mode 1,
  the path NATTEN's CUDA kernels stand in for): ``F.unfold`` windows, a replicate pad of the unfolded map that
  clamps the windows at the borders, a 6-D reshape + permute, 5-D queries / keys / values and attention, a
  relative-position bias gathered by a fixed index.
- QnA (moabarar/qna, ``layers/qna.py``'s ``FusedKQnA``, translated from JAX): learned queries fused with the key
  projection by an ``einsum`` of constants, a 5-D ``einsum`` for the scores, 6-D broadcasts of the exponentiated
  scores with the values, a ``repeat_interleave``'d summation kernel, a 6-D division and a reduction over the
  queries.
- ELSA (damo-cv/ELSA, ``elsa_op``'s CPU path): Hadamard attention (``q * k`` then a grouped conv), ``F.unfold``
  windows of the values, a ghost head built by a 5-D ``expand`` + ``reshape`` of a parameter.

NATTEN's own kernels and ELSA's CUDA extension are not capturable by ``torch.export``; these are the pure-PyTorch
paths their authors ship for machines without them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 11
DIM = 32
INPUT = (64, 64)  # the size each model is built for (NAT's bias index is bound to the map size, like Swin's mask)


class _Seg(nn.Module):
    """Patch embedding (stride 4) -> block on (B, H, W, C) -> 1x1 classifier."""

    def __init__(self, block):
        super().__init__()
        self.input_size = INPUT
        self.embed = nn.Conv2d(3, DIM, 4, 4)
        self.block = block
        self.head = nn.Conv2d(DIM, NUM_CLASSES, 1)

    def forward(self, x):
        x = self.block(self.embed(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(x)


class _Block(nn.Module):
    """Pre-norm residual block: x + attn(LN(x)), x + MLP(LN(x)) on (B, H, W, C)."""

    def __init__(self, dim, attn, mlp_ratio=2):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = attn
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# --------------------------------------------------------------------------- NAT (LegacyNeighborhoodAttention)
def nat_bias_index(kernel_size: int, height: int, width: int) -> torch.Tensor:
    """The legacy code's ``apply_pb`` index into the flattened ``(2k-1)^2`` bias table, per query and neighbour:
    the middle kernel row/column repeated over the interior so that border queries, whose windows are clamped,
    see the offsets of their clamped window. Built once for the map size (the legacy code rebuilds it in every
    forward with ``repeat_interleave`` of a tensor, a data-dependent size ``torch.export`` cannot capture)."""
    k, size = kernel_size, 2 * kernel_size - 1
    idx = torch.arange(k)
    idx_k = (idx.unsqueeze(-1) * size + idx).view(-1)
    rep_h, rep_w = torch.ones(k, dtype=torch.long), torch.ones(k, dtype=torch.long)
    rep_h[k // 2], rep_w[k // 2] = height - (k - 1), width - (k - 1)
    bias_hw = idx.repeat_interleave(rep_h).unsqueeze(-1) * size + idx.repeat_interleave(rep_w)
    bias_idx = bias_hw.unsqueeze(-1) + idx_k
    return torch.flip(bias_idx.reshape(-1, k * k), [0])


class NeighborhoodAttention(nn.Module):
    """Neighborhood attention (NAT): each query attends to its k x k nearest neighbours, the window clamped
    inside the map at the borders, plus a learned relative-position bias ``rpb``. The legacy pure-PyTorch form:
    ``F.unfold`` of keys and values over valid windows, a replicate pad of the unfolded map (the clamp), 6-D
    reshape + permute to per-query windows, 5-D attention."""

    def __init__(self, dim, kernel_size, heads, resolution):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim**-0.5
        self.kernel_size = kernel_size
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rpb = nn.Parameter(torch.randn(heads, 2 * kernel_size - 1, 2 * kernel_size - 1) * 0.02)
        self.register_buffer("bias_idx", nat_bias_index(kernel_size, *resolution), persistent=False)

    def apply_pb(self, attn, height, width):
        bias = self.rpb.flatten(1, 2)[:, self.bias_idx]
        return attn + bias.reshape(self.heads, height * width, 1, self.kernel_size**2).transpose(0, 1)

    def forward(self, x):  # (B, H, W, C)
        b, h, w, c = x.shape
        n, k = h * w, self.kernel_size
        tokens = k * k
        x = self.qkv(x).reshape(b, h, w, 3 * c)
        q, x = x[:, :, :, :c], x[:, :, :, c:]
        q = q.reshape(b, n, self.heads, c // self.heads, 1).transpose(3, 4) * self.scale
        pd = k - 1
        pdr = pd // 2
        x = F.unfold(x.permute(0, 3, 1, 2), kernel_size=(k, k), stride=(1, 1), padding=(0, 0))
        x = x.reshape(b, 2 * c * tokens, h - pd, w - pd)
        x = F.pad(x, (pdr, pdr, pdr, pdr), "replicate").reshape(b, 2, self.heads, c // self.heads, tokens, n)
        x = x.permute(1, 0, 5, 2, 4, 3)
        k_, v = x[0], x[1]
        attn = q @ k_.transpose(-2, -1)  # B x N x heads x 1 x tokens
        attn = self.apply_pb(attn, h, w).softmax(dim=-1)
        x = (attn @ v).reshape(b, h, w, c)
        return self.proj(x)


def nat():
    """NAT: neighborhood attention (F.unfold + replicate-pad clamp, 6-D permute, 5-D attention, rpb gather)."""
    res = (INPUT[0] // 4, INPUT[1] // 4)
    return _Seg(_Block(DIM, NeighborhoodAttention(DIM, kernel_size=7, heads=2, resolution=res)))


# --------------------------------------------------------------------------- QnA (moabarar/qna FusedKQnA)
class QueryAndAttend(nn.Module):
    """Query-and-Attend: a few learned queries, shared by every window, attend to the k x k keys around each
    position. The queries are fused with the key projection (``einsum`` of constants), the window softmax is
    computed as exp-weighted sums by two grouped convolutions with ``exp(rpe)`` kernels (numerator and
    denominator), the per-query results are summed (JAX ``FusedKQnA``, stride 1, relative-position embedding,
    'normal' attention scale, unit-norm queries)."""

    def __init__(self, dim, heads=2, kernel_size=3, n_queries=2):
        super().__init__()
        self.heads, self.k, self.nq, self.d = heads, kernel_size, n_queries, dim // heads
        self.padding = kernel_size // 2
        q, std = torch.empty(n_queries, dim), math.sqrt(1.0 / self.d)
        nn.init.trunc_normal_(q, std=std, a=-2 * std, b=2 * std)
        self.query = nn.Parameter(q)
        self.wk = nn.Parameter(torch.randn(dim, dim) / math.sqrt(dim))  # lecun_normal
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.attn_scale = nn.Parameter(torch.randn(1, 1, kernel_size**2, n_queries * heads) * 0.02)
        rpe = torch.empty(kernel_size**2, n_queries * heads)
        nn.init.trunc_normal_(rpe, std=0.02, a=-0.04, b=0.04)
        self.rpe = nn.Parameter(rpe)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x):  # (B, H, W, C)
        b, h, w, c = x.shape
        nq, heads, d, k = self.nq, self.heads, self.d, self.k
        q = self.query.reshape(nq, heads, d)
        q = q / (torch.linalg.vector_norm(q, ord=2, dim=-1, keepdim=True) + 1e-6)
        q = (q / math.sqrt(d)).expand(b, nq, heads, d)
        wk = self.wk.reshape(c, heads, d)
        qwk = torch.einsum("bqhd,Dhd->bDqh", q, wk)
        cost = torch.einsum("bHWD,bDqh->bHWqh", x, qwk)  # (B, H, W, nq, heads)
        v = self.to_v(x)
        attn_scale = self.attn_scale.reshape(k, k, 1, nq * heads)
        rpe = self.rpe.reshape(k, k, 1, nq * heads)
        cost_exp = torch.exp(cost)
        v_cost_exp = cost_exp[..., None] * v.reshape(b, h, w, 1, heads, d)  # (B, H, W, nq, heads, d)
        v_cost_exp = v_cost_exp.reshape(b, h, w, nq * heads * d)
        rpe_exp = torch.exp(rpe)
        kernel = (rpe_exp * attn_scale).repeat_interleave(d, dim=-1)  # HWIO (k, k, 1, nq * C)
        num = F.conv2d(
            v_cost_exp.permute(0, 3, 1, 2), kernel.permute(3, 2, 0, 1), padding=self.padding, groups=nq * c
        ).permute(0, 2, 3, 1)
        ho, wo = num.shape[1], num.shape[2]
        num = num.reshape(b, ho, wo, nq, heads, d)
        den = F.conv2d(
            cost_exp.reshape(b, h, w, nq * heads).permute(0, 3, 1, 2),
            rpe_exp.permute(3, 2, 0, 1),
            padding=self.padding,
            groups=nq * heads,
        ).permute(0, 2, 3, 1)
        den = den.reshape(b, ho, wo, nq, heads, 1)
        out = (num / den).sum(dim=-3).reshape(b, ho, wo, c)
        return self.to_out(out)


def qna():
    """QnA: learned queries over local windows (einsums, 5-D/6-D broadcasts, repeat_interleave, 6-D reduction)."""
    return _Seg(_Block(DIM, QueryAndAttend(DIM)))


# --------------------------------------------------------------------------- ELSA (damo-cv/ELSA elsa_op CPU path)
def elsa_op(features, ghost_mul, ghost_add, spatial_filter, kernel_size=5, dilation=1, stride=1):
    """ELSA's CPU path: every window position's value times (ghost_mul * attention + ghost_add), summed."""
    b, c, h, w = features.shape
    pad = kernel_size // 2 * dilation
    features = F.unfold(features, kernel_size=kernel_size, dilation=dilation, padding=pad, stride=stride)
    features = features.reshape(b, c, kernel_size**2, h * w)
    ghost_mul = ghost_mul.reshape(b, c, kernel_size**2, 1)
    ghost_add = ghost_add.reshape(b, c, kernel_size**2, 1)
    spatial_filter = spatial_filter.reshape(b, 1, kernel_size**2, h * w)
    filters = ghost_mul * spatial_filter + ghost_add
    return (features * filters).sum(2).reshape(b, c, h, w)


class EnhancedLocalSelfAttention(nn.Module):
    """ELSA: Hadamard attention (``q * k`` -> grouped k x k conv -> GELU -> 1x1 conv to k^2 weights per head,
    softmax over the window) and a ghost head (per-channel multiplicative and additive window kernels), applied
    to ``F.unfold`` windows of the values (lambda = gamma = 1)."""

    def __init__(self, dim, heads=2, kernel_size=5, group_width=8, qk_scale=1.0):
        super().__init__()
        self.heads, self.k = heads, kernel_size
        self.dim_qk = math.ceil((dim // 3 * 2) / group_width) * group_width
        self.dim_v = dim
        self.scale, self.lam, self.gamma = qk_scale, 1, 1
        self.pre_proj = nn.Conv2d(dim, 2 * self.dim_qk + self.dim_v, 1, bias=False)
        self.attn = nn.Sequential(
            nn.Conv2d(
                self.dim_qk, self.dim_qk, kernel_size, padding=kernel_size // 2, groups=self.dim_qk // group_width
            ),
            nn.GELU(),
            nn.Conv2d(self.dim_qk, kernel_size**2 * heads, 1),
        )
        gh_mul = torch.randn(1, 1, self.dim_v, kernel_size, kernel_size)
        gh_add = torch.zeros(1, 1, self.dim_v, kernel_size, kernel_size)
        nn.init.trunc_normal_(gh_add, std=0.02)
        self.ghost_head = nn.Parameter(torch.cat((gh_mul, gh_add), dim=0))
        self.post_proj = nn.Linear(self.dim_v, dim)

    def forward(self, x):  # (B, H, W, C)
        b, h, w, _ = x.shape
        c, ks, g = self.dim_v, self.k, self.heads
        x = x.permute(0, 3, 1, 2)
        q, k, v = torch.split(self.pre_proj(x), (self.dim_qk, self.dim_qk, self.dim_v), dim=1)
        attn = self.attn(q * k * self.scale)
        v = v.reshape(b * g, c // g, h, w)
        attn = attn.reshape(b * g, -1, h, w).softmax(1)
        gh = self.ghost_head.expand(2, b, c, ks, ks).reshape(2, b * g, c // g, ks, ks)
        gh_mul, gh_add = gh[0] ** self.lam, gh[1] * self.gamma
        x = elsa_op(v, gh_mul, gh_add, attn, ks).reshape(b, c, h, w)
        return self.post_proj(x.permute(0, 2, 3, 1))


def elsa():
    """ELSA: Hadamard attention + ghost head over F.unfold windows (5-D ghost-head expand)."""
    return _Seg(_Block(DIM, EnhancedLocalSelfAttention(DIM)))


FAMILIES = {"nat": nat, "qna": qna, "elsa": elsa}
