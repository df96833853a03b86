"""Training-time fast paths on the CPU: the same arithmetic as the plain ops, through kernels that are faster here.

Neither changes what is saved: the module swap keeps the class's parameters and state-dict keys, and exporters
build their models from the registry, never from a trained module object.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn


class Float32DepthwiseConv2d(nn.Conv2d):
    """A depthwise convolution that computes in fp32 under bf16 autocast, then hands bf16 on.

    Pattern: ``nn.Conv2d`` with ``groups == in_channels`` inside ``torch.autocast("cpu", torch.bfloat16)``.
    Constraint: oneDNN's bf16 depthwise backward (PyTorch 2.13, CPU) is 3-9x slower than fp32 for stride-2 and
    5x5 kernels (EfficientViT-B0, batch 8, crop 320, 1 thread, Intel Xeon: 622 ms in bf16, 317 ms this way, for
    all its depthwise and grouped convolutions forward + backward; docs/generated/train-kernels.md). The
    output returns to the autocast dtype so the BatchNorm after it stays in bf16 (it is memory bound: bf16 halves
    its traffic). Outside autocast it is a plain ``nn.Conv2d``. Used by training only; no export format sees it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled(x.device.type):
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            y = self._conv_forward(x.float(), self.weight.float(), None if self.bias is None else self.bias.float())
        return y.to(torch.get_autocast_dtype(x.device.type))


def depthwise_in_fp32(model: nn.Module) -> int:
    """Swap each depthwise ``nn.Conv2d`` in ``model`` for :class:`Float32DepthwiseConv2d` in place; returns how many."""
    swapped = 0
    for module in model.modules():
        if type(module) is nn.Conv2d and module.groups > 1 and module.groups == module.in_channels:
            module.__class__ = Float32DepthwiseConv2d
            swapped += 1
    return swapped


@lru_cache(maxsize=32)
def bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """The (n_out, n_in) matrix of 1-D bilinear resampling as ``F.interpolate(..., align_corners=False)`` does it.

    Source coordinate ``(dst + 0.5) * n_in / n_out - 0.5``, clamped at 0, in fp32 as PyTorch's kernel computes it
    (so non-integer ratios round alike); the upper neighbour is clamped to the last row, where both weights land.
    """
    dst = torch.arange(n_out, dtype=torch.float32)
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    src = ((dst + 0.5) * scale - 0.5).clamp(min=0.0)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = (src - lo).clamp(0.0, 1.0)
    rows = torch.arange(n_out)
    matrix = torch.zeros(n_out, n_in, dtype=torch.float32)
    matrix.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    matrix.index_put_((rows, hi), frac, accumulate=True)
    return matrix


def upsample_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` for fp32 NCHW as two matrix products.

    Separable bilinear resampling is ``A_h @ x @ A_w.T``. The loss upsamples 11-class logits 8x to the label size;
    on the CPU the matmuls (and their backward) beat the interpolation kernels, and the result is contiguous NCHW,
    which ``cross_entropy`` reads without a layout copy: upsampling, loss and backward of B0's batch take 191 ms
    instead of 346 ms (1 thread, docs/generated/train-kernels.md). Same values within float rounding (a parity
    test checks 1e-5 against ``F.interpolate``). Other dtypes or ranks fall back to ``F.interpolate``.
    """
    if x.dim() != 4 or x.dtype != torch.float32:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    rows = bilinear_matrix(x.shape[-2], size[0]).to(x.device)
    cols = bilinear_matrix(x.shape[-1], size[1]).to(x.device)
    return torch.matmul(torch.matmul(rows, x.contiguous()), cols.T)
