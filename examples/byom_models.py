"""Small segmentation models built from the attention mechanisms of the survey, written after the papers' public
code, for ``edgeseg export --model examples/byom_models.py:NAME``.

Each NAME is a function (of ``num_classes``, default 11: ``--num-classes N``) returning an ``nn.Module`` that maps
a ``(1, 3, H, W)`` image to ``(1, C, H/4, W/4)`` logits: a stride-4 patch embedding, one block of the family, a 1x1
classifier. Their reference code is export-hostile in the ways ``docs/byom.md`` lists (6-D window partitions,
``torch.roll``, 5-D head reshapes, ``F.unfold`` / ``Tensor.unfold`` windows, relative-position gathers,
``torch.fft``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 11
DIM = 32
INPUT = (64, 64)  # the size each model is built for (Swin's shift mask and GFNet's filter are size-bound)


# --------------------------------------------------------------------------- Swin (microsoft/Swin-Transformer)
def window_partition(x, ws):
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, c)


def window_reverse(windows, ws, h, w):
    b = int(windows.shape[0] / (h * w / ws / ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def relative_position_index(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


class WindowAttention(nn.Module):
    def __init__(self, dim, ws, heads):
        super().__init__()
        self.ws, self.heads, self.scale = ws, heads, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, heads) * 0.02)
        self.register_buffer("relative_position_index", relative_position_index(ws))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = attn.softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


class SwinBlock(nn.Module):
    def __init__(self, dim, resolution, ws=4, shift=2, heads=2):
        super().__init__()
        self.ws, self.shift, self.resolution = ws, shift, resolution
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        h, w = resolution
        img_mask = torch.zeros(1, h, w, 1)
        cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
        cnt = 0
        for hs in cuts:
            for wsl in cuts:
                img_mask[:, hs, wsl, :] = cnt
                cnt += 1
        mw = window_partition(img_mask, ws).view(-1, ws * ws)
        mask = mw.unsqueeze(1) - mw.unsqueeze(2)
        self.register_buffer("attn_mask", mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0))

    def forward(self, x):  # (B, H, W, C)
        b, h, w, c = x.shape
        shortcut = x
        x = self.norm1(x)
        x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(x, self.ws).view(-1, self.ws * self.ws, c)
        windows = self.attn(windows, mask=self.attn_mask).view(-1, self.ws, self.ws, c)
        x = torch.roll(window_reverse(windows, self.ws, h, w), shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class _Seg(nn.Module):
    """Patch embedding (stride 4) -> block on (B, H, W, C) or (B, C, H, W) -> 1x1 classifier."""

    def __init__(self, block, channels_last: bool, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.input_size = INPUT
        self.embed = nn.Conv2d(3, DIM, 4, 4)
        self.block, self.channels_last = block, channels_last
        self.head = nn.Conv2d(DIM, num_classes, 1)

    def forward(self, x):
        x = self.embed(x)
        if self.channels_last:
            x = self.block(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        else:
            x = self.block(x)
        return self.head(x)


def swin(num_classes: int = NUM_CLASSES):
    """Swin: shifted-window attention (roll, 6-D window partition/reverse, 5-D qkv, rel-pos bias, 5-D mask)."""
    return _Seg(SwinBlock(DIM, (INPUT[0] // 4, INPUT[1] // 4)), channels_last=True, num_classes=num_classes)


# --------------------------------------------------------------------------- MaxViT (timm maxxvit.py)
def grid_partition(x, g):
    b, h, w, c = x.shape
    x = x.view(b, g, h // g, g, w // g, c)
    return x.permute(0, 2, 4, 1, 3, 5).contiguous().view(-1, g, g, c)


def grid_reverse(windows, g, h, w):
    c = windows.shape[-1]
    x = windows.view(-1, h // g, w // g, g, g, c)
    return x.permute(0, 3, 1, 4, 2, 5).contiguous().view(-1, h, w, c)


class MaxVitBlock(nn.Module):
    """Block attention (local windows) then grid attention (dilated global grid), timm's partition functions."""

    def __init__(self, dim, ws=4, heads=2):
        super().__init__()
        self.ws = ws
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.block_attn, self.grid_attn = WindowAttention(dim, ws, heads), WindowAttention(dim, ws, heads)

    def forward(self, x):  # (B, H, W, C)
        b, h, w, c = x.shape
        win = window_partition(self.norm1(x), self.ws).view(-1, self.ws * self.ws, c)
        x = x + window_reverse(self.block_attn(win).view(-1, self.ws, self.ws, c), self.ws, h, w)
        grid = grid_partition(self.norm2(x), self.ws).view(-1, self.ws * self.ws, c)
        return x + grid_reverse(self.grid_attn(grid).view(-1, self.ws, self.ws, c), self.ws, h, w)


