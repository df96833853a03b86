"""Small segmentation models of the hierarchical / convolutional attention families, written after the papers'
public code, for ``edgeseg export --model examples/byom_hier_models.py:NAME``.

Each NAME is a zero-argument function returning an ``nn.Module`` that maps a ``(1, 3, H, W)`` image to
``(1, C, H/4, W/4)`` logits: a stride-4 patch embedding, one block of the family, a 1x1 classifier (the shape of
``examples/byom_models.py``). Where the reference code uses ``einops.rearrange`` the same reshape/permute is
written out (no einops here). Their export-hostile constructs are listed in ``docs/byom.md``.

- ``mvit``: MViTv2 pooling attention (facebookresearch/mvit ``mvit/models/attention.py``): depthwise-conv pooling
  of q/k/v, decomposed relative positions (``einsum`` on 5-D queries, 6-D broadcast add, slice assignment).
- ``levit``: LeViT attention (facebookresearch/LeViT ``levit.py``): ``attention_biases[:, attention_bias_idxs]``,
  Linear+BN, hardswish.
- ``cvt``: CvT convolutional projections (microsoft/CvT ``cls_cvt.py``): depthwise conv + BN on the token map,
  ``einsum`` attention.
- ``gcnet``: GCNet global context block (xvjiarui/GCNet ``ContextBlock``): softmax over HW and a matmul.
- ``hornet``: HorNet-GF (raoyongming/HorNet ``hornet.py``): recursive gated convolution ``gnconv`` whose
  depthwise branch is the global-local filter (``rfft2`` * an interpolated complex weight -> ``irfft2``).
- ``botnet16``: BoTNet's relative-logit MHSA (``examples/byom_models.py``) at a real size: a 16x16 map, 4 heads
  of 128 channels.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 11
DIM = 32
INPUT = (64, 64)


class _Seg(nn.Module):
    """Patch embedding (stride 4) -> block on a (B, C, H, W) map -> 1x1 classifier."""

    def __init__(self, block: nn.Module, dim: int = DIM, input_size=INPUT, embed: nn.Module | None = None):
        super().__init__()
        self.input_size = input_size
        self.embed = embed if embed is not None else nn.Conv2d(3, dim, 4, 4)
        self.block = block
        self.head = nn.Conv2d(dim, NUM_CLASSES, 1)

    def forward(self, x):
        return self.head(self.block(self.embed(x)))


class _Tokens(nn.Module):
    """Runs a token block ``block(x, (h, w)) -> (x, (h, w))`` on a (B, C, H, W) map."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        b, c, h, w = x.shape
        x, (h, w) = self.block(x.flatten(2).transpose(1, 2), (h, w))
        return x.transpose(1, 2).reshape(b, -1, h, w)


