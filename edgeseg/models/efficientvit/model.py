"""EfficientViT-Seg (Cai et al., ICCV 2023), written for edgeseg.

One self-contained file, like a timm model file. Module names, parameter shapes and the fp32 forward follow the
official MIT HAN Lab implementation (mit-han-lab/efficientvit: ``models/nn/ops.py``,
``models/efficientvit/backbone.py``, ``models/efficientvit/seg.py``), so an official checkpoint loads with
``strict=True`` and gives the same logits. Attributes that hold no parameters but exist in the official modules
(``dropout``, ``pre_norm``, ``post_act``) are kept so module paths line up one for one.

The deploy rewrites (fp32 normaliser casts, pad-free attention, upsampling as convolution...) live in
``edgeseg.models.efficientvit.rewrites`` and swap modules of this reference; nothing here is changed for a backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "EfficientViTSeg",
    "EfficientViTSegConfig",
    "LiteMLA",
    "UpSampleLayer",
    "build_efficientvit_seg",
    "EFFICIENTVIT_SEG_CONFIGS",
]

# Activation names as the official code spells them. Its "gelu" is the tanh approximation.
_ACTIVATIONS: dict[str, type | partial] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hswish": nn.Hardswish,
    "silu": nn.SiLU,
    "gelu": partial(nn.GELU, approximate="tanh"),
}


def _act(name: str | None) -> nn.Module | None:
    return None if name is None else _ACTIVATIONS[name]()


def _norm(name: str | None, channels: int) -> nn.Module | None:
    if name is None:
        return None
    if name != "bn2d":
        raise ValueError(f"unsupported norm {name!r}: EfficientViT-Seg uses 'bn2d'")
    return nn.BatchNorm2d(channels)


def _triple(value, n: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


# ----------------------------------------------------------------------------------------------------------
# Basic layers
# ----------------------------------------------------------------------------------------------------------


class ConvLayer(nn.Module):
    """Conv2d ("same" padding) -> optional BatchNorm -> optional activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        use_bias: bool = False,
        dropout: float = 0.0,
        norm: str | None = "bn2d",
        act_func: str | None = "relu",
    ):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else None
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=use_bias,
        )
        self.norm = _norm(norm, out_channels)
        self.act = _act(act_func)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dropout is not None:
            x = self.dropout(x)
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class UpSampleLayer(nn.Module):
    """Resize by an integer factor; the official head uses bicubic, align_corners=False.

    Half-precision inputs are resized in fp32, as the official layer does.
    """

    def __init__(self, mode: str = "bicubic", factor: int = 2, align_corners: bool = False):
        super().__init__()
        self.mode = mode
        self.factor = factor
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        align = self.align_corners if self.mode in ("bilinear", "bicubic") else None
        return F.interpolate(x, scale_factor=self.factor, mode=self.mode, align_corners=align)


