"""Deploy rewrites for SegFormer: small module swaps applied in PyTorch before graph capture. Each replacement
shares the reference module's parameters (state-dict keys unchanged), names the pattern it replaces and the
backend constraint it satisfies; tests check parity against the reference module. The fp32 attention core and the
LayerNorm / GELU rewrites SegFormer shares with LVT are in ``edgeseg.rewrite.common``."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.models.segformer.model import SpatialReductionAttention
from edgeseg.rewrite.common import softmax_attention_fp32


class SRADeploy(nn.Module):
    """Replaces ``SpatialReductionAttention`` (pattern: SegFormer efficient self-attention whose fused ``kv``
    Linear is split with a 5-D reshape + permute(2, 0, 3, 1, 4)).

    Constraints satisfied:
    - rank <= 4 everywhere (TFLite GPU delegate: 4-D; Core ML: <= 5): the ``kv`` weight is sliced into its key and
      value halves (rows ``[0, C)`` and ``[C, 2C)``, the official reshape's order), each projected and reshaped to
      (B, heads, tokens, d) on its own. The slices are of a constant weight, folded at export.
    - keys are produced already transposed (B, heads, d, M), so no transpose sits before the score matmul.
    - scores and softmax in fp32 on fp16 targets (``softmax_attention_fp32``).
    The reduction LayerNorm is left to the ``layernorm-fp32`` rewrite (it is this module's child).
    Wanted by: every format and precision (``sra-split-kv``; TFLite takes ``sra-single-head-batch2``).
    """

    def __init__(self, ref: SpatialReductionAttention):
        super().__init__()
        self.dim, self.num_heads, self.sr_ratio, self.scale = ref.dim, ref.num_heads, ref.sr_ratio, ref.scale
        self.q, self.kv, self.proj = ref.q, ref.kv, ref.proj
        if ref.sr_ratio > 1:
            self.sr, self.norm = ref.sr, ref.norm

    def _kv(self, tokens: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        c, heads = self.dim, self.num_heads
        w, bias = self.kv.weight, self.kv.bias
        k = F.linear(tokens, w[:c], None if bias is None else bias[:c])
        v = F.linear(tokens, w[c:], None if bias is None else bias[c:])
        k_t = k.reshape(b, -1, heads, c // heads).permute(0, 2, 3, 1)  # B, heads, d, M
        v = v.reshape(b, -1, heads, c // heads).permute(0, 2, 1, 3)  # B, heads, M, d
        return k_t, v

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(b, n, heads, c // heads).permute(0, 2, 1, 3)
        tokens = x
        if self.sr_ratio > 1:
            reduced = self.sr(x.transpose(1, 2).reshape(b, c, h, w))
            tokens = self.norm(reduced.flatten(2).transpose(1, 2))
        k_t, v = self._kv(tokens, b)
        out = self._attend(q, k_t, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))

    def _attend(self, q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return softmax_attention_fp32(q, k_t, v, self.scale)


class SRASingleHeadAsBatch2(SRADeploy):
    """Replaces ``SpatialReductionAttention`` on TFLite targets (pattern: single-head attention, SegFormer-B0's
    stage 1: the score matmul ``q @ k^T`` has batch dims (1, 1)), otherwise as ``SRADeploy``.

    Constraint satisfied: TFLite's converter turns a batch-1 BATCH_MATMUL whose right operand is a transpose into
    FULLY_CONNECTED with the keys as its (runtime) weights, and XNNPACK takes FULLY_CONNECTED only with static
    weights: the op runs on TFLite's reference kernels and splits the graph into three delegate partitions. Here
    the queries are split into two halves along the tokens, a batch of two against the keys and the values each
    concatenated twice (B, 2, ., .): real BATCH_MATMULs, delegated (values broadcast over the batch instead are
    folded by the converter into a FULLY_CONNECTED over all tokens in the int8 graph). Exact (the same products).
    Odd token counts (never at export sizes, multiples of 32) and multi-head attention are left as ``SRADeploy``.
    Wanted by: TFLite, every precision (``sra-single-head-batch2``, superseding ``sra-split-kv`` there).
    """

    def _attend(self, q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, heads, n, d = q.shape
        if heads != 1 or n % 2:
            return super()._attend(q, k_t, v)
        q2 = q.reshape(b, 2, n // 2, d)
        halves = softmax_attention_fp32(q2, torch.cat([k_t, k_t], dim=1), torch.cat([v, v], dim=1), self.scale)
        return halves.reshape(b, 1, n, d)
