"""SegFormer-B0 (Xie et al., NeurIPS 2021), written for edgeseg.

One self-contained file, like a timm model file: the Mix Transformer encoder (MiT-B0) and the all-MLP decode head.
Module names, parameter shapes and the fp32 forward follow the official NVlabs code (``mmseg/models/backbones/
mix_transformer.py``, ``mmseg/models/decode_heads/segformer_head.py`` on mmseg's ``BaseDecodeHead``, wrapped in
mmseg's ``EncoderDecoder``), so an official checkpoint (``{"state_dict": ...}``) loads with ``strict=True``:
keys are ``backbone.*`` and ``decode_head.*``. Quirks kept on purpose so keys line up one for one:

- ``decode_head.conv_seg``: mmseg's base head always builds this classifier; the SegFormer head never calls it
  (it predicts with ``linear_pred``), but it is in every official checkpoint. It holds parameters and no compute.
- ``linear_fuse`` is mmcv's ``ConvModule`` (``conv`` without bias, ``bn``, ReLU); SyncBN is BatchNorm2d here.
- LayerNorm eps: 1e-6 for the block and stage norms (``mit_b0`` passes ``partial(nn.LayerNorm, eps=1e-6)``),
  PyTorch's default 1e-5 in the patch embeddings and the attention's reduction norm (the official code builds
  those with a plain ``nn.LayerNorm``).

The LVT segmentation model (``edgeseg.models.lvt``) reuses :class:`SegFormerHead`, as the official LVT code does.
Deploy rewrites (split kv, fp32 attention core, LayerNorm fp32 islands) live in ``edgeseg.models.segformer.rewrites``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "DropPath",
    "SegFormerHead",
    "MixVisionTransformer",
    "SpatialReductionAttention",
    "SegFormer",
    "SegFormerConfig",
    "SEGFORMER_CONFIGS",
    "build_segformer",
]


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample during training (identity in eval)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


# ----------------------------------------------------------------------------------------------------------
# Encoder: Mix Transformer
# ----------------------------------------------------------------------------------------------------------


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlapping windows (7x7/4 first, 3x3/2 after) -> tokens (B, N, C) -> LayerNorm."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        _, _, h, w = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class SpatialReductionAttention(nn.Module):
    """Multi-head softmax attention whose keys/values come from a ``sr_ratio``-strided conv of the tokens
    ("efficient self-attention"; the official class is ``Attention``). Reference numerics: the fused ``kv``
    Linear is split with a 5-D reshape/permute, exactly as the official forward."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, sr_ratio: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.sr_ratio = dim, num_heads, sr_ratio
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.num_heads
        q = self.q(x).reshape(b, n, self.num_heads, d).permute(0, 2, 1, 3)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(x.transpose(1, 2).reshape(b, c, h, w)).reshape(b, c, -1).transpose(1, 2))
        kv = self.kv(x).reshape(b, -1, 2, self.num_heads, d).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class DWConv(nn.Module):
    """Depthwise 3x3 conv on tokens (the "Mix-FFN" positional mixing)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """fc1 -> depthwise 3x3 -> GELU (erf) -> fc2 (the official class is ``Mlp``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x), h, w)))))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, sr_ratio: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SpatialReductionAttention(dim, num_heads, qkv_bias, sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixVisionTransformer(nn.Module):
    """Four stages (patch_embed{i}, block{i}, norm{i}); returns the four NCHW feature maps (strides 4..32)."""

    def __init__(self, cfg: SegFormerConfig):
        super().__init__()
        depth_total = sum(cfg.depths)
        dpr = [cfg.drop_path_rate * i / max(1, depth_total - 1) for i in range(depth_total)]
        cur = 0
        for i in range(4):
            in_chans = 3 if i == 0 else cfg.embed_dims[i - 1]
            patch, stride = (7, 4) if i == 0 else (3, 2)
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(patch, stride, in_chans, cfg.embed_dims[i]))
        for i in range(4):
            blocks = nn.ModuleList(
                Block(cfg.embed_dims[i], cfg.num_heads[i], cfg.mlp_ratios[i], True, cfg.sr_ratios[i], dpr[cur + j])
                for j in range(cfg.depths[i])
            )
            cur += cfg.depths[i]
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", nn.LayerNorm(cfg.embed_dims[i], eps=1e-6))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b = x.shape[0]
        outs = []
        for i in range(1, 5):
            x, h, w = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x, h, w)
            x = getattr(self, f"norm{i}")(x)
            x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


