"""LVT, the Lite Vision Transformer (Yang et al., CVPR 2022), with the SegFormer all-MLP decoder, for edgeseg.

One self-contained model file, like a timm model file (the decode head is the one SegFormer defines, imported
from ``edgeseg.models.segformer``, as the official LVT segmentation code imports it). Module names, parameter
shapes and the fp32 forward follow the official code (Chenglin-Yang/LVT ``segmentation/mmseg/models/backbones/
lvt.py`` + ``decode_heads/segformer_head.py`` in mmseg's ``EncoderDecoder``), so an official ADE20K checkpoint
loads with ``strict=True``: keys are ``backbone.backbone.<stage>.<0: patch embed | 1: blocks>...`` and
``decode_head.*``.

The network is channels-last between modules (tokens are (B, H, W, C)) exactly as the official code:
- stage 1: CSA, Convolutional Self-Attention. Each stride-2 output position predicts a (k^2 x k^2) attention
  matrix per head from a Linear on a 2x2 average-pooled map; values are the k x k (k=3, padding 1, stride 2)
  neighbourhood, unfolded, each offset transformed by its own 1x1 conv (a grouped conv over k^2 groups); the
  attended k^2 outputs are folded back (overlapping, summed) to full resolution.
- stages 2-4: RASA, Recursive Atrous Self-Attention. Softmax attention with spatially reduced keys/values (as
  SegFormer); the query passes through one shared depthwise 3x3 kernel at dilations 1, 3, 5, each followed by
  SiLU, summed. The attention is applied twice (recursion 2): ``y = silu(attn(x)); y = silu(attn(y + x))``.
- MLP: Linear-GELU-Linear in stage 1; 1x1 conv, depthwise 3x3, GELU, 1x1 conv in stages 2-4.

Deploy rewrites (CSA without ``F.unfold``/``F.fold``, RASA with split kv and an fp32 core, rank <= 4) are in
``edgeseg.models.lvt.rewrites``; nothing here is changed for a backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.models.segformer.model import SegFormerHead

__all__ = [
    "CSA",
    "RASA",
    "DilatedSharedDWConv",
    "LiteVisionTransformer",
    "LVTSeg",
    "LVTConfig",
    "LVT_CONFIGS",
    "build_lvt_seg",
]


class DilatedSharedDWConv(nn.Module):
    """One depthwise 3x3 kernel applied at several dilations (padding = dilation), SiLU after each, summed.

    The official class is ``ds_conv2d``; its parameters are ``weight`` (C, 1, 3, 3) and, only when built with a
    bias, ``bias`` (LVT builds it without)."""

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 3, 5), bias: bool = False):
        super().__init__()
        self.dilations = tuple(dilations)
        self.channels = channels
        self.weight = nn.Parameter(torch.empty(channels, 1, 3, 3))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        self.act = nn.SiLU()
        nn.init.kaiming_uniform_(self.weight)
        if self.bias is not None:
            bound = math.sqrt(1.0 / 9.0)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = 0
        for dil in self.dilations:
            out = out + self.act(F.conv2d(x, self.weight, self.bias, padding=dil, dilation=dil, groups=self.channels))
        return out


class CSA(nn.Module):
    """Convolutional Self-Attention (reference numerics: ``nn.Unfold``, a 5-D attention tensor, ``F.fold``).

    Input and output (B, H, W, C). Odd H or W is allowed (the pool and the fold use ceil / exact output size)."""

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 3, padding: int = 1, stride: int = 2):
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.kernel_size, self.padding, self.stride = kernel_size, padding, stride
        self.scale = (dim // num_heads) ** -0.5
        kk = kernel_size * kernel_size
        self.attn = nn.Linear(dim, kk * kk * num_heads)
        self.attn_drop = nn.Dropout(0.0)
        self.unfold = nn.Unfold(kernel_size=kernel_size, padding=padding, stride=stride)
        self.pool = nn.AvgPool2d(kernel_size=stride, stride=stride, ceil_mode=True)
        # one (C x C) 1x1 transform per kernel offset; the official attribute name is "weight"
        self.weight = nn.Conv2d(kk * dim, kk * dim, 1, groups=kk, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)
        nn.init.normal_(self.weight.weight, 0.0, math.sqrt(2.0 / (kk * dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, hh, ww, c = x.shape
        k, kk, heads = self.kernel_size, self.kernel_size**2, self.num_heads
        h, w = math.ceil(hh / self.stride), math.ceil(ww / self.stride)
        attn = self.attn(self.pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        attn = attn.reshape(b, h * w, heads, kk, kk).permute(0, 2, 1, 3, 4)  # B, heads, N, kk(out), kk(in)
        attn = self.attn_drop((attn * self.scale).softmax(dim=-1))
        v = self.unfold(x.permute(0, 3, 1, 2)).reshape(b, c, kk, h * w).permute(0, 3, 2, 1)
        v = self.weight(v.reshape(b * h * w, kk * c, 1, 1))
        v = v.reshape(b, h * w, kk, heads, c // heads).permute(0, 3, 1, 2, 4)  # B, heads, N, kk, d
        out = (attn @ v).permute(0, 1, 4, 3, 2).reshape(b, c * kk, h * w)
        out = F.fold(out, output_size=(hh, ww), kernel_size=k, padding=self.padding, stride=self.stride)
        return self.proj_drop(self.proj(out.permute(0, 2, 3, 1)))


class RASA(nn.Module):
    """Recursive Atrous Self-Attention (the official class is ``Attention`` with a ``rasa_cfg``).

    Reference numerics: fused ``kv`` Linear split by a 5-D reshape/permute, the recursion as a loop."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, dilations=(1, 3, 5), recursions: int = 2):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.sr_ratio, self.recursions = dim, num_heads, sr_ratio, recursions
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, dim * 2, bias=False)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)
        self.ds = DilatedSharedDWConv(dim, dilations)
        if recursions > 1:
            self.silu = nn.SiLU()

    def inner_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        heads, d = self.num_heads, c // self.num_heads
        q = self.q(x).reshape(b, h * w, heads, d).permute(0, 2, 1, 3)
        q = self.ds(q.permute(0, 1, 3, 2).reshape(b, c, h, w))
        q = q.reshape(b, heads, d, h * w).permute(0, 1, 3, 2)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        kv = self.kv(x).reshape(b, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, h, w, c)
        return self.proj_drop(self.proj(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = x
        x = self.inner_attention(x)
        if self.recursions > 1:
            x = self.silu(x)
        for _ in range(self.recursions - 1):
            x = x + x_in
            x_in = x
            x = self.silu(self.inner_attention(x))
        return x


class Mlp(nn.Module):
    """Linear-GELU-Linear on (B, H, W, C), or with ``depthwise``: 1x1 conv, depthwise 3x3, GELU, 1x1 conv."""

    def __init__(self, dim: int, hidden: int, depthwise: bool):
        super().__init__()
        self.depthwise = depthwise
        if depthwise:
            self.fc1 = nn.Conv2d(dim, hidden, 1)
            self.depconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
            self.fc2 = nn.Conv2d(hidden, dim, 1)
        else:
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.depthwise:
            return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
        x = self.depconv(self.fc1(x.permute(0, 3, 1, 2)))
        x = self.drop(self.fc2(self.drop(self.act(x))))
        return x.permute(0, 2, 3, 1).contiguous()


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, attention: str, sr_ratio: int, mlp_dw: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CSA(dim, num_heads) if attention == "csa" else RASA(dim, num_heads, sr_ratio)
        self.drop_path = nn.Identity()  # the segmentation backbone is built with drop_path_rate 0
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), mlp_dw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OverlapPatchEmbed(nn.Module):
    """Strided overlapping conv + LayerNorm. Stage 1 takes the NCHW image; later stages take (B, H, W, C)."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.patch_size != 7:
            x = x.permute(0, 3, 1, 2)
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


@dataclass(frozen=True)
class LVTConfig:
    layers: tuple[int, ...] = (2, 2, 2, 2)
    embed_dims: tuple[int, ...] = (64, 64, 160, 256)
    num_heads: tuple[int, ...] = (2, 2, 5, 8)
    mlp_ratios: tuple[float, ...] = (4, 8, 4, 4)
    mlp_depthwise: tuple[bool, ...] = (False, True, True, True)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    attentions: tuple[str, ...] = ("csa", "rasa", "rasa", "rasa")
    decoder_embed_dim: int = 256


LVT_CONFIGS: dict[str, LVTConfig] = {"lvt": LVTConfig()}


class LiteVisionTransformer(nn.Module):
    """The backbone without its classification head: ``backbone`` holds one (patch embed, blocks) Sequential per
    stage; returns the four NCHW feature maps (strides 4..32)."""

    def __init__(self, cfg: LVTConfig):
        super().__init__()
        stages = []
        for i, n in enumerate(cfg.layers):
            embed = OverlapPatchEmbed(
                7 if i == 0 else 3, 4 if i == 0 else 2, 3 if i == 0 else cfg.embed_dims[i - 1], cfg.embed_dims[i]
            )
            blocks = nn.Sequential(
                *(
                    TransformerBlock(
                        cfg.embed_dims[i],
                        cfg.num_heads[i],
                        cfg.mlp_ratios[i],
                        cfg.attentions[i],
                        cfg.sr_ratios[i],
                        cfg.mlp_depthwise[i],
                    )
                    for _ in range(n)
                )
            )
            stages.append(nn.Sequential(embed, blocks))
        self.backbone = nn.ModuleList(stages)
        self.downstream_norms = nn.ModuleList(nn.Identity() for _ in cfg.layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for stage, norm in zip(self.backbone, self.downstream_norms):
            x = norm(stage(x))
            outs.append(x.permute(0, 3, 1, 2).contiguous())
        return outs


class LVTSeg(nn.Module):
    """LVT backbone + SegFormer head (mmseg ``EncoderDecoder`` key layout). Returns logits at stride 4."""

    output_stride = 4

    def __init__(self, backbone: LiteVisionTransformer, decode_head: SegFormerHead):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x))


def _init_weights(module: nn.Module) -> None:
    """The official initialisation: truncated normal (std 0.02) Linear weights, zero biases, unit LayerNorm,
    fan-out normal weights for the attention's and patch embeddings' convs (the CSA offset transform and the
    dilated kernel are initialised in their constructors, as in the official code)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, (RASA, OverlapPatchEmbed)):
            for conv in m.modules():
                if isinstance(conv, nn.Conv2d):
                    fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
                    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))
                    if conv.bias is not None:
                        nn.init.zeros_(conv.bias)


def build_lvt_seg(num_classes: int, variant: str = "lvt") -> LVTSeg:
    cfg = LVT_CONFIGS[variant]
    backbone = LiteVisionTransformer(cfg)
    _init_weights(backbone)
    return LVTSeg(backbone, SegFormerHead(cfg.embed_dims, num_classes, cfg.decoder_embed_dim))
