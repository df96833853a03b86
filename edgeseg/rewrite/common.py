"""Deploy rewrites that are not specific to one model family, and the fp32 attention core the LVT and SegFormer
rewrites share.

Module swaps applied in PyTorch before graph capture, like the family rewrites (``edgeseg/models/<family>/
rewrites.py``); each replacement's docstring names the pattern it matches, the constraint it satisfies and the
export formats that want it. ``hardswish-as-clamp`` is registered here for any model (every Hardswish, whatever
the family). ``LAYERNORM_FP32`` and ``GELU_TANH`` are records a family declares for itself: its package registers
``LAYERNORM_FP32.for_family(FAMILY)`` (LVT and SegFormer do).
"""

from __future__ import annotations

import math

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
    - ONNX Runtime's mobile EPs: NNAPI and the Core ML NeuralNetwork EP have no HardSwish (ORT rewrites it to
      HardSigmoid + Mul, or Max/Min + Mul in fp16, which they lack too), so each activation was a CPU hop between
      accelerator partitions (B0: 30 NNAPI partitions). Add, Clip and Mul are in all three EPs' op tables.
    Wanted by: TFLite int8 (``hardswish-as-clamp``) and ONNX fp16 (``hardswish-as-clip``): the fp16 ONNX is the one
    for accelerators (ORT's CPU EP has no native fp16). Not fp32 ONNX, the CPU artifact: ORT's CPU EP fuses
    HardSwish into the preceding conv (Conv + HardSigmoid, then one Mul), while add/clip/mul/mul are four passes
    over each activation; B0 onnx-fp32 measured +30 % median latency at 1 thread (``docs/residency.md``).
    Not ExecuTorch int8: its XNNPACK delegate takes ``nn.Hardswish`` between a dequantize and a quantize and runs
    it as one int8 kernel, while add/clamp/mul/mul were four int8 passes over each activation (B0
    executorch-int8: 1.22x executorch-fp32's latency with this rewrite, 0.69x without, ``docs/executorch.md``).
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


class LayerNormMatmulFp32(nn.Module):
    """Replaces ``nn.LayerNorm`` over the last dim (pattern: the transformer blocks' LayerNorm) in fp16 ONNX.

    Constraint satisfied: ONNX ``LayerNormalization`` (what ``LayerNormFp32`` exports) is in ORT's Core ML
    MLProgram EP op table only; NNAPI and the Core ML NeuralNetwork EP run each of LVT's 28 and SegFormer's 30
    LayerNorms on the CPU, splitting the graph around them. Here the mean and the variance over the channels are
    matmuls with a constant ``1/C`` column (ReduceMean is not in the NeuralNetwork EP's table), then Sub, Mul, Add,
    Sqrt, Div: ops all three EPs take. Computed in fp32 and cast back, like ``LayerNormFp32`` (fp16 variance of
    post-attention activations overflows). Same function as ``F.layer_norm`` to fp32 rounding.
    Wanted by: ONNX fp16 (``layernorm-matmul-fp32``, superseding ``layernorm-fp32`` there). Not fp32 ONNX, the CPU
    artifact, where ``LayerNormalization`` is one fused kernel.
    """

    def __init__(self, ref: nn.LayerNorm):
        super().__init__()
        if len(ref.normalized_shape) != 1:
            raise ValueError("LayerNormMatmulFp32 replaces LayerNorm over the last dim only")
        self.channels, self.eps = ref.normalized_shape[0], ref.eps
        self.weight, self.bias = ref.weight, ref.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        mean_col = torch.full((self.channels, 1), 1.0 / self.channels, dtype=torch.float32, device=x.device)
        centred = xf - torch.matmul(xf, mean_col)
        var = torch.matmul(centred * centred, mean_col)
        y = centred / torch.sqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.float()
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype)


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


class GeluErfcRational(nn.Module):
    """Replaces ``nn.GELU`` (erf form; pattern: the MLP activation) with an exact-to-fp32 form built only from ops
    every ONNX Runtime mobile EP takes: Relu, Mul, Add, Sub, Div and Sigmoid.

    Constraint satisfied: the erf GELU exports as Erf (or Gelu from opset 20), which neither the NNAPI EP nor the
    Core ML NeuralNetwork EP takes; every MLP then cut the graph into separate accelerator partitions. The tanh
    form (``gelu-tanh``) changes the numbers by up to 4.7e-4, so it is not used. Here, with ``a = |x|`` and
    ``q(a) = erfc(a / sqrt 2) / 2`` (the normal tail), ``gelu(x) = x * q(a) + relu(x) * (1 - 2 q(a))`` for either
    sign of x; ``erfc`` is Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7) and its ``exp(-z^2)`` is
    ``(1 - s) / s`` with ``s = sigmoid(z^2)`` (Exp is not in the NeuralNetwork EP's table, nor Neg or Reciprocal in
    all three; Sigmoid and Div are). ``|x|`` is ``2 relu(x) - x`` (no Abs, no Neg). Computed in fp32 and cast back
    (a half-precision graph keeps fp32 numerics here).
    Max abs difference to ``F.gelu`` is below 1e-6 in fp32 (``tests/test_residency.py``).
    Wanted by: ONNX fp16, the accelerators' ONNX (``gelu-erfc-rational``; LVT and SegFormer declare it). Not fp32
    ONNX, the CPU artifact: ORT's CPU EP fuses the erf GELU into one Gelu kernel, which these ~15 elementwise ops
    would replace.
    """

    # Abramowitz & Stegun 7.1.26
    P = 0.3275911
    A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)

    def __init__(self, ref: nn.GELU | None = None):
        super().__init__()
        if ref is not None and getattr(ref, "approximate", "none") != "none":
            raise ValueError("GeluErfcRational replaces the erf GELU (approximate='none')")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        pos = torch.relu(xf)
        ones = (1,) * x.dim()  # constants as tensors: ``1 / t`` with a Python 1 exports as Reciprocal (not NNAPI)
        one = torch.ones(ones, dtype=torch.float32, device=x.device)
        z = (2.0 * pos - xf) * (1.0 / math.sqrt(2.0))  # |x| / sqrt 2 without Abs or Neg
        t = torch.div(one, one + self.P * z)
        a1, a2, a3, a4, a5 = self.A
        poly = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))
        s = torch.sigmoid(z * z)
        q = 0.5 * poly * torch.div(one - s, s)  # erfc(z) / 2; exp(-y) = sigmoid(-y) / sigmoid(y) = (1 - s) / s
        return (xf * q + pos * (one - 2.0 * q)).to(x.dtype)