# ----------------------------------------------------------------------------------------------------------
# Decode head (shared with LVT)
# ----------------------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Linear embedding of a feature map: (B, C, H, W) -> tokens (B, HW, E)."""

    def __init__(self, input_dim: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(input_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(2).transpose(1, 2))


class ConvModule(nn.Module):
    """mmcv's ConvModule as the head configures it: 1x1 conv (no bias) -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class SegFormerHead(nn.Module):
    """All-MLP decoder: per-stage Linear to ``embed_dim``, bilinear resize to stride 4, concat (c4, c3, c2, c1),
    1x1 fuse conv + BN + ReLU, dropout, 1x1 classifier. Logits at stride 4."""

    def __init__(self, in_channels: tuple[int, ...], num_classes: int, embed_dim: int = 256, channels: int = 128):
        super().__init__()
        # mmseg BaseDecodeHead: built for every head, unused by SegFormer's forward (kept for strict loading)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.dropout = nn.Dropout2d(0.1)
        c1, c2, c3, c4 = in_channels
        self.linear_c4 = MLP(c4, embed_dim)
        self.linear_c3 = MLP(c3, embed_dim)
        self.linear_c2 = MLP(c2, embed_dim)
        self.linear_c1 = MLP(c1, embed_dim)
        self.linear_fuse = ConvModule(embed_dim * 4, embed_dim)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        c1, c2, c3, c4 = features
        n = c4.shape[0]
        size = c1.shape[2:]
        maps = []
        for feat, linear in ((c4, self.linear_c4), (c3, self.linear_c3), (c2, self.linear_c2), (c1, self.linear_c1)):
            y = linear(feat).permute(0, 2, 1).reshape(n, -1, feat.shape[2], feat.shape[3])
            if feat is not c1:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            maps.append(y)
        x = self.linear_fuse(torch.cat(maps, dim=1))
        return self.linear_pred(self.dropout(x))


# ----------------------------------------------------------------------------------------------------------
# Model and configs
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegFormerConfig:
    variant: str
    embed_dims: tuple[int, ...]
    num_heads: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    depths: tuple[int, ...]
    sr_ratios: tuple[int, ...]
    decoder_embed_dim: int
    drop_path_rate: float = 0.1


SEGFORMER_CONFIGS: dict[str, SegFormerConfig] = {
    "b0": SegFormerConfig("b0", (32, 64, 160, 256), (1, 2, 5, 8), (4, 4, 4, 4), (2, 2, 2, 2), (8, 4, 2, 1), 256),
}


class SegFormer(nn.Module):
    """MiT encoder + SegFormer head (mmseg ``EncoderDecoder`` key layout). Returns logits at stride 4."""

    output_stride = 4

    def __init__(self, backbone: nn.Module, decode_head: SegFormerHead):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x))


def init_weights(module: nn.Module) -> None:
    """The official initialisation: truncated normal (std 0.02) Linear weights, zero biases, unit LayerNorm,
    fan-out normal conv weights. Applied to the encoder; the decode head keeps PyTorch's defaults."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_segformer(variant: str, num_classes: int) -> SegFormer:
    cfg = SEGFORMER_CONFIGS[variant]
    backbone = MixVisionTransformer(cfg)
    init_weights(backbone)
    return SegFormer(backbone, SegFormerHead(cfg.embed_dims, num_classes, cfg.decoder_embed_dim))
