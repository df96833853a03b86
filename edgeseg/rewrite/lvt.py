"""Deploy rewrites for LVT: CSA without unfold/fold, RASA with split kv, an fp32 attention core and the recursion
written out. Module swaps applied in PyTorch before graph capture; each replacement shares the reference module's
parameters (state-dict keys unchanged) and is checked for parity against it in the tests."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.models.lvt import CSA, RASA
from edgeseg.rewrite.segformer import softmax_attention_fp32


def _shift_up(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``out[i] = t[i + 1]`` along ``dim`` (2: rows, 3: columns), zero past the end (a slice and a zero pad)."""
    n = t.shape[dim]
    pad = (0, 0, 0, 1) if dim == 2 else (0, 1)
    return F.pad(t.narrow(dim, 1, n - 1), pad)


def _interleave(even: torch.Tensor, odd: torch.Tensor, dim: int) -> torch.Tensor:
    """Interleave two (B, C, H, W) maps along ``dim`` (2: rows, 3: columns): out[2i] = even[i], out[2i+1] = odd[i].

    Batch and channels are folded together so the stacking axis fits in a 4-D tensor (``pixel_shuffle`` lowers to
    6-D reshapes)."""
    b, c, h, w = even.shape
    if dim == 2:
        y = torch.cat([even.reshape(b * c, h, 1, w), odd.reshape(b * c, h, 1, w)], dim=2)
        return y.reshape(b, c, 2 * h, w)
    y = torch.cat([even.reshape(b * c, h, w, 1), odd.reshape(b * c, h, w, 1)], dim=3)
    return y.reshape(b, c, h, 2 * w)