def maxvit(num_classes: int = NUM_CLASSES):
    """MaxViT: block + grid attention (two 6-D partitions and their reverses, 5-D qkv, rel-pos bias)."""
    return _Seg(MaxVitBlock(DIM), channels_last=True, num_classes=num_classes)


# --------------------------------------------------------------------------- HaloNet (lucidrains halonet-pytorch)
class HaloAttention(nn.Module):
    """Blocked local attention with halos: queries from (block x block) blocks (6-D rearrange), keys/values from
    F.unfold windows of (block + 2 halo)^2, a learned relative bias gathered by a fixed index."""

    def __init__(self, dim, block=4, halo=1, heads=2):
        super().__init__()
        self.block, self.halo, self.heads, self.d = block, halo, heads, dim // heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        win = block + 2 * halo
        self.rel_table = nn.Parameter(torch.randn((block + win - 1) ** 2, heads) * 0.02)
        qy, qx = torch.meshgrid(torch.arange(block), torch.arange(block), indexing="ij")
        ky, kx = torch.meshgrid(torch.arange(win), torch.arange(win), indexing="ij")
        dy = ky.flatten()[None] - qy.flatten()[:, None] + block - 1
        dx = kx.flatten()[None] - qx.flatten()[:, None] + block - 1
        self.register_buffer("rel_index", dy * (block + win - 1) + dx)

    def forward(self, x):  # (B, C, H, W)
        b, c, h, w = x.shape
        blk, heads, d = self.block, self.heads, self.d
        q_inp = x.view(b, c, h // blk, blk, w // blk, blk).permute(0, 2, 4, 3, 5, 1).reshape(-1, blk * blk, c)
        kv = F.unfold(x, kernel_size=blk + 2 * self.halo, stride=blk, padding=self.halo)
        kv = kv.view(b, c, -1, kv.shape[-1]).permute(0, 3, 2, 1).reshape(-1, kv.shape[1] // c, c)
        q = self.to_q(q_inp).view(-1, blk * blk, heads, d).transpose(1, 2)
        k, v = self.to_kv(kv).chunk(2, dim=-1)
        k = k.reshape(k.shape[0], -1, heads, d).transpose(1, 2)
        v = v.reshape(v.shape[0], -1, heads, d).transpose(1, 2)
        sim = (q * d**-0.5) @ k.transpose(-2, -1)
        sim = sim + self.rel_table[self.rel_index].permute(2, 0, 1).unsqueeze(0)
        out = (sim.softmax(-1) @ v).transpose(1, 2).reshape(-1, blk * blk, c)
        out = self.to_out(out).view(b, h // blk, w // blk, blk, blk, c)
        return out.permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


def halonet(num_classes: int = NUM_CLASSES):
    """HaloNet: blocked halo attention (6-D block partition/merge, F.unfold windows, rel-pos gather)."""
    return _Seg(HaloAttention(DIM), channels_last=False, num_classes=num_classes)


# --------------------------------------------------------------------------- timm HaloAttn-style Tensor.unfold
class UnfoldLocalAttention(nn.Module):
    """SASA-style local attention with timm HaloAttn's ``pad().unfold(2).unfold(3)`` key/value windows (6-D)."""

    def __init__(self, dim, block=4, halo=1):
        super().__init__()
        self.block, self.halo = block, halo
        self.q, self.kv = nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, 2 * dim, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        blk, win = self.block, self.block + 2 * self.halo
        nb = (h // blk) * (w // blk)
        q = self.q(x).view(b, c, h // blk, blk, w // blk, blk).permute(0, 2, 4, 3, 5, 1).reshape(b * nb, blk * blk, c)
        kv = F.pad(self.kv(x), [self.halo] * 4).unfold(2, win, blk).unfold(3, win, blk)
        kv = kv.reshape(b, 2 * c, nb, win * win).permute(0, 2, 3, 1).reshape(b * nb, win * win, 2 * c)
        k, v = kv.split(c, dim=-1)
        out = ((q @ k.transpose(1, 2)) * c**-0.5).softmax(-1) @ v
        return out.view(b, h // blk, w // blk, blk, blk, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


def sasa(num_classes: int = NUM_CLASSES):
    """SASA / timm HaloAttn: Tensor.unfold pair (6-D) local windows, 6-D block partition/merge."""
    return _Seg(UnfoldLocalAttention(DIM), channels_last=False, num_classes=num_classes)


# --------------------------------------------------------------------------- GFNet (raoyongming/GFNet)
class GlobalFilter(nn.Module):
    def __init__(self, dim, h, w):
        super().__init__()
        self.complex_weight = nn.Parameter(torch.randn(h, w // 2 + 1, dim, 2) * 0.02)

    def forward(self, x):  # (B, H, W, C)
        b, a, bb, c = x.shape
        x = torch.fft.rfft2(x.to(torch.float32), dim=(1, 2), norm="ortho")
        x = x * torch.view_as_complex(self.complex_weight)
        return torch.fft.irfft2(x, s=(a, bb), dim=(1, 2), norm="ortho")


class GFNetBlock(nn.Module):
    def __init__(self, dim, resolution):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.filter = GlobalFilter(dim, *resolution)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        return x + self.mlp(self.norm2(self.filter(self.norm1(x))))


def gfnet(num_classes: int = NUM_CLASSES):
    """GFNet: rfft2 * learned filter -> irfft2 global filter."""
    return _Seg(GFNetBlock(DIM, (INPUT[0] // 4, INPUT[1] // 4)), channels_last=True, num_classes=num_classes)


# --------------------------------------------------------------------------- BoTNet (lucidrains bottleneck-transformer)
def rel_to_abs(x):
    b, h, length, _ = x.shape
    x = torch.cat((x, torch.zeros((b, h, length, 1), dtype=x.dtype)), dim=3)
    flat_x = x.reshape(b, h, length * 2 * length)
    flat_x = torch.cat((flat_x, torch.zeros((b, h, length - 1), dtype=x.dtype)), dim=2)
    return flat_x.reshape(b, h, length + 1, 2 * length - 1)[:, :, :length, (length - 1) :]


def relative_logits_1d(q, rel_k):
    b, heads, h, w, _ = q.shape
    logits = torch.einsum("bhxyd,rd->bhxyr", q, rel_k)
    logits = rel_to_abs(logits.reshape(b, heads * h, w, 2 * w - 1)).reshape(b, heads, h, w, w)
    return logits.unsqueeze(3).expand(-1, -1, -1, h, -1, -1)  # expand_dim(logits, dim=3, k=h)


class BoTAttention(nn.Module):
    """Multi-head self-attention over the whole map with 2-D relative position logits (BoTNet's MHSA)."""

    def __init__(self, dim, fmap, heads=2):
        super().__init__()
        self.heads, self.d, self.fmap = heads, dim // heads, fmap
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.rel_height = nn.Parameter(torch.randn(2 * fmap - 1, self.d) * self.d**-0.5)
        self.rel_width = nn.Parameter(torch.randn(2 * fmap - 1, self.d) * self.d**-0.5)

    def forward(self, x):  # (B, C, H, W)
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.heads, self.d, h * w).transpose(-2, -1) for t in (q, k, v))
        q = q * self.d**-0.5
        sim = q @ k.transpose(-2, -1)
        q5 = q.reshape(b, self.heads, h, w, self.d)
        lw = relative_logits_1d(q5, self.rel_width).permute(0, 1, 2, 4, 3, 5).reshape(b, self.heads, h * w, h * w)
        lh = relative_logits_1d(q5.permute(0, 1, 3, 2, 4), self.rel_height)
        lh = lh.permute(0, 1, 4, 2, 5, 3).reshape(b, self.heads, h * w, h * w)
        out = (sim + lw + lh).softmax(-1) @ v
        return x + out.transpose(-2, -1).reshape(b, c, h, w)


def botnet(num_classes: int = NUM_CLASSES):
    """BoTNet: relative logits (einsum on 5-D queries, rel_to_abs pad/reshape trick, 6-D expand)."""
    return _Seg(BoTAttention(DIM, INPUT[0] // 4), channels_last=False, num_classes=num_classes)


FAMILIES = {"swin": swin, "maxvit": maxvit, "halonet": halonet, "sasa": sasa, "gfnet": gfnet, "botnet": botnet}