class _Mlp(nn.Module):
    def __init__(self, dim, hidden, act=nn.GELU):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), act(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


# --------------------------------------------------------------------------- MViTv2 (facebookresearch/mvit)
def attention_pool(tensor, pool, hw_shape, has_cls_embed=True, norm=None):
    if pool is None:
        return tensor, hw_shape
    tensor_dim = tensor.ndim
    if tensor_dim == 3:
        tensor = tensor.unsqueeze(1)
    if has_cls_embed:
        cls_tok, tensor = tensor[:, :, :1, :], tensor[:, :, 1:, :]
    b, n, _, c = tensor.shape
    h, w = hw_shape
    tensor = tensor.reshape(b * n, h, w, c).permute(0, 3, 1, 2).contiguous()
    tensor = pool(tensor)
    hw_shape = [tensor.shape[2], tensor.shape[3]]
    pooled = tensor.shape[2] * tensor.shape[3]
    tensor = tensor.reshape(b, n, c, pooled).transpose(2, 3)
    if has_cls_embed:
        tensor = torch.cat((cls_tok, tensor), dim=2)
    if norm is not None:
        tensor = norm(tensor)
    if tensor_dim == 3:
        tensor = tensor.squeeze(1)
    return tensor, hw_shape


def cal_rel_pos_spatial(attn, q, has_cls_embed, q_shape, k_shape, rel_pos_h, rel_pos_w):
    """Decomposed spatial relative positions (MViTv2 ``cal_rel_pos_spatial``)."""
    sp_idx = 1 if has_cls_embed else 0
    q_h, q_w = q_shape
    k_h, k_w = k_shape
    q_h_ratio = max(k_h / q_h, 1.0)
    k_h_ratio = max(q_h / k_h, 1.0)
    dist_h = torch.arange(q_h)[:, None] * q_h_ratio - torch.arange(k_h)[None, :] * k_h_ratio
    dist_h += (k_h - 1) * k_h_ratio
    q_w_ratio = max(k_w / q_w, 1.0)
    k_w_ratio = max(q_w / k_w, 1.0)
    dist_w = torch.arange(q_w)[:, None] * q_w_ratio - torch.arange(k_w)[None, :] * k_w_ratio
    dist_w += (k_w - 1) * k_w_ratio
    rel_h_table = rel_pos_h[dist_h.long()]
    rel_w_table = rel_pos_w[dist_w.long()]
    b, n_head, _, dim = q.shape
    r_q = q[:, :, sp_idx:].reshape(b, n_head, q_h, q_w, dim)
    rel_h = torch.einsum("byhwc,hkc->byhwk", r_q, rel_h_table)
    rel_w = torch.einsum("byhwc,wkc->byhwk", r_q, rel_w_table)
    attn[:, :, sp_idx:, sp_idx:] = (
        attn[:, :, sp_idx:, sp_idx:].view(b, -1, q_h, q_w, k_h, k_w)
        + rel_h[:, :, :, :, :, None]
        + rel_w[:, :, :, :, None, :]
    ).view(b, -1, q_h * q_w, k_h * k_w)
    return attn


class MultiScaleAttention(nn.Module):
    """MViTv2 pooling attention, mode "conv" (depthwise conv pooling per head), pool_first=False."""

    def __init__(
        self,
        dim,
        num_heads,
        input_size,
        kernel_q=(3, 3),
        kernel_kv=(3, 3),
        stride_q=(1, 1),
        stride_kv=(2, 2),
        has_cls_embed=False,
        rel_pos_spatial=True,
        residual_pooling=True,
    ):
        super().__init__()
        self.num_heads, self.dim_out = num_heads, dim
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.has_cls_embed = has_cls_embed
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        pad_q, pad_kv = [k // 2 for k in kernel_q], [k // 2 for k in kernel_kv]
        self.pool_q = nn.Conv2d(head_dim, head_dim, kernel_q, stride_q, pad_q, groups=head_dim, bias=False)
        self.pool_k = nn.Conv2d(head_dim, head_dim, kernel_kv, stride_kv, pad_kv, groups=head_dim, bias=False)
        self.pool_v = nn.Conv2d(head_dim, head_dim, kernel_kv, stride_kv, pad_kv, groups=head_dim, bias=False)
        self.norm_q, self.norm_k, self.norm_v = nn.LayerNorm(head_dim), nn.LayerNorm(head_dim), nn.LayerNorm(head_dim)
        self.rel_pos_spatial = rel_pos_spatial
        size = input_size[0]
        q_size, kv_size = size // stride_q[1], size // stride_kv[1]
        rel_sp_dim = 2 * max(q_size, kv_size) - 1
        self.rel_pos_h = nn.Parameter(torch.randn(rel_sp_dim, head_dim) * 0.02)
        self.rel_pos_w = nn.Parameter(torch.randn(rel_sp_dim, head_dim) * 0.02)
        self.residual_pooling = residual_pooling

    def forward(self, x, hw_shape):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q, q_shape = attention_pool(q, self.pool_q, hw_shape, self.has_cls_embed, self.norm_q)
        k, k_shape = attention_pool(k, self.pool_k, hw_shape, self.has_cls_embed, self.norm_k)
        v, _ = attention_pool(v, self.pool_v, hw_shape, self.has_cls_embed, self.norm_v)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.rel_pos_spatial:
            attn = cal_rel_pos_spatial(attn, q, self.has_cls_embed, q_shape, k_shape, self.rel_pos_h, self.rel_pos_w)
        attn = attn.softmax(dim=-1)
        x = attn @ v
        if self.residual_pooling:
            if self.has_cls_embed:
                x[:, :, 1:, :] += q[:, :, 1:, :]
            else:
                x = x + q
        x = x.transpose(1, 2).reshape(b, -1, self.dim_out)
        return self.proj(x), q_shape


class MultiScaleBlock(nn.Module):
    def __init__(self, dim, num_heads, input_size):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MultiScaleAttention(dim, num_heads, input_size)
        self.mlp = _Mlp(dim, 4 * dim)

    def forward(self, x, hw_shape):
        x_block, hw_shape_new = self.attn(self.norm1(x), hw_shape)
        x = x + x_block  # pool_skip is None: stride_q is 1
        return x + self.mlp(self.norm2(x)), hw_shape_new


def mvit():
    """MViTv2: conv-pooled q/k/v (k/v stride 2), decomposed relative positions (einsum on 5-D queries, 6-D add)."""
    size = (INPUT[0] // 4, INPUT[1] // 4)
    embed = nn.Conv2d(3, DIM, 7, 4, 3)  # MViTv2 PatchEmbed: kernel 7, stride 4, padding 3
    return _Seg(_Tokens(MultiScaleBlock(DIM, 2, size)), embed=embed)


# --------------------------------------------------------------------------- LeViT (facebookresearch/LeViT)
class Conv2d_BN(nn.Sequential):  # the reference's names
    def __init__(self, a, b, ks=1, stride=1, pad=0):
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, bias=False))
        self.add_module("bn", nn.BatchNorm2d(b))


class Linear_BN(nn.Sequential):
    def __init__(self, a, b):
        super().__init__()
        self.add_module("c", nn.Linear(a, b, bias=False))
        self.add_module("bn", nn.BatchNorm1d(b))

    def forward(self, x):
        c, bn = self._modules.values()
        x = c(x)
        return bn(x.flatten(0, 1)).reshape_as(x)


class LeViTAttention(nn.Module):
    def __init__(self, dim, key_dim, num_heads=2, attn_ratio=2, resolution=16):
        super().__init__()
        self.num_heads, self.scale, self.key_dim = num_heads, key_dim**-0.5, key_dim
        self.nh_kd = nh_kd = key_dim * num_heads
        self.d = int(attn_ratio * key_dim)
        self.dh = int(attn_ratio * key_dim) * num_heads
        self.qkv = Linear_BN(dim, self.dh + nh_kd * 2)
        self.proj = nn.Sequential(nn.Hardswish(), Linear_BN(self.dh, dim))
        points = list(itertools.product(range(resolution), range(resolution)))
        attention_offsets, idxs = {}, []
        for p1 in points:
            for p2 in points:
                offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                if offset not in attention_offsets:
                    attention_offsets[offset] = len(attention_offsets)
                idxs.append(attention_offsets[offset])
        self.attention_biases = nn.Parameter(torch.randn(num_heads, len(attention_offsets)) * 0.1)
        self.register_buffer("attention_bias_idxs", torch.LongTensor(idxs).view(len(points), len(points)))

    @torch.no_grad()
    def train(self, mode=True):  # the reference caches the gathered biases in eval mode
        super().train(mode)
        if mode and hasattr(self, "ab"):
            del self.ab
        else:
            self.ab = self.attention_biases[:, self.attention_bias_idxs]
        return self

    def forward(self, x):  # (B, N, C)
        b, n, _ = x.shape
        qkv = self.qkv(x)
        q, k, v = qkv.view(b, n, self.num_heads, -1).split([self.key_dim, self.key_dim, self.d], dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        bias = self.attention_biases[:, self.attention_bias_idxs] if self.training else self.ab
        attn = ((q @ k.transpose(-2, -1)) * self.scale + bias).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, self.dh)
        return self.proj(x)


class LeViTBlock(nn.Module):
    """Residual(Attention) + Residual(Linear_BN, Hardswish, Linear_BN) on (B, N, C) tokens."""

    def __init__(self, dim, resolution):
        super().__init__()
        self.attn = LeViTAttention(dim, key_dim=16, num_heads=2, attn_ratio=2, resolution=resolution)
        self.mlp = nn.Sequential(Linear_BN(dim, 2 * dim), nn.Hardswish(), Linear_BN(2 * dim, dim))

    def forward(self, x, hw_shape):
        x = x + self.attn(x)
        return x + self.mlp(x), hw_shape


def levit():
    """LeViT: attention biases gathered by a fixed offset index (cached in eval mode), Linear+BN, hardswish."""
    embed = nn.Sequential(Conv2d_BN(3, DIM // 2, 3, 2, 1), nn.Hardswish(), Conv2d_BN(DIM // 2, DIM, 3, 2, 1))
    return _Seg(_Tokens(LeViTBlock(DIM, INPUT[0] // 4)), embed=embed)


# --------------------------------------------------------------------------- CvT (microsoft/CvT)
class CvTAttention(nn.Module):
    """Convolutional projections ("dw_bn": depthwise conv + BN, then rearrange to tokens), k/v stride 2."""

    def __init__(self, dim, num_heads=2, kernel_size=3, stride_kv=2, stride_q=1):
        super().__init__()
        self.num_heads, self.scale = num_heads, dim**-0.5
        self.conv_proj_q = self._build_projection(dim, kernel_size, 1, stride_q)
        self.conv_proj_k = self._build_projection(dim, kernel_size, 1, stride_kv)
        self.conv_proj_v = self._build_projection(dim, kernel_size, 1, stride_kv)
        self.proj_q, self.proj_k, self.proj_v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.proj = nn.Linear(dim, dim)

    @staticmethod
    def _build_projection(dim, kernel_size, padding, stride):
        return nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size, stride, padding, bias=False, groups=dim), nn.BatchNorm2d(dim)
        )

    def _tokens(self, proj, x):  # rearrange('b c h w -> b (h w) c')
        return proj(x).flatten(2).transpose(1, 2)

    def _heads(self, t):  # rearrange('b t (h d) -> b h t d')
        b, n, c = t.shape
        return t.reshape(b, n, self.num_heads, c // self.num_heads).permute(0, 2, 1, 3)

    def forward(self, x, h, w):
        b, n, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, h, w)  # rearrange('b (h w) c -> b c h w')
        q = self._heads(self.proj_q(self._tokens(self.conv_proj_q, x)))
        k = self._heads(self.proj_k(self._tokens(self.conv_proj_k, x)))
        v = self._heads(self.proj_v(self._tokens(self.conv_proj_v, x)))
        attn_score = torch.einsum("bhlk,bhtk->bhlt", q, k) * self.scale
        attn = F.softmax(attn_score, dim=-1)
        x = torch.einsum("bhlt,bhtv->bhlv", attn, v)
        x = x.permute(0, 2, 1, 3).reshape(b, n, c)  # rearrange('b h t d -> b t (h d)')
        return self.proj(x)


class CvTBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CvTAttention(dim)
        self.mlp = _Mlp(dim, 4 * dim)

    def forward(self, x, hw_shape):
        x = x + self.attn(self.norm1(x), *hw_shape)
        return x + self.mlp(self.norm2(x)), hw_shape


class _ConvEmbed(nn.Module):
    """CvT ConvEmbed: a 7x7 stride-4 conv, then LayerNorm over the tokens."""

    def __init__(self, dim):
        super().__init__()
        self.proj, self.norm = nn.Conv2d(3, dim, 7, 4, 2), nn.LayerNorm(dim)

    def forward(self, x):
        x = self.proj(x)
        b, c, h, w = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)


def cvt():
    """CvT: depthwise-conv + BN projections of q/k/v (k/v stride 2), einsum attention."""
    return _Seg(_Tokens(CvTBlock(DIM)), embed=_ConvEmbed(DIM))


# --------------------------------------------------------------------------- GCNet (xvjiarui/GCNet)
class ContextBlock(nn.Module):
    """Global context: attention pooling (softmax over HW, matmul) and a channel-add transform."""

    def __init__(self, inplanes, ratio=0.25):
        super().__init__()
        planes = int(inplanes * ratio)
        self.conv_mask = nn.Conv2d(inplanes, 1, kernel_size=1)
        self.softmax = nn.Softmax(dim=2)
        self.channel_add_conv = nn.Sequential(
            nn.Conv2d(inplanes, planes, kernel_size=1),
            nn.LayerNorm([planes, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, inplanes, kernel_size=1),
        )

    def spatial_pool(self, x):
        batch, channel, height, width = x.size()
        input_x = x.view(batch, channel, height * width).unsqueeze(1)  # [N, 1, C, H*W]
        context_mask = self.conv_mask(x).view(batch, 1, height * width)
        context_mask = self.softmax(context_mask).unsqueeze(-1)  # [N, 1, H*W, 1]
        context = torch.matmul(input_x, context_mask)  # [N, 1, C, 1]
        return context.view(batch, channel, 1, 1)

    def forward(self, x):
        return x + self.channel_add_conv(self.spatial_pool(x))


class GCBottleneck(nn.Module):
    """ResNet bottleneck with the context block after conv3 (GCNet's placement)."""

    def __init__(self, dim):
        super().__init__()
        mid = dim // 2
        self.conv1, self.bn1 = nn.Conv2d(dim, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, 1, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, dim, 1, bias=False), nn.BatchNorm2d(dim)
        self.context_block = ContextBlock(dim)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.context_block(self.bn3(self.conv3(out)))
        return F.relu(out + x)


def gcnet():
    """GCNet: a bottleneck with a global context block (softmax over HW, matmul, LayerNorm over (C, 1, 1))."""
    return _Seg(GCBottleneck(DIM))


# --------------------------------------------------------------------------- HorNet (raoyongming/HorNet)
class LayerNormCF(nn.Module):
    """HorNet's LayerNorm, data_format="channels_first"."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim)), eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GlobalLocalFilter(nn.Module):
    """Half the channels through a 3x3 depthwise conv, half through an FFT global filter whose complex weight is
    bilinearly resized when the map's spectrum differs from the (h, w) it was built for."""

    def __init__(self, dim, h=14, w=8):
        super().__init__()
        self.dw = nn.Conv2d(dim // 2, dim // 2, kernel_size=3, padding=1, bias=False, groups=dim // 2)
        self.complex_weight = nn.Parameter(torch.randn(dim // 2, h, w, 2, dtype=torch.float32) * 0.02)
        self.pre_norm, self.post_norm = LayerNormCF(dim), LayerNormCF(dim)

    def forward(self, x):
        x = self.pre_norm(x)
        x1, x2 = torch.chunk(x, 2, dim=1)
        x1 = self.dw(x1)
        x2 = x2.to(torch.float32)
        b, c, a, bb = x2.shape
        x2 = torch.fft.rfft2(x2, dim=(2, 3), norm="ortho")
        weight = self.complex_weight
        if not weight.shape[1:3] == x2.shape[2:4]:
            weight = F.interpolate(
                weight.permute(3, 0, 1, 2), size=x2.shape[2:4], mode="bilinear", align_corners=True
            ).permute(1, 2, 3, 0)
        weight = torch.view_as_complex(weight.contiguous())
        x2 = x2 * weight
        x2 = torch.fft.irfft2(x2, s=(a, bb), dim=(2, 3), norm="ortho")
        x = torch.cat([x1.unsqueeze(2), x2.unsqueeze(2)], dim=2).reshape(b, 2 * c, a, bb)
        return self.post_norm(x)


class GnConv(nn.Module):
    """Recursive gated convolution of order ``order`` (``gnconv``), with the global-local filter as its dwconv."""

    def __init__(self, dim, order=3, h=14, w=8, s=1.0 / 3.0):
        super().__init__()
        self.order = order
        self.dims = [dim // 2**i for i in range(order)]
        self.dims.reverse()
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        self.dwconv = GlobalLocalFilter(sum(self.dims), h=h, w=w)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.pws = nn.ModuleList([nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1)])
        self.scale = s

    def forward(self, x):
        fused_x = self.proj_in(x)
        pwa, abc = torch.split(fused_x, (self.dims[0], sum(self.dims)), dim=1)
        dw_list = torch.split(self.dwconv(abc) * self.scale, self.dims, dim=1)
        x = pwa * dw_list[0]
        for i in range(self.order - 1):
            x = self.pws[i](x) * dw_list[i + 1]
        return self.proj_out(x)


class HorNetBlock(nn.Module):
    def __init__(self, dim, layer_scale_init_value=0.5):  # the reference's 1e-6 makes an untrained block ~identity
        super().__init__()
        self.norm1 = LayerNormCF(dim)
        self.gnconv = GnConv(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.gamma1 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        self.gamma2 = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x):
        _, c, _, _ = x.shape
        x = x + self.gamma1.view(c, 1, 1) * self.gnconv(self.norm1(x))
        y = self.pwconv2(self.act(self.pwconv1(self.norm2(x.permute(0, 2, 3, 1)))))
        return x + (self.gamma2 * y).permute(0, 3, 1, 2)


def hornet():
    """HorNet-GF: gnconv (order 3) with the FFT global filter, built for 14x8 spectra (resized to the map's)."""
    return _Seg(HorNetBlock(DIM))


# --------------------------------------------------------------------------- BoTNet at a real size
def _byom_models():
    """``examples/byom_models.py`` (BoTNet's MHSA is defined there), loaded beside this file."""
    path = Path(__file__).with_name("byom_models.py")
    spec = importlib.util.spec_from_file_location("_edgeseg_example_byom_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def botnet16():
    """BoTNet MHSA at a real size: a 16x16 map (64x64 input), 4 heads of d=128, as in BoTNet-50's c5 blocks
    (14x14 there; export sizes are multiples of 32)."""
    dim = 512
    return _Seg(_byom_models().BoTAttention(dim, 16, heads=4), dim=dim, input_size=(64, 64))


FAMILIES = {"mvit": mvit, "levit": levit, "cvt": cvt, "gcnet": gcnet, "hornet": hornet, "botnet16": botnet16}
