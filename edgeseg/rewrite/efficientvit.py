"""Deploy rewrites for EfficientViT-Seg: small module swaps applied in PyTorch, before graph capture, so every
backend benefits. Each replacement shares the reference module's parameters (state-dict keys are unchanged)
and names the pattern it replaces and the backend constraint it satisfies; tests check parity against the
reference module."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.models.efficientvit import LiteMLA, UpSampleLayer


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


class UpSampleFp32(nn.Module):
    """Replaces ``UpSampleLayer`` (pattern: integer-factor resize in the head).

    Resizes in fp32 and casts back to the input dtype, so a half-precision graph stays strongly typed (the
    official layer returns fp32 from an fp16 input, which only works under autocast). ``mode`` may differ from
    the reference: ``bilinear`` for targets without bicubic resize (TFLite); its mIoU cost is measured, not
    assumed. align_corners=False maps to ONNX half_pixel / TFLite half_pixel_centers=True.
    """

    def __init__(self, ref: UpSampleLayer, mode: str | None = None):
        super().__init__()
        self.factor, self.mode, self.align_corners = ref.factor, mode or ref.mode, ref.align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        y = F.interpolate(x.float(), scale_factor=float(self.factor), mode=self.mode,
                          align_corners=self.align_corners)
        return y.to(x.dtype)
