"""Training fast paths compute what the plain ops compute (edgeseg.train.speedups)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_kernel_benchmark_times_every_grouped_conv_the_way_the_trainer_runs_it(tmp_path):
    bench = Path(__file__).resolve().parent.parent / "benchmarks"
    out = tmp_path / "k.json"
    args = ["--models", "efficientvit-b0", "--batch-size", "1", "--crop", "64x64", "--repeats", "1", "--json", str(out)]
    done = subprocess.run([sys.executable, str(bench / "train_kernels.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = json.loads(out.read_text())["results"]
    model, _ = create_model("efficientvit-b0", "camvid")
    grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(result["convs"]) == len(grouped)
    for row in result["convs"]:
        assert row["trainer_runs"] == ("fp32 in bf16 autocast" if row["depthwise"] else "bf16")
        assert set(row["ms"]) == {"bf16", "fp32", "fp32 in bf16 autocast"} and min(row["ms"].values()) > 0
    assert set(result["loss_ms"]) == {"F.interpolate", "upsample_bilinear (matmul)"}
    page = subprocess.run(
        [sys.executable, str(bench / "render_docs.py"), str(out), "--out", str(tmp_path / "k.md")],
        capture_output=True,
        text=True,
    )
    assert page.returncode == 0, page.stderr[-2000:]
    text = (tmp_path / "k.md").read_text()
    assert "### efficientvit-b0" in text and "backbone.stages.0.op_list.0.main.depth_conv.conv" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--crop", "abc"], "is not HxW"),
        (["--crop", "100x100"], "multiples of 32"),
        (["--models", "nope"], "unknown model 'nope'"),
        (["--repeats", "0"], "at least 1"),
    ],
)
def test_kernel_benchmark_bad_input_is_one_error_line(tmp_path, args, message):
    bench = Path(__file__).resolve().parent.parent / "benchmarks"
    out = tmp_path / "k.json"
    done = subprocess.run(
        [sys.executable, str(bench / "train_kernels.py"), *args, "--json", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and message in done.stderr and done.stderr.count("\n") == 1
    assert not out.exists()