class IdentityLayer(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class OpSequential(nn.Module):
    """Sequential over ``op_list`` that skips ``None`` entries (the official key prefix is ``op_list.N``)."""

    def __init__(self, op_list: list[nn.Module | None]):
        super().__init__()
        self.op_list = nn.ModuleList([op for op in op_list if op is not None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


# ----------------------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------------------


class DSConv(nn.Module):
    """Depthwise kxk -> pointwise 1x1."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size=3,
        stride=1,
        use_bias=False,
        norm=("bn2d", "bn2d"),
        act_func=("relu6", None),
    ):
        super().__init__()
        use_bias, norm, act_func = _triple(use_bias, 2), _triple(norm, 2), _triple(act_func, 2)
        self.depth_conv = ConvLayer(
            in_channels,
            in_channels,
            kernel_size,
            stride,
            groups=in_channels,
            use_bias=use_bias[0],
            norm=norm[0],
            act_func=act_func[0],
        )
        self.point_conv = ConvLayer(
            in_channels, out_channels, 1, use_bias=use_bias[1], norm=norm[1], act_func=act_func[1]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size=3,
        stride=1,
        expand_ratio=6.0,
        use_bias=False,
        norm=("bn2d", "bn2d", "bn2d"),
        act_func=("relu6", "relu6", None),
    ):
        super().__init__()
        use_bias, norm, act_func = _triple(use_bias, 3), _triple(norm, 3), _triple(act_func, 3)
        mid = round(in_channels * expand_ratio)
        self.inverted_conv = ConvLayer(in_channels, mid, 1, use_bias=use_bias[0], norm=norm[0], act_func=act_func[0])
        self.depth_conv = ConvLayer(
            mid, mid, kernel_size, stride, groups=mid, use_bias=use_bias[1], norm=norm[1], act_func=act_func[1]
        )
        self.point_conv = ConvLayer(mid, out_channels, 1, use_bias=use_bias[2], norm=norm[2], act_func=act_func[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class FusedMBConv(nn.Module):
    """Fused inverted residual: full kxk expand -> 1x1 project."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size=3,
        stride=1,
        expand_ratio=6.0,
        use_bias=False,
        norm=("bn2d", "bn2d"),
        act_func=("relu6", None),
    ):
        super().__init__()
        use_bias, norm, act_func = _triple(use_bias, 2), _triple(norm, 2), _triple(act_func, 2)
        mid = round(in_channels * expand_ratio)
        self.spatial_conv = ConvLayer(
            in_channels, mid, kernel_size, stride, use_bias=use_bias[0], norm=norm[0], act_func=act_func[0]
        )
        self.point_conv = ConvLayer(mid, out_channels, 1, use_bias=use_bias[1], norm=norm[1], act_func=act_func[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.spatial_conv(x))


class ResBlock(nn.Module):
    """Two kxk convolutions (the main branch of a ResNet basic block)."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size=3,
        stride=1,
        expand_ratio=1.0,
        use_bias=False,
        norm=("bn2d", "bn2d"),
        act_func=("relu6", None),
    ):
        super().__init__()
        use_bias, norm, act_func = _triple(use_bias, 2), _triple(norm, 2), _triple(act_func, 2)
        mid = round(in_channels * expand_ratio)
        self.conv1 = ConvLayer(
            in_channels, mid, kernel_size, stride, use_bias=use_bias[0], norm=norm[0], act_func=act_func[0]
        )
        self.conv2 = ConvLayer(
            mid, out_channels, kernel_size, 1, use_bias=use_bias[1], norm=norm[1], act_func=act_func[1]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class LiteMLA(nn.Module):
    """Lightweight multi-scale ReLU linear attention (the official numerics, fp32 reference).

    q, k, v come from a 1x1 conv plus depthwise multi-scale aggregations. With ReLU kernels the attention is
    ``out = (v k^T) q / (1^T k^T q + eps)``; the official code gets the normaliser by padding v with a row of
    ones, so one matmul yields numerator and denominator. When there are no more tokens than ``dim`` the
    quadratic form ``v (k^T q / colsum)`` is cheaper and is used instead. eps = 1e-15 is far below fp16's
    smallest subnormal, which is why the fp16 path computes the normaliser in fp32.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        heads: int | None = None,
        heads_ratio: float = 1.0,
        dim: int = 8,
        use_bias=False,
        norm=(None, "bn2d"),
        act_func=(None, None),
        kernel_func: str = "relu",
        scales: tuple[int, ...] = (5,),
        eps: float = 1.0e-15,
    ):
        super().__init__()
        self.eps = eps
        heads = heads or int(in_channels // dim * heads_ratio)
        total_dim = heads * dim
        use_bias, norm, act_func = _triple(use_bias, 2), _triple(norm, 2), _triple(act_func, 2)
        self.dim = dim
        self.qkv = ConvLayer(in_channels, 3 * total_dim, 1, use_bias=use_bias[0], norm=norm[0], act_func=act_func[0])
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(
                    3 * total_dim, 3 * total_dim, scale, padding=scale // 2, groups=3 * total_dim, bias=use_bias[0]
                ),
                nn.Conv2d(3 * total_dim, 3 * total_dim, 1, groups=3 * heads, bias=use_bias[0]),
            )
            for scale in scales
        )
        self.kernel_func = _act(kernel_func)
        self.proj = ConvLayer(
            total_dim * (1 + len(scales)), out_channels, 1, use_bias=use_bias[1], norm=norm[1], act_func=act_func[1]
        )

    def _split_qkv(self, qkv: torch.Tensor):
        b, _, h, w = qkv.shape
        qkv = torch.reshape(qkv, (b, -1, 3 * self.dim, h * w))
        q = self.kernel_func(qkv[:, :, 0 : self.dim])
        k = self.kernel_func(qkv[:, :, self.dim : 2 * self.dim])
        v = qkv[:, :, 2 * self.dim :]
        return q, k, v

    def relu_linear_att(self, qkv: torch.Tensor) -> torch.Tensor:
        b, _, h, w = qkv.shape
        q, k, v = self._split_qkv(qkv)
        v = F.pad(v, (0, 0, 0, 1), mode="constant", value=1.0)  # the ones row carries the normaliser
        vk = torch.matmul(v, k.transpose(-1, -2))
        out = torch.matmul(vk, q)
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()
        out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        return torch.reshape(out, (b, -1, h, w))

    def relu_quadratic_att(self, qkv: torch.Tensor) -> torch.Tensor:
        b, _, h, w = qkv.shape
        q, k, v = self._split_qkv(qkv)
        att_map = torch.matmul(k.transpose(-1, -2), q)
        dtype = att_map.dtype
        if dtype in (torch.float16, torch.bfloat16):
            att_map = att_map.float()
        att_map = att_map / (torch.sum(att_map, dim=2, keepdim=True) + self.eps)
        out = torch.matmul(v, att_map.to(dtype))
        return torch.reshape(out, (b, -1, h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        h, w = qkv.shape[-2:]
        if h * w > self.dim:
            # the official fp16 path computes in fp32 here and casts back
            out = self.relu_linear_att(qkv).to(qkv.dtype)
        else:
            out = self.relu_quadratic_att(qkv)
        return self.proj(out)


class ResidualBlock(nn.Module):
    """``main(x) + shortcut(x)``; no shortcut means a plain ``main(x)`` (downsampling blocks)."""

    def __init__(self, main: nn.Module | None, shortcut: nn.Module | None):
        super().__init__()
        self.pre_norm = None
        self.main = main
        self.shortcut = shortcut
        self.post_act = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.main is None:
            return x
        if self.shortcut is None:
            return self.main(x)
        return self.main(x) + self.shortcut(x)


class EfficientViTBlock(nn.Module):
    """LiteMLA context module then an MBConv local module, both residual."""

    def __init__(
        self,
        in_channels: int,
        heads_ratio: float = 1.0,
        dim: int = 32,
        expand_ratio: float = 4,
        scales=(5,),
        norm="bn2d",
        act_func="hswish",
    ):
        super().__init__()
        self.context_module = ResidualBlock(
            LiteMLA(in_channels, in_channels, heads_ratio=heads_ratio, dim=dim, norm=(None, norm), scales=scales),
            IdentityLayer(),
        )
        local = MBConv(
            in_channels,
            in_channels,
            expand_ratio=expand_ratio,
            use_bias=(True, True, False),
            norm=(None, None, norm),
            act_func=(act_func, act_func, None),
        )
        self.local_module = ResidualBlock(local, IdentityLayer())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


# ----------------------------------------------------------------------------------------------------------
# Backbones
# ----------------------------------------------------------------------------------------------------------


def _local_block(
    kind: str, cin: int, cout: int, stride: int, expand: float, norm: str, act: str, fewer_norm: bool = False
) -> nn.Module:
    """The official ``build_local_block``: fewer_norm drops BN (and adds bias) on all but the last conv."""
    if kind == "ds":
        return DSConv(
            cin,
            cout,
            stride=stride,
            use_bias=(True, False) if fewer_norm else False,
            norm=(None, norm) if fewer_norm else norm,
            act_func=(act, None),
        )
    if kind == "res":
        return ResBlock(
            cin,
            cout,
            stride=stride,
            use_bias=(True, False) if fewer_norm else False,
            norm=(None, norm) if fewer_norm else norm,
            act_func=(act, None),
        )
    if kind == "fmb":
        return FusedMBConv(
            cin,
            cout,
            stride=stride,
            expand_ratio=expand,
            use_bias=(True, False) if fewer_norm else False,
            norm=(None, norm) if fewer_norm else norm,
            act_func=(act, None),
        )
    if kind == "mb":
        return MBConv(
            cin,
            cout,
            stride=stride,
            expand_ratio=expand,
            use_bias=(True, True, False) if fewer_norm else False,
            norm=(None, None, norm) if fewer_norm else norm,
            act_func=(act, act, None),
        )
    raise ValueError(f"unknown block kind {kind!r}")


class EfficientViTBackbone(nn.Module):
    """B-series backbone: input stem, two MBConv stages, two attention stages (strides 2..32)."""

    def __init__(
        self,
        width_list: list[int],
        depth_list: list[int],
        in_channels: int = 3,
        dim: int = 32,
        expand_ratio: float = 4,
        norm: str = "bn2d",
        act_func: str = "hswish",
    ):
        super().__init__()
        w0 = width_list[0]
        stem: list[nn.Module] = [ConvLayer(in_channels, w0, stride=2, norm=norm, act_func=act_func)]
        for _ in range(depth_list[0]):
            stem.append(ResidualBlock(_local_block("ds", w0, w0, 1, 1, norm, act_func), IdentityLayer()))
        self.input_stem = OpSequential(stem)
        self.width_list = [w0]

        cin = w0
        stages = []
        for w, d in zip(width_list[1:3], depth_list[1:3]):
            blocks = []
            for i in range(d):
                stride = 2 if i == 0 else 1
                block = _local_block("mb", cin, w, stride, expand_ratio, norm, act_func)
                blocks.append(ResidualBlock(block, IdentityLayer() if stride == 1 else None))
                cin = w
            stages.append(OpSequential(blocks))
            self.width_list.append(cin)
        for w, d in zip(width_list[3:], depth_list[3:]):
            blocks = [ResidualBlock(_local_block("mb", cin, w, 2, expand_ratio, norm, act_func, fewer_norm=True), None)]
            cin = w
            blocks += [
                EfficientViTBlock(cin, dim=dim, expand_ratio=expand_ratio, norm=norm, act_func=act_func)
                for _ in range(d)
            ]
            stages.append(OpSequential(blocks))
            self.width_list.append(cin)
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"input": x}
        out["stage0"] = x = self.input_stem(x)
        for i, stage in enumerate(self.stages, 1):
            out[f"stage{i}"] = x = stage(x)
        out["stage_final"] = x
        return out


class EfficientViTLargeBackbone(nn.Module):
    """L-series backbone: ResBlock stem, fused-MBConv stages, MBConv, then attention; GELU activations."""

    def __init__(
        self,
        width_list: list[int],
        depth_list: list[int],
        in_channels: int = 3,
        qkv_dim: int = 32,
        norm: str = "bn2d",
        act_func: str = "gelu",
    ):
        super().__init__()
        block_list = ["res", "fmb", "fmb", "mb", "att"]
        expand_list = [1, 4, 4, 4, 6]
        fewer_norm_list = [False, False, False, True, True]

        w0 = width_list[0]
        stage0: list[nn.Module] = [ConvLayer(in_channels, w0, stride=2, norm=norm, act_func=act_func)]
        for _ in range(depth_list[0]):
            block = _local_block(block_list[0], w0, w0, 1, expand_list[0], norm, act_func, fewer_norm_list[0])
            stage0.append(ResidualBlock(block, IdentityLayer()))
        stages = [OpSequential(stage0)]
        self.width_list = [w0]

        cin = w0
        for sid, (w, d) in enumerate(zip(width_list[1:], depth_list[1:]), start=1):
            kind = block_list[sid]
            down_kind = kind if kind in ("mb", "fmb") else "mb"
            blocks = [
                ResidualBlock(
                    _local_block(down_kind, cin, w, 2, expand_list[sid] * 4, norm, act_func, fewer_norm_list[sid]), None
                )
            ]
            cin = w
            for _ in range(d):
                if kind == "att":
                    blocks.append(
                        EfficientViTBlock(
                            cin, dim=qkv_dim, expand_ratio=expand_list[sid], scales=(5,), norm=norm, act_func=act_func
                        )
                    )
                else:
                    block = _local_block(kind, cin, cin, 1, expand_list[sid], norm, act_func, fewer_norm_list[sid])
                    blocks.append(ResidualBlock(block, IdentityLayer()))
            stages.append(OpSequential(blocks))
            self.width_list.append(cin)
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"input": x}
        for i, stage in enumerate(self.stages):
            out[f"stage{i}"] = x = stage(x)
        out["stage_final"] = x
        return out


# ----------------------------------------------------------------------------------------------------------
# Segmentation head and model
# ----------------------------------------------------------------------------------------------------------


class SegHead(nn.Module):
    """The official DAG head: project stride 8/16/32 features to ``head_width``, upsample to stride 8, add,
    a few (Fused)MBConv blocks, then a 1x1 classifier. Key names follow the official ``DAGBlock``."""

    def __init__(
        self,
        fid_list: list[str],
        in_channel_list: list[int],
        stride_list: list[int],
        head_stride: int,
        head_width: int,
        head_depth: int,
        expand_ratio: float,
        middle_op: str,
        final_expand: int | None,
        n_classes: int,
        dropout: float = 0.0,
        norm: str = "bn2d",
        act_func: str = "hswish",
    ):
        super().__init__()
        inputs: list[nn.Module] = []
        for cin, stride in zip(in_channel_list, stride_list):
            factor = stride // head_stride
            proj = ConvLayer(cin, head_width, 1, norm=norm, act_func=None)
            inputs.append(proj if factor == 1 else OpSequential([proj, UpSampleLayer(factor=factor)]))
        self.input_keys = list(fid_list)
        self.input_ops = nn.ModuleList(inputs)
        self.merge = "add"
        self.post_input = None

        middle = []
        for _ in range(head_depth):
            if middle_op == "mbconv":
                block = MBConv(
                    head_width, head_width, expand_ratio=expand_ratio, norm=norm, act_func=(act_func, act_func, None)
                )
            elif middle_op == "fmbconv":
                block = FusedMBConv(
                    head_width, head_width, expand_ratio=expand_ratio, norm=norm, act_func=(act_func, None)
                )
            else:
                raise ValueError(f"unknown middle_op {middle_op!r}")
            middle.append(ResidualBlock(block, IdentityLayer()))
        self.middle = OpSequential(middle)

        self.output_keys = ["segout"]
        self.output_ops = nn.ModuleList(
            [
                OpSequential(
                    [
                        None
                        if final_expand is None
                        else ConvLayer(head_width, head_width * final_expand, 1, norm=norm, act_func=act_func),
                        ConvLayer(
                            head_width * (final_expand or 1),
                            n_classes,
                            1,
                            use_bias=True,
                            dropout=dropout,
                            norm=None,
                            act_func=None,
                        ),
                    ]
                )
            ]
        )

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feat = None
        for key, op in zip(self.input_keys, self.input_ops):
            y = op(features[key])
            feat = y if feat is None else feat + y
        feat = self.middle(feat)
        for key, op in zip(self.output_keys, self.output_ops):
            features[key] = op(feat)
        return features


class EfficientViTSeg(nn.Module):
    """Backbone + SegHead. Returns logits at stride 8 (``H/8 x W/8``); callers resize to the label size."""

    output_stride = 8

    def __init__(self, backbone: nn.Module, head: SegHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))["segout"]


