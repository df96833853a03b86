"""Deploy rewrites that are not specific to one model family, and the fp32 attention core the LVT and SegFormer
rewrites share.

Module swaps applied in PyTorch before graph capture, like the family rewrites (``edgeseg/models/<family>/
rewrites.py``); each replacement's docstring names the pattern it matches, the constraint it satisfies and the
export formats that want it. ``hardswish-as-clamp`` is registered here for any model (every Hardswish, whatever
the family). ``LAYERNORM_FP32`` and ``GELU_TANH`` are records a family declares for itself: its package registers
``LAYERNORM_FP32.for_family(FAMILY)`` (LVT and SegFormer do).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.rewrite import Rewrite, register_rewrite


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


class HardswishAsClamp(nn.Module):
    """Pattern: ``nn.Hardswish``. Replacement: ``x * clamp(x + 3, 0, 6) * (1/6)`` (the same function).

    Constraints:
    - XNNPACK has no int8 HARD_SWISH kernel, so an int8 TFLite graph with HARD_SWISH breaks into one delegate
      partition per activation with reference kernels between them. Written as add, clamp and mul, every piece has
      an int8 XNNPACK kernel and the quantized graph stays in one partition.
    - The constants 3 and 1/6 are all-ones-shape tensors of x's rank, not Python scalars: PT2E turns a scalar into a 0-D
      quantized constant, and litert-torch's layout pass keeps any op with a non-4-D input in NCHW, so every
      activation of an int8 B0 ran between two TRANSPOSEs of its full feature map (46 of the graph's 73
      transposes). With 4-D constants the add/mul chain stays NHWC.
    Wanted by: TFLite int8.
    """

    def __init__(self, original: nn.Module | None = None):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ones = (1,) * x.dim()  # same rank as x: a broadcast never changes the output's rank
        three = torch.full(ones, 3.0, dtype=x.dtype, device=x.device)
        sixth = torch.full(ones, 1.0 / 6.0, dtype=x.dtype, device=x.device)
        return x * torch.clamp(x + three, 0.0, 6.0) * sixth


class LayerNormFp32(nn.Module):
    """Replaces ``nn.LayerNorm`` (pattern: LayerNorm over the channel dim after attention / in MLP blocks).

    Computes in fp32 and casts back: on fp16 targets the variance of post-attention activations overflows fp16
    (TensorRT issue 2564; efficientvit issue 142 forces LayerNorm fp32). Exports as one opset-17+
    ``LayerNormalization`` (the native op on ONNX Runtime, TensorRT 10 and Core ML ``layer_norm``), wrapped in
    Cast nodes only when the graph is half precision; in an fp32 graph it is the reference op.
    Wanted by: every format and precision (a no-op in fp32 graphs).
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
    model, not assumed. Wanted by no format by default (opt-in): every target edgeseg exports today has an erf GELU
    path.
    """

    def __init__(self, ref: nn.GELU | None = None):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


HARDSWISH_AS_CLAMP = register_rewrite(
    Rewrite(
        "hardswish-as-clamp",
        nn.Hardswish,
        HardswishAsClamp,
        "Hardswish as add/clamp/mul: XNNPACK has no int8 HARD_SWISH (keeps int8 TFLite / ExecuTorch in one "
        "partition)",
        formats=("tflite", "executorch"),
        precisions=("int8",),
    )
)
# Declared by the families they apply to (``register_rewrite(LAYERNORM_FP32.for_family(FAMILY))``).
LAYERNORM_FP32 = Rewrite(
    "layernorm-fp32",
    nn.LayerNorm,
    LayerNormFp32,
    "LayerNorm as one LayerNormalization computed in fp32 (casts only in half-precision graphs)",
)
GELU_TANH = Rewrite(
    "gelu-tanh",
    nn.GELU,
    GeluTanh,
    "GELU erf -> tanh approximation, for kernels without erf (not applied by default)",
    default=False,
)