class CSADeploy(nn.Module):
    """Replaces ``CSA`` (pattern: Convolutional Self-Attention: ``nn.Unfold`` of the values, a 5-D
    (B, heads, N, k^2, k^2) attention tensor, a per-offset grouped 1x1 conv on (B*N, k^2*C, 1, 1), and an
    overlapping stride-2 ``F.fold``).

    Constraints satisfied (every target): no ``F.unfold`` (exports as Pad + Gather + a 6-D Transpose; Core ML has no
    ``Tensor.unfold``) and no ``F.fold`` (ONNX ``Col2Im`` exists only from opset 18, TensorRT has no Col2Im, Core ML
    refuses an overlapping fold); every tensor rank <= 4 (TFLite GPU delegate).
    - unfold -> zero pad 1 + the k^2 = 9 stride-2 slices, concatenated on channels: (B, 9C, h, w), exactly the
      reference's value order (offset-major). The per-offset transform is the same grouped 1x1 conv applied to
      this map directly (a 1x1 conv needs no (B*N, ., 1, 1) reshape).
    - attention weights: the Linear on the pooled map reshapes straight to (B*N, heads, 9, 9); values to
      (B*N, heads, 9, d); one 4-D batched matmul; scores, softmax and matmul in fp32 (``softmax_attention``-style
      casts; vanish in fp32 graphs).
    - stride-2 fold with k=3, padding 1 -> four parity planes of shifted sums: output (2a, 2b) takes offset (1,1)
      at (a, b); (2a, 2b+1) takes (1,2) at (a, b) + (1,0) at (a, b+1); (2a+1, 2b) takes (2,1) at (a, b) + (0,1) at
      (a+1, b); (2a+1, 2b+1) the four corners likewise; then depth-to-space as two 4-D interleaves and a crop to
      (H, W) (odd sizes included).
    The 2x2 average pool keeps ``ceil_mode`` only when H or W is odd (the shapes are static at export).
    """

    def __init__(self, ref: CSA):
        super().__init__()
        if (ref.kernel_size, ref.stride, ref.padding) != (3, 2, 1):
            raise ValueError("CSADeploy handles CSA with kernel 3, stride 2, padding 1 (LVT's configuration)")
        self.dim, self.num_heads, self.scale = ref.dim, ref.num_heads, ref.scale
        self.attn, self.weight, self.proj = ref.attn, ref.weight, ref.proj

    def _values(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, C, H, W) -> the 9 neighbourhood offsets, offset-major on channels: (B, 9C, h, w)."""
        padded = F.pad(x, (1, 1, 1, 1))
        rows, cols = 2 * (h - 1) + 1, 2 * (w - 1) + 1
        taps = [padded[:, :, ki : ki + rows : 2, kj : kj + cols : 2] for ki in range(3) for kj in range(3)]
        return torch.cat(taps, dim=1)

    def _fold(self, planes: list[torch.Tensor], hh: int, ww: int) -> torch.Tensor:
        """Overlapping stride-2 fold (k=3, padding 1) of the 9 offset planes (index ki*3 + kj) to (B, C, hh, ww)."""
        p = planes
        ee = p[4]
        eo = p[5] + _shift_up(p[3], 3)
        oe = p[7] + _shift_up(p[1], 2)
        oo = p[8] + _shift_up(p[6], 3) + _shift_up(p[2], 2) + _shift_up(_shift_up(p[0], 2), 3)
        even_cols = _interleave(ee, oe, 2)
        odd_cols = _interleave(eo, oo, 2)
        y = _interleave(even_cols, odd_cols, 3)
        if y.shape[2] != hh or y.shape[3] != ww:
            y = y[:, :, :hh, :ww]
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, hh, ww, c = x.shape
        heads, d = self.num_heads, c // self.num_heads
        h, w = math.ceil(hh / 2), math.ceil(ww / 2)
        xc = x.permute(0, 3, 1, 2)
        pooled = F.avg_pool2d(xc, 2, 2, ceil_mode=bool(hh % 2 or ww % 2))
        logits = self.attn(pooled.permute(0, 2, 3, 1)).reshape(b * h * w, heads, 9, 9)
        attn = (logits.float() * self.scale).softmax(dim=-1)
        v = self.weight(self._values(xc, h, w))  # B, 9C, h, w; channel = offset * C + head * d + e
        v = v.permute(0, 2, 3, 1).reshape(b * h * w, 9, heads, d).permute(0, 2, 1, 3)  # B*N, heads, 9, d
        out = torch.matmul(attn, v.float()).to(x.dtype)  # B*N, heads, 9 (output offset), d
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, 9 * c).permute(0, 3, 1, 2)  # B, 9C, h, w
        planes = [out[:, i * c : (i + 1) * c] for i in range(9)]
        y = self._fold(planes, hh, ww)
        return self.proj(y.permute(0, 2, 3, 1))


class RASADeploy(nn.Module):
    """Replaces ``RASA`` (pattern: LVT's recursive atrous self-attention: a fused ``kv`` Linear split by a 5-D
    reshape + permute(2, 0, 3, 1, 4), and the attention applied in a Python recursion loop).

    Constraints satisfied:
    - rank <= 4 everywhere: ``kv``'s weight sliced into key and value halves (rows [0, C) and [C, 2C): the official
      order), each projected and reshaped to (B, heads, tokens, d) on its own; keys produced transposed.
    - the recursion (depth 2 in LVT) written out as straight-line code: ``y = silu(A(x)); y = silu(A(y + x))``.
    - scores and softmax in fp32 on fp16 targets (``softmax_attention_fp32``).
    The atrous query conv (three dilated depthwise convs sharing one kernel, SiLU, summed) is the reference module;
    the reduction LayerNorm is left to the ``layernorm-fp32`` rewrite.
    """

    def __init__(self, ref: RASA):
        super().__init__()
        self.dim, self.num_heads, self.sr_ratio, self.scale = ref.dim, ref.num_heads, ref.sr_ratio, ref.scale
        self.recursions = ref.recursions
        self.q, self.kv, self.proj, self.ds = ref.q, ref.kv, ref.proj, ref.ds
        if ref.sr_ratio > 1:
            self.sr, self.norm = ref.sr, ref.norm

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        heads, d = self.num_heads, c // self.num_heads
        q = self.ds(self.q(x).permute(0, 3, 1, 2))  # B, C, H, W
        q = q.reshape(b, heads, d, h * w).transpose(2, 3)  # B, heads, N, d
        tokens = x
        if self.sr_ratio > 1:
            tokens = self.norm(self.sr(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        tokens = tokens.reshape(b, -1, c)
        k = F.linear(tokens, self.kv.weight[:c]).reshape(b, -1, heads, d).permute(0, 2, 3, 1)  # B, heads, d, M
        v = F.linear(tokens, self.kv.weight[c:]).reshape(b, -1, heads, d).permute(0, 2, 1, 3)  # B, heads, M, d
        out = softmax_attention_fp32(q, k, v, self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recursions == 1:
            return self._attention(x)
        y = F.silu(self._attention(x))
        for _ in range(self.recursions - 1):  # static count: unrolled at capture
            x = y + x
            y = F.silu(self._attention(x))
        return y