# ----------------------------------------------------------------------------------------------------------
# Configs (the official zoo's numbers)
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadConfig:
    head_width: int
    head_depth: int
    expand_ratio: float
    middle_op: str
    final_expand: int | None
    act_func: str = "hswish"


@dataclass(frozen=True)
class EfficientViTSegConfig:
    variant: str
    series: str  # "b" or "l"
    width_list: tuple[int, ...]
    depth_list: tuple[int, ...]
    dim: int  # qkv dim per head
    heads: dict[str, HeadConfig] = field(default_factory=dict)  # keyed by head family: cityscapes / ade20k

    @property
    def norm_eps(self) -> float:
        # The official zoo sets BN eps to 1e-7 for the L series (set_norm_eps), leaves PyTorch's 1e-5 for B.
        return 1e-7 if self.series == "l" else 1e-5


def _hc(width, depth, expand, op, final, act="hswish") -> HeadConfig:
    return HeadConfig(width, depth, expand, op, final, act)


EFFICIENTVIT_SEG_CONFIGS: dict[str, EfficientViTSegConfig] = {
    "b0": EfficientViTSegConfig(
        "b0", "b", (8, 16, 32, 64, 128), (1, 2, 2, 2, 2), 16, {"cityscapes": _hc(32, 1, 4, "mbconv", 4)}
    ),
    "b1": EfficientViTSegConfig(
        "b1",
        "b",
        (16, 32, 64, 128, 256),
        (1, 2, 3, 3, 4),
        16,
        {"cityscapes": _hc(64, 3, 4, "mbconv", 4), "ade20k": _hc(64, 3, 4, "mbconv", None)},
    ),
    "b2": EfficientViTSegConfig(
        "b2",
        "b",
        (24, 48, 96, 192, 384),
        (1, 3, 4, 4, 6),
        32,
        {"cityscapes": _hc(96, 3, 4, "mbconv", 4), "ade20k": _hc(96, 3, 4, "mbconv", None)},
    ),
    "b3": EfficientViTSegConfig(
        "b3",
        "b",
        (32, 64, 128, 256, 512),
        (1, 4, 6, 6, 9),
        32,
        {"cityscapes": _hc(128, 3, 4, "mbconv", 4), "ade20k": _hc(128, 3, 4, "mbconv", None)},
    ),
    "l1": EfficientViTSegConfig(
        "l1",
        "l",
        (32, 64, 128, 256, 512),
        (1, 1, 1, 6, 6),
        32,
        {"cityscapes": _hc(256, 3, 1, "fmbconv", None, "gelu"), "ade20k": _hc(128, 3, 4, "fmbconv", 8, "gelu")},
    ),
    "l2": EfficientViTSegConfig(
        "l2",
        "l",
        (32, 64, 128, 256, 512),
        (1, 2, 2, 8, 8),
        32,
        {"cityscapes": _hc(256, 5, 1, "fmbconv", None, "gelu"), "ade20k": _hc(128, 3, 4, "fmbconv", 8, "gelu")},
    ),
}


