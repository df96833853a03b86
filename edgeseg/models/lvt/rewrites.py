"""Deploy rewrites for LVT: CSA without unfold/fold, RASA with split kv, an fp32 attention core and the recursion
written out. Module swaps applied in PyTorch before graph capture; each replacement shares the reference module's
parameters (state-dict keys unchanged) and is checked for parity against it in the tests."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.models.lvt.model import CSA, RASA
from edgeseg.rewrite.common import softmax_attention_fp32


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
    - unfold + the per-offset transform -> zero pad 1, then per offset (ki, kj) a unit-stride slice and that
      offset's (C x C) 1x1 conv at stride 2 (its group of the grouped conv's weight): the same products as the
      reference's stride-2 tap followed by the grouped conv. The nine are concatenated in the reference's
      offset-major order as three concatenations of three on channels, each reshaped to (B*N, 3, heads, d), and
      one concatenation of those on the offset axis (directly nested concatenations are fused back into one of
      nine by the TFLite converter). XNNPACK takes neither a stride-2 STRIDED_SLICE nor a CONCATENATION of more
      than 5 inputs: either runs on TFLite's reference kernels and splits the graph into delegate partitions.
    - attention weights: the Linear on the pooled map reshapes straight to (B*N, heads, 9, 9); values are
      (B*N, heads, 9, d); one 4-D batched matmul; scores, softmax and matmul in fp32 (``softmax_attention``-style
      casts; vanish in fp32 graphs).
    - stride-2 fold with k=3, padding 1 -> four parity planes of shifted sums: output (2a, 2b) takes offset (1,1)
      at (a, b); (2a, 2b+1) takes (1,2) at (a, b) + (1,0) at (a, b+1); (2a+1, 2b) takes (2,1) at (a, b) + (0,1) at
      (a+1, b); (2a+1, 2b+1) the four corners likewise; then depth-to-space as two 4-D interleaves and a crop to
      (H, W) (odd sizes included).
    The 2x2 average pool keeps ``ceil_mode`` only when H or W is odd (the shapes are static at export).
    Wanted by: every format and precision (``csa-no-unfold``).
    """

    def __init__(self, ref: CSA):
        super().__init__()
        if (ref.kernel_size, ref.stride, ref.padding) != (3, 2, 1):
            raise ValueError("CSADeploy handles CSA with kernel 3, stride 2, padding 1 (LVT's configuration)")
        self.dim, self.num_heads, self.scale = ref.dim, ref.num_heads, ref.scale
        self.attn, self.weight, self.proj = ref.attn, ref.weight, ref.proj

    def _values(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, C, H, W) -> the 9 neighbourhood offsets, each through its own 1x1 transform, as (B*N, heads, 9, d)."""
        c = x.shape[1]
        padded = F.pad(x, (1, 1, 1, 1))
        rows, cols = 2 * (h - 1) + 1, 2 * (w - 1) + 1
        kernels = self.weight.weight  # (9C, C, 1, 1): group o transforms offset o
        taps = [
            F.conv2d(padded[:, :, ki : ki + rows, kj : kj + cols], kernels[o * c : (o + 1) * c], stride=2)
            for o, (ki, kj) in enumerate((ki, kj) for ki in range(3) for kj in range(3))
        ]
        b, heads = x.shape[0], self.num_heads
        # three concatenations of three, each reshaped before the last one: the converter fuses directly nested
        # concatenations back into one of nine
        thirds = [
            torch.cat(taps[i : i + 3], dim=1).permute(0, 2, 3, 1).reshape(b * h * w, 3, heads, c // heads)
            for i in (0, 3, 6)
        ]
        return torch.cat(thirds, dim=1).permute(0, 2, 1, 3)

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
        heads = self.num_heads
        h, w = math.ceil(hh / 2), math.ceil(ww / 2)
        xc = x.permute(0, 3, 1, 2)
        pooled = F.avg_pool2d(xc, 2, 2, ceil_mode=bool(hh % 2 or ww % 2))
        logits = self.attn(pooled.permute(0, 2, 3, 1)).reshape(b * h * w, heads, 9, 9)
        attn = (logits.float() * self.scale).softmax(dim=-1)
        v = self._values(xc, h, w)  # B*N, heads, 9, d
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
    - the atrous query conv (one depthwise 3x3 kernel at dilations 1, 3, 5, SiLU, summed) starts its sum at the
      first term (the reference's ``0 +`` is an Add of a zero constant in the graph).
    The reduction LayerNorm is left to the ``layernorm-fp32`` rewrite. Every weight is read through ``_weight``
    (the reference's parameter here; ``RASAWeightsPerUse`` gives each use its own copy).
    Wanted by: every format and precision (``rasa-split-kv``; TFLite int8 takes ``rasa-weights-per-use``).
    """

    def __init__(self, ref: RASA):
        super().__init__()
        self.dim, self.num_heads, self.sr_ratio, self.scale = ref.dim, ref.num_heads, ref.sr_ratio, ref.scale
        self.recursions = ref.recursions
        self.q, self.kv, self.proj, self.ds = ref.q, ref.kv, ref.proj, ref.ds
        self.dilations = ref.ds.dilations
        if ref.sr_ratio > 1:
            self.sr, self.norm = ref.sr, ref.norm

    def _weight(self, name: str, step: int, dilation: int = 0) -> torch.Tensor | None:
        """Parameter ``name`` (e.g. ``"q.weight"``) as used by recursion ``step`` (and for ``ds.weight``, by the
        ``dilation``-th dilation): the one shared parameter in the reference numerics."""
        if name == "ds.bias" and self.ds.bias is None:  # LVT builds the atrous conv without a bias
            return None
        return self.get_parameter(name)

    def _query(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """(B, H, W, C) tokens -> the atrous query (B, C, H, W)."""
        q = F.linear(x, self._weight("q.weight", step)).permute(0, 3, 1, 2)
        out = None
        for i, dil in enumerate(self.dilations):
            kernel, bias = self._weight("ds.weight", step, i), self._weight("ds.bias", step, i)
            y = F.silu(F.conv2d(q, kernel, bias, padding=dil, dilation=dil, groups=self.dim))
            out = y if out is None else out + y
        return out

    def _attention(self, x: torch.Tensor, step: int) -> torch.Tensor:
        b, h, w, c = x.shape
        heads, d = self.num_heads, c // self.num_heads
        q = self._query(x, step).reshape(b, heads, d, h * w).transpose(2, 3)  # B, heads, N, d
        tokens = x
        if self.sr_ratio > 1:
            reduced = F.conv2d(
                x.permute(0, 3, 1, 2), self._weight("sr.weight", step), self._weight("sr.bias", step), self.sr_ratio
            )
            tokens = self.norm(reduced.permute(0, 2, 3, 1))
        tokens = tokens.reshape(b, -1, c)
        kv = self._weight("kv.weight", step)
        k = F.linear(tokens, kv[:c]).reshape(b, -1, heads, d).permute(0, 2, 3, 1)  # B, heads, d, M
        v = F.linear(tokens, kv[c:]).reshape(b, -1, heads, d).permute(0, 2, 1, 3)  # B, heads, M, d
        out = softmax_attention_fp32(q, k, v, self.scale)
        out = out.transpose(1, 2).reshape(b, h, w, c)
        return F.linear(out, self._weight("proj.weight", step), self._weight("proj.bias", step))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recursions == 1:
            return self._attention(x, 0)
        y = F.silu(self._attention(x, 0))
        for step in range(1, self.recursions):  # static count: unrolled at capture
            x = y + x
            y = F.silu(self._attention(x, step))
        return y


class RASAWeightsPerUse(RASADeploy):
    """Replaces ``RASA`` for PT2E int8 TFLite (pattern: one conv weight read by several convs: RASA's atrous
    kernel shared by its three dilations, and the reduction conv and atrous kernel read again by the second
    recursion step), otherwise as ``RASADeploy``.

    Constraint satisfied: litert-torch's PT2E quantizer (0.10) counts a conv's weight and bias nodes in the conv's
    annotation and skips a conv whose weight is already annotated, so only the first conv reading a weight is
    quantized (its linear annotator does not do this). The later readers stay float convs, and two float convs
    (dilations 3 and 5) then read one dequantize node, the query Linear's permuted output. litert-torch's NHWC
    layout pass transposes a shared dequantize for its first reader only (``insert_t_q_dq`` gives the original
    node the inserted transpose's meta dict, so marking the transpose NHWC marks the dequantize NHWC too): the
    second conv gets the NCHW tensor as NHWC and conversion fails ("expected input[1, 60, 64, 48] to have 64
    channels"; whether the partitioner puts a layout boundary there depends on the whole graph). Here every conv
    use reads its own copy (non-persistent buffers: state-dict keys unchanged), so every conv is quantized and
    gets its own dequantize. Numerics are the reference's (the copies are equal); the int8 file stores the copies
    (LVT: 0.38 M weights more).
    Wanted by: TFLite int8 (``rasa-weights-per-use``, superseding ``rasa-split-kv`` there).
    """

    _COPIED = ("sr.weight", "sr.bias", "ds.weight", "ds.bias")

    def __init__(self, ref: RASA):
        super().__init__(ref)
        for name, param in self.named_parameters():
            if name not in self._COPIED:
                continue
            uses = self.recursions * (len(self.dilations) if name.startswith("ds.") else 1)
            for use in range(1, uses):
                self.register_buffer(self._copy_name(name, use), param.detach().clone(), persistent=False)

    @staticmethod
    def _copy_name(name: str, use: int) -> str:
        return f"{name.replace('.', '_')}_use{use}"

    def _weight(self, name: str, step: int, dilation: int = 0) -> torch.Tensor | None:
        if name not in self._COPIED or (name == "ds.bias" and self.ds.bias is None):
            return super()._weight(name, step, dilation)
        use = step * len(self.dilations) + dilation if name.startswith("ds.") else step
        return self.get_parameter(name) if use == 0 else getattr(self, self._copy_name(name, use))
