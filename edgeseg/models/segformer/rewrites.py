"""Deploy rewrites for SegFormer (and the pieces LVT shares with it): small module swaps applied in PyTorch before
graph capture. Each replacement shares the reference module's parameters (state-dict keys unchanged), names the
pattern it replaces and the backend constraint it satisfies; tests check parity against the reference module."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.models.segformer.model import SpatialReductionAttention


def softmax_attention_fp32(q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """``softmax(q k^T * scale) v`` with every tensor rank <= 4 (batch, heads, tokens, channels), the scores, the
    softmax and both matmuls in fp32; the result is cast back to ``q``'s dtype.

    ``q`` (..., N, d), ``k_t`` (..., d, M) (keys already transposed, so no transpose sits between the projection and
    the matmul), ``v`` (..., M, d). In an fp32 graph the casts vanish; in a half-precision graph (ONNX fp16,
    TensorRT strongly typed) they are explicit Cast nodes, so fp16 never holds the logits (a fused fp16 softmax
    overflows once its normaliser exceeds 65504: a known TensorRT fp16 attention failure). The scale multiplies
    ``q`` before the score matmul, so the scores go straight from the matmul into the softmax: Core ML converts the
    fp32 graph and keeps only selected op types (matmul, softmax) fp32 on fp16 targets, so no fp16 op sits between
    the two."""
    scores = torch.matmul(q.float() * scale, k_t.float())
    return torch.matmul(scores.softmax(dim=-1), v.float()).to(q.dtype)


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
    """

    def _attend(self, q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, heads, n, d = q.shape
        if heads != 1 or n % 2:
            return super()._attend(q, k_t, v)
        q2 = q.reshape(b, 2, n // 2, d)
        halves = softmax_attention_fp32(q2, torch.cat([k_t, k_t], dim=1), torch.cat([v, v], dim=1), self.scale)
        return halves.reshape(b, 1, n, d)


class LayerNormFp32(nn.Module):
    """Replaces ``nn.LayerNorm`` (pattern: LayerNorm over the channel dim after attention / in MLP blocks).

    Computes in fp32 and casts back: on fp16 targets the variance of post-attention activations overflows fp16
    (TensorRT issue 2564; efficientvit issue 142 forces LayerNorm fp32). Exports as one opset-17+
    ``LayerNormalization`` (the native op on ONNX Runtime, TensorRT 10 and Core ML ``layer_norm``), wrapped in
    Cast nodes only when the graph is half precision; in an fp32 graph it is the reference op.
    """

    def __init__(self, ref: nn.LayerNorm):
        super().__init__()
        self.normalized_shape, self.eps = ref.normalized_shape, ref.eps
        self.weight, self.bias = ref.weight, ref.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class GeluTanh(nn.Module):
    """Replaces ``nn.GELU`` (erf) with the tanh approximation (pattern: the MLP activation).

    For targets whose GELU kernel is the tanh form or that lack Erf: the two differ by at most 4.7e-4 in absolute
    value (over all inputs; ``tests/test_models_lvt_segformer.py`` measures it); the model-level effect is measured per
    model, not assumed. Not applied by default: every target edgeseg exports today has an erf GELU path.
    """

    def __init__(self, ref: nn.GELU | None = None):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")