def build_efficientvit_seg(variant: str, head_family: str, num_classes: int) -> EfficientViTSeg:
    """Build EfficientViT-Seg ``variant`` with the head of ``head_family`` ("cityscapes" or "ade20k") and
    ``num_classes`` outputs. CamVid uses the cityscapes head with 11 classes."""
    cfg = EFFICIENTVIT_SEG_CONFIGS[variant]
    hc = cfg.heads[head_family]
    if cfg.series == "b":
        backbone = EfficientViTBackbone(list(cfg.width_list), list(cfg.depth_list), dim=cfg.dim)
    else:
        backbone = EfficientViTLargeBackbone(list(cfg.width_list), list(cfg.depth_list), qkv_dim=cfg.dim)
    widths = backbone.width_list
    head = SegHead(
        fid_list=["stage4", "stage3", "stage2"],
        in_channel_list=[widths[4], widths[3], widths[2]],
        stride_list=[32, 16, 8],
        head_stride=8,
        head_width=hc.head_width,
        head_depth=hc.head_depth,
        expand_ratio=hc.expand_ratio,
        middle_op=hc.middle_op,
        final_expand=hc.final_expand,
        n_classes=num_classes,
        act_func=hc.act_func,
    )
    model = EfficientViTSeg(backbone, head)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = cfg.norm_eps
    return model