HARDSWISH_AS_CLAMP = register_rewrite(
    Rewrite(
        "hardswish-as-clamp",
        nn.Hardswish,
        HardswishAsClamp,
        "Hardswish as add/clamp/mul: TFLite's XNNPACK delegate has no int8 HARD_SWISH (keeps int8 TFLite in one "
        "partition)",
        formats=("tflite",),
        precisions=("int8",),
    )
)
HARDSWISH_AS_CLIP = register_rewrite(
    Rewrite(
        "hardswish-as-clip",
        nn.Hardswish,
        HardswishAsClamp,
        "Hardswish as add/clip/mul in fp16 ONNX: ORT's NNAPI and Core ML EPs lack HardSwish/HardSigmoid",
        formats=("onnx",),
        precisions=("fp16",),
    )
)
# Declared by the families they apply to (``register_rewrite(LAYERNORM_FP32.for_family(FAMILY))``).
LAYERNORM_FP32 = Rewrite(
    "layernorm-fp32",
    nn.LayerNorm,
    LayerNormFp32,
    "LayerNorm as one LayerNormalization computed in fp32 (casts only in half-precision graphs)",
)
LAYERNORM_MATMUL_FP32 = Rewrite(
    "layernorm-matmul-fp32",
    nn.LayerNorm,
    LayerNormMatmulFp32,
    "LayerNorm in fp32 from matmul means, sub/mul/sqrt/div in fp16 ONNX: NNAPI and Core ML NeuralNetwork lack "
    "LayerNormalization",
    formats=("onnx",),
    precisions=("fp16",),
)
GELU_TANH = Rewrite(
    "gelu-tanh",
    nn.GELU,
    GeluTanh,
    "GELU erf -> tanh approximation, for kernels without erf (not applied by default)",
    default=False,
)
GELU_ERFC_RATIONAL = Rewrite(
    "gelu-erfc-rational",
    nn.GELU,
    GeluErfcRational,
    "erf GELU from relu/mul/add/div/sigmoid in fp16 ONNX (exact to fp32): NNAPI and Core ML NeuralNetwork lack Erf",
    formats=("onnx",),
    precisions=("fp16",),
)
