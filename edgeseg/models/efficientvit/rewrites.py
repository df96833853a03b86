"""Deploy rewrites for EfficientViT-Seg: small module swaps applied in PyTorch, before graph capture, so every
backend benefits. Each replacement shares the reference module's parameters (state-dict keys are unchanged) and
names the pattern it replaces and the backend constraint it satisfies; tests check parity against the reference
module. ``hardswish-as-clamp`` (EfficientViT's activations, but not tied to a family) is in
``edgeseg.rewrite.common``."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.models.efficientvit.model import LiteMLA, UpSampleLayer


class LiteMLAFp32Normaliser(nn.Module):
    """Replaces ``LiteMLA`` (pattern: ReLU linear attention with a ones-row ``F.pad`` normaliser).

    Constraints satisfied:
    - fp16 / int8 targets keep the attention core in fp32: q, k, v are cast to fp32 explicitly, the two matmuls,
      the normaliser and the division run in fp32 and the result is cast back. Explicit casts survive a strongly
      typed TensorRT build, Core ML op precision and ONNX fp16, where the official fp32 cast disappears in an
      fp32 export. In fp16 the token sums of ``v k^T`` overflow 65504 on real activations, and eps = 1e-15 rounds
      to 0.
    - No ones-row pad: the normaliser is ``(sum_m k_m)^T q``, exact in float. The pad becomes an int8 PADV2 whose
      constant 1.0 saturates in TFLite, and it stays off XNNPACK in fp32.
    - eps as ``clamp_min``: graph optimizers fold away ``+ 1e-15`` (torch's ONNX optimizer did), turning 0/0 into
      NaN; with ReLU kernels the normaliser is >= 0, so ``max(den, eps)`` equals ``den + eps`` to float rounding.
    The linear/quadratic choice is a Python branch on the static input size, so it is fixed at export.
    Wanted by: every format and precision (``attention-fp32-normaliser``).
    """

    def __init__(self, ref: LiteMLA):
        super().__init__()
        self.dim, self.eps = ref.dim, ref.eps
        self.qkv, self.aggreg, self.kernel_func, self.proj = ref.qkv, ref.aggreg, ref.kernel_func, ref.proj

    def _split_qkv_fp32(self, qkv: torch.Tensor):
        b, _, h, w = qkv.shape
        qkv = torch.reshape(qkv, (b, -1, 3 * self.dim, h * w)).float()
        q = self.kernel_func(qkv[:, :, 0 : self.dim])
        k = self.kernel_func(qkv[:, :, self.dim : 2 * self.dim])
        v = qkv[:, :, 2 * self.dim :]
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        b, _, h, w = qkv.shape
        q, k, v = self._split_qkv_fp32(qkv)
        if h * w > self.dim:  # linear: (v k^T) q / ((sum k)^T q)
            vk = torch.matmul(v, k.transpose(-1, -2))
            num = torch.matmul(vk, q)
            den = torch.matmul(k.sum(dim=-1, keepdim=True).transpose(-1, -2), q)
            out = num / torch.clamp_min(den, self.eps)
        else:  # quadratic: v (k^T q / colsum)
            att = torch.matmul(k.transpose(-1, -2), q)
            att = att / torch.clamp_min(att.sum(dim=2, keepdim=True), self.eps)
            out = torch.matmul(v, att)
        out = torch.reshape(out, (b, -1, h, w)).to(x.dtype)
        return self.proj(out)


class LiteMLAOnesMatmulNormaliser(LiteMLAFp32Normaliser):
    """Replaces ``LiteMLA`` on ONNX targets (pattern: the linear-attention normaliser ``sum_m k_m``, a ReduceSum
    over the tokens, and the quadratic branch's column sum), otherwise as ``LiteMLAFp32Normaliser``.

    Constraint satisfied: ReduceSum is not in ONNX Runtime's NNAPI EP op table, nor (as ORT's checker reads its
    table) in the Core ML NeuralNetwork EP's, so each of the four attention blocks cut the graph into separate NNAPI
    partitions with a CPU hop between them. A sum over an axis is a matmul with a ones vector: ``k @ 1`` (tokens
    innermost, (B, h, d, N) @ (N, 1)) and ``1^T @ att`` for the column sum. MatMul with a constant second input is
    in every mobile EP's table. Exact up to float summation order (fp32, in the fp32 attention core).
    Wanted by: ONNX, every precision (``attention-normaliser-matmul``, superseding ``attention-fp32-normaliser``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        b, _, h, w = qkv.shape
        q, k, v = self._split_qkv_fp32(qkv)
        n = h * w
        if n > self.dim:  # linear: (v k^T) q / ((k 1)^T q)
            vk = torch.matmul(v, k.transpose(-1, -2))
            num = torch.matmul(vk, q)
            k_sum = torch.matmul(k, torch.ones(n, 1, dtype=k.dtype, device=k.device))  # B, h, d, 1
            den = torch.matmul(k_sum.transpose(-1, -2), q)
            out = num / torch.clamp_min(den, self.eps)
        else:  # quadratic: v (k^T q / (1^T k^T q))
            att = torch.matmul(k.transpose(-1, -2), q)
            col = torch.matmul(torch.ones(1, n, dtype=att.dtype, device=att.device), att)
            att = att / torch.clamp_min(col, self.eps)
            out = torch.matmul(v, att)
        out = torch.reshape(out, (b, -1, h, w)).to(x.dtype)
        return self.proj(out)


class LiteMLABatched(LiteMLAFp32Normaliser):
    """Replaces ``LiteMLA`` (pattern: ReLU linear attention over ``(b, heads, dim, tokens)`` tensors) with
    ``LiteMLAFp32Normaliser``'s arithmetic on 3-D ``(b * heads, dim, tokens)`` views with ``torch.bmm``.

    Constraint satisfied: ExecuTorch decomposes a 4-D ``matmul`` into ``expand_copy`` + ``bmm``, and its XNNPACK
    partitioner takes no ``expand_copy`` nor the normaliser's ``sum``: every attention block splits the delegate
    into three partitions with portable kernels between them (B0: 13 partitions, 28 expand_copy and 4 sum left
    out). Here the matmuls are ``bmm`` of equal batches (no expand) and the token sums are ``bmm`` with a ones
    vector (exact to float rounding), so a block is one partition (the ones are an ``aten.full`` fed into it).
    Wanted by: ExecuTorch (``attention-batched-bmm``), every precision (the core stays fp32 as in
    ``LiteMLAFp32Normaliser``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        b, _, h, w = qkv.shape
        q, k, v = self._split_qkv_fp32(qkv)
        batch, d, n = q.shape[0] * q.shape[1], q.shape[2], q.shape[3]
        q, k, v = q.reshape(batch, d, n), k.reshape(batch, d, n), v.reshape(batch, d, n)
        if n > self.dim:  # linear: (v k^T) q / ((k 1)^T q)
            num = torch.bmm(torch.bmm(v, k.transpose(1, 2)), q)
            k_sum = torch.bmm(k, torch.ones(batch, n, 1, dtype=k.dtype, device=k.device))
            out = num / torch.clamp_min(torch.bmm(k_sum.transpose(1, 2), q), self.eps)
        else:  # quadratic: v (k^T q / colsum)
            att = torch.bmm(k.transpose(1, 2), q)
            col_sum = torch.bmm(torch.ones(batch, 1, n, dtype=att.dtype, device=att.device), att)
            out = torch.bmm(v, att / torch.clamp_min(col_sum, self.eps))
        out = torch.reshape(out, (b, -1, h, w)).to(x.dtype)
        return self.proj(out)


class UpSampleFp32(nn.Module):
    """Replaces ``UpSampleLayer`` (pattern: integer-factor resize in the head).

    Resizes in fp32 and casts back to the input dtype, so a half-precision graph stays strongly typed (the
    official layer returns fp32 from an fp16 input, which only works under autocast). ``mode`` may differ from
    the reference: ``bilinear`` for targets without bicubic resize (TFLite); its mIoU cost is measured, not
    assumed. align_corners=False maps to ONNX half_pixel / TFLite half_pixel_centers=True.
    Wanted by: every format, when chosen: ``--upsample resize`` (``upsample-fp32``) and ``--upsample bilinear``
    (``bicubic-to-bilinear``, this class with ``mode="bilinear"``).
    """

    def __init__(self, ref: UpSampleLayer, mode: str | None = None):
        super().__init__()
        self.factor, self.mode, self.align_corners = ref.factor, mode or ref.mode, ref.align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        y = F.interpolate(x.float(), scale_factor=float(self.factor), mode=self.mode, align_corners=self.align_corners)
        return y.to(x.dtype)


def _cubic(x: float, a: float = -0.75) -> float:
    """PyTorch's bicubic convolution kernel (Keys, A = -0.75)."""
    x = abs(x)
    if x <= 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0


def bicubic_phase_taps(scale: int) -> torch.Tensor:
    """(scale, 5) weights: output phase p of an x``scale`` bicubic upsample reads input offsets -2..2.

    With align_corners=False, output o = scale*i + p samples source ``i + (p + 0.5)/scale - 0.5``; its four taps
    sit at floor-1..floor+2, always inside -2..2 of i for an integer scale. PyTorch clamps indices at the border,
    which is exactly replicate padding by 2.
    """
    return torch.from_numpy(_phase_taps(scale))


def _phase_taps(scale: int) -> np.ndarray:
    """``bicubic_phase_taps`` in numpy float64: usable inside a traced forward (no torch tensors to fake)."""
    taps = np.zeros((scale, 5), dtype=np.float64)
    for p in range(scale):
        src = (p + 0.5) / scale - 0.5
        f = math.floor(src)
        t = src - f
        for k, w in zip(range(f - 1, f + 3), (_cubic(t + 1), _cubic(t), _cubic(1 - t), _cubic(2 - t))):
            taps[p, k + 2] += w
    return taps


def _replicate_pad2(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Replicate-pad by 2 along ``dim`` with slices and a concat (F.pad(mode="replicate") lowers to GATHER_ND in
    TFLite, which leaves the delegates)."""
    first = x.narrow(dim, 0, 1)
    last = x.narrow(dim, x.shape[dim] - 1, 1)
    return torch.cat([first, first, x, last, last], dim=dim)


class BicubicAsConv(nn.Module):
    """Replaces ``UpSampleLayer`` in bicubic mode with an integer factor (pattern: the head's bicubic resize).

    Computes ``F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)`` exactly (to float rounding).
    Bicubic is separable, so two passes: rows, then columns. Each pass replicate-pads by 2 (PyTorch clamps border
    indices), runs a fixed (5x1) / (1x5) depthwise conv with ``s`` output phases per channel, and interleaves the
    phases with a 4-D reshape/permute (batch 1 folded into channels: no 5-D/6-D tensors, unlike pixel_shuffle).
    Constraints satisfied: Core ML's torch.export frontend has no upsample_bicubic2d; TFLite has no bicubic resize
    (it decomposes into GATHER_ND chains off the delegates); ONNX Runtime's cubic Resize was ~70 % of B0's CPU
    time. Slices, concat, depthwise conv and transposes run fast on every backend and quantize.
    Runs in fp32 and casts back, like the reference layer.
    Wanted by: every format, when chosen (``--upsample conv``: ``bicubic-as-conv``).
    """

    def __init__(self, ref: UpSampleLayer):
        super().__init__()
        if ref.mode != "bicubic" or ref.align_corners or int(ref.factor) != ref.factor:
            raise ValueError("BicubicAsConv replaces integer-factor bicubic resizes with align_corners=False")
        self.factor = int(ref.factor)
        # A plain array, not a buffer: the state dict (official keys) is unchanged, model.half() leaves it fp32, and
        # the per-channel kernel built from it in forward is a trace-time constant (a repeat() of a buffer lowers
        # to an 8-D BROADCAST_TO in TFLite).
        self.taps = bicubic_phase_taps(self.factor).numpy().astype(np.float32)  # (s, 5)

    def _pass(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.factor
        shape = (c * s, 1, 5, 1) if dim == 2 else (c * s, 1, 1, 5)
        kernel = torch.from_numpy(np.tile(self.taps, (c, 1)).reshape(shape)).to(x.device)
        y = F.conv2d(_replicate_pad2(x, dim), kernel, groups=c)  # (b, c*s, h, w)
        y = y.reshape(b * c, s, h, w)
        if dim == 2:  # rows: (bc, s, h, w) -> (bc, h, s, w) -> (b, c, h*s, w)
            return y.permute(0, 2, 1, 3).reshape(b, c, h * s, w)
        return y.permute(0, 2, 3, 1).reshape(b, c, h, w * s)  # columns: (bc, h, w, s) -> (b, c, h, w*s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        y = self._pass(x.float(), 2)
        return self._pass(y, 3).to(x.dtype)


def bicubic_matrix(n: int, scale: int) -> np.ndarray:
    """(n*scale, n) float32 matrix of an exact 1-D x``scale`` bicubic upsample of length ``n`` (PyTorch's
    align_corners=False, A = -0.75): row ``scale*i + p`` holds the phase-``p`` taps of ``bicubic_phase_taps`` at
    inputs i-2..i+2, with indices clamped to the border (PyTorch's edge handling) so those taps add up there."""
    taps = _phase_taps(scale)
    m = np.zeros((n * scale, n), dtype=np.float64)
    for i in range(n):
        for d in range(5):
            m[i * scale : (i + 1) * scale, min(max(i + d - 2, 0), n - 1)] += taps[:, d]
    return m.astype(np.float32)


class BicubicAsMatmul(nn.Module):
    """Replaces ``UpSampleLayer`` in bicubic mode with an integer factor (pattern: the head's bicubic resize).

    Computes ``F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)`` exactly (to float rounding)
    as ``U_h X U_w^T``: two matmuls with constant interpolation matrices (``bicubic_matrix``; border clamping is in
    the matrices, so no padding ops). Both run on a channels-last view: columns first as a batched ``(W, w) @
    (h, w, C)``, then rows as one ``(H, h) @ (h, W*C)``, so channels stay innermost and every reshape is free.
    Constraint satisfied: in TFLite (NHWC inside) the view's permutes cancel against the layout transposes of the
    surrounding convolutions, leaving 2 BATCH_MATMUL + reshapes per resize, where the pad + depthwise-conv form
    (``BicubicAsConv``) needs slices, concats, two depthwise convs and 6 transposes between NHWC and the NCHW
    interleave. All tensors stay rank <= 4 for batch 1. The matrices are trace-time constants (not state-dict
    keys); they depend on the input size, which is static in every export. Runs in fp32 and casts back.
    Wanted by: every format and precision (``bicubic-as-matmul``: ``--upsample matmul``, the default).
    """

    def __init__(self, ref: UpSampleLayer):
        super().__init__()
        if ref.mode != "bicubic" or ref.align_corners or int(ref.factor) != ref.factor:
            raise ValueError("BicubicAsMatmul replaces integer-factor bicubic resizes with align_corners=False")
        self.factor = int(ref.factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        b, c, h, w = x.shape
        s = self.factor
        uh = torch.from_numpy(bicubic_matrix(h, s)).to(x.device)
        uw = torch.from_numpy(bicubic_matrix(w, s)).to(x.device)
        t = x.float().permute(0, 2, 3, 1).reshape(b * h, w, c)
        t = torch.matmul(uw, t).reshape(b, h, w * s * c)  # columns: (W, w) @ (b*h, w, C) -> (b*h, W, C)
        t = torch.matmul(uh, t)  # rows: (H, h) @ (b, h, W*C) -> (b, H, W*C)
        return t.reshape(b, h * s, w * s, c).permute(0, 3, 1, 2).to(x.dtype)
