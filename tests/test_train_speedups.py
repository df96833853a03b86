"""Training fast paths compute what the plain ops compute (edgeseg.train.speedups)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.registry import create_model
from edgeseg.train.speedups import Float32DepthwiseConv2d, bilinear_matrix, depthwise_in_fp32, upsample_bilinear
from edgeseg.train.trainer import TrainConfig, segmentation_loss


@pytest.mark.parametrize(
    "size_in, size_out",
    [((40, 40), (320, 320)), ((45, 60), (360, 480)), ((7, 9), (5, 4)), ((1, 3), (3, 8)), ((41, 13), (327, 100))],
)
def test_upsample_bilinear_matches_interpolate_forward_and_backward(size_in, size_out):
    torch.manual_seed(0)
    x = torch.randn(2, 11, *size_in).contiguous(memory_format=torch.channels_last)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    expected = F.interpolate(a, size=size_out, mode="bilinear", align_corners=False)
    got = upsample_bilinear(b, size_out)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    got.backward(grad)
    assert torch.allclose(b.grad, a.grad, atol=1e-4, rtol=1e-5)


def test_bilinear_matrix_rows_are_convex_weights():
    m = bilinear_matrix(40, 320)
    assert m.shape == (320, 40)
    assert torch.allclose(m.sum(1), torch.ones(320))
    assert (m >= 0).all() and (m > 0).sum(1).max() <= 2


def test_segmentation_loss_equals_interpolate_then_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 11, 40, 40, requires_grad=True)
    target = torch.randint(0, 12, (2, 320, 320))  # 11 is CamVid's ignore index
    cfg = TrainConfig(model="efficientvit-b0", dataset="camvid", data="", out="", loss="ce")
    loss = segmentation_loss(logits, target, cfg, 11, None)
    (grad,) = torch.autograd.grad(loss, logits)
    up = F.interpolate(logits, size=(320, 320), mode="bilinear", align_corners=False)
    ref = F.cross_entropy(up, target, ignore_index=11)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    assert abs(loss.item() - ref.item()) < 1e-5
    assert torch.allclose(grad, ref_grad, atol=1e-7)


def test_depthwise_in_fp32_swaps_only_depthwise_convs_and_keeps_the_state_dict():
    model, _ = create_model("efficientvit-b0", "camvid")
    keys = list(model.state_dict())
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels]
    assert depthwise and grouped  # B0 has both: depthwise 3x3/5x5 and grouped 1x1 in its attention
    assert depthwise_in_fp32(model) == len(depthwise)
    assert all(type(m) is Float32DepthwiseConv2d for m in depthwise)
    assert all(type(m) is nn.Conv2d for m in grouped)
    assert list(model.state_dict()) == keys


def test_float32_depthwise_conv_computes_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 5, stride=2, padding=2, groups=16)
    x = torch.randn(2, 16, 20, 20)
    plain = conv(x)
    depthwise_in_fp32(conv)
    assert torch.equal(conv(x), plain)  # outside autocast: an ordinary convolution
    xb = x.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(xb)
    assert y.dtype == torch.bfloat16  # hands bf16 on, so what follows stays in bf16
    assert torch.equal(y, F.conv2d(xb.float(), conv.weight, conv.bias, 2, 2, 1, 16).to(torch.bfloat16))
    y.float().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.dtype == torch.float32
