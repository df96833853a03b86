"""ExecuTorch's pre-partition graph passes (``edgeseg/backends/executorch/passes.py``) on tiny modules: each pattern
is lowered to XNNPACK, the op it targets is gone from what the portable kernels run, and the program agrees with
PyTorch (fp32: max abs diff below 1e-5 of the largest output)."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

pytest.importorskip("executorch", reason="executorch is not installed: pip install 'edgeseg[executorch]'")

from edgeseg.backends.executorch.export import export_executorch, lower  # noqa: E402
from edgeseg.backends.executorch.passes import _layer_norm_as_xnnpack_ops  # noqa: E402
from edgeseg.backends.executorch.runtime import ExecuTorchModel  # noqa: E402
from edgeseg.errors import EdgesegError  # noqa: E402
from edgeseg.rewrite.common import HardswishAsClamp  # noqa: E402


def _lowered(module, example, tmp_path, precision="fp32", calib=None):
    """(delegation summary, max abs diff against PyTorch relative to the largest output (at least 1), outputs of
    both) on a random input, of ``module`` lowered to XNNPACK."""
    path = tmp_path / f"{precision}.pte"
    info = export_executorch(module.eval(), example, path, "xnnpack", precision, calib)
    x = torch.randn_like(example) * 3
    with torch.no_grad():
        ref = module(x)
    out = ExecuTorchModel(path, threads=1)(x)
    return info["delegation"], float((out - ref).abs().max()) / max(1.0, float(ref.abs().max())), out, ref


class ConstantsInForward(nn.Module):
    """``torch.full`` / ``torch.ones`` written in a forward (HardSwish's 3 and 1/6, a token sum with a ones
    vector): ``aten.full`` ops in the exported program."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = HardswishAsClamp()

    def forward(self, x):
        y = self.act(self.conv(x))  # (1, 8, H, W)
        tokens = y.flatten(2)  # (1, 8, N)
        sums = torch.bmm(tokens, torch.ones(1, tokens.shape[2], 1))  # (1, 8, 1)
        return y * sums.unsqueeze(-1) * 1e-2


def test_constants_written_in_forward_become_program_constants(tmp_path):
    torch.manual_seed(0)
    module = ConstantsInForward()
    summary, diff, _, _ = _lowered(module, torch.zeros(1, 3, 8, 12), tmp_path)
    assert "aten.full" not in summary["non_delegated_ops"], summary
    assert summary["graph_passes"]["fold:aten.full"] >= 2
    assert summary["partitions"] == 1 and not summary["non_delegated_ops"]
    assert diff < 1e-5


def test_int8_constants_are_folded_to_int8_constants(tmp_path):
    """PT2E quantizes HardSwish's constants (``full -> quantize -> dequantize -> add``): the quantize of the
    constant is folded with it, the dequantize stays for XNNPACK's int8 pattern."""
    torch.manual_seed(0)

    class ConvHardswish(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act, self.head = nn.Conv2d(3, 8, 3, padding=1), HardswishAsClamp(), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.head(self.act(self.conv(x)))

    module = ConvHardswish().eval()
    calib = [torch.randn(1, 3, 8, 12) * 2 for _ in range(4)]
    summary, _, out, ref = _lowered(module, torch.zeros(1, 3, 8, 12), tmp_path, "int8", calib)
    assert summary["graph_passes"]["fold:aten.full"] == 2
    assert summary["graph_passes"]["fold:quantized_decomposed.quantize_per_tensor"] == 2
    assert not summary["non_delegated_ops"] and summary["partitions"] == 1
    snr = 10 * torch.log10((ref**2).sum() / ((out - ref) ** 2).sum())
    assert snr > 15


class ConstantBroadcastMatmul(nn.Module):
    """EfficientViT's ``bicubic-as-matmul`` pattern: a 2-D constant times a batch of matrices on each side."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.register_buffer("left", torch.randn(10, 6, generator=g), persistent=False)
        self.register_buffer("right", torch.randn(4, 7, generator=g), persistent=False)
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        t = self.conv(x).permute(0, 2, 3, 1).reshape(5, 6, 4)  # (b*h, w, c)
        t = torch.matmul(self.left, t)  # (10, 6) @ (5, 6, 4): expand_copy + bmm
        t = torch.matmul(t, self.right)  # (5, 10, 4) @ (4, 7)
        u = torch.matmul(self.left[:5, :5], t.reshape(1, 5, 70))  # batch 1: (5, 5) @ (1, 5, 70)
        return u.reshape(1, 5, 10, 7).permute(0, 3, 1, 2)


def test_constant_broadcast_matmuls_become_mm_with_a_weight(tmp_path):
    torch.manual_seed(0)
    summary, diff, _, _ = _lowered(ConstantBroadcastMatmul(), torch.zeros(1, 3, 5, 6), tmp_path)
    assert "aten.expand_copy" not in summary["non_delegated_ops"], summary
    assert summary["graph_passes"]["constant_bmm_as_mm"] >= 2
    assert summary["partitions"] == 1 and not summary["non_delegated_ops"]
    assert diff < 1e-5


def test_noop_expands_of_4d_matmuls_are_dropped(tmp_path):
    class Attention4d(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Conv2d(8, 24, 1)

        def forward(self, x):
            q, k, v = self.qkv(x).reshape(1, 3, 2, 4, 24).unbind(1)  # (1, heads, d, N) each
            att = torch.softmax(q.transpose(-1, -2) @ k, dim=-1)  # 4-D matmul
            return (v @ att).reshape(1, 8, 4, 6)

    torch.manual_seed(0)
    summary, diff, _, _ = _lowered(Attention4d(), torch.zeros(1, 8, 4, 6), tmp_path)
    assert "aten.expand_copy" not in summary["non_delegated_ops"], summary
    assert summary["graph_passes"]["drop_noop_expands"] >= 2
    assert diff < 1e-5


def test_layer_norm_decomposition_equals_f_layer_norm():
    torch.manual_seed(0)
    x = torch.randn(2, 50, 64) * 30 + 5  # a large offset: the two-pass variance keeps it exact
    weight, bias = torch.randn(64), torch.randn(64)
    out, mean, rstd = _layer_norm_as_xnnpack_ops(x, [64], weight, bias, 1e-6)
    ref, ref_mean, ref_rstd = torch.ops.aten.native_layer_norm(x, [64], weight, bias, 1e-6)
    assert (out - ref).abs().max() < 1e-5
    assert (mean - ref_mean).abs().max() < 1e-4 and ((rstd - ref_rstd).abs() / ref_rstd).max() < 1e-5


def test_layer_norm_is_delegated_to_xnnpack(tmp_path):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.norm = nn.Linear(16, 16), nn.LayerNorm(16)

        def forward(self, x):
            tokens = x.flatten(2).transpose(1, 2)  # (1, N, C)
            return F.gelu(self.norm(self.fc(tokens)))

    torch.manual_seed(0)
    block = Block()
    nn.init.normal_(block.norm.weight)
    nn.init.normal_(block.norm.bias)
    summary, diff, _, _ = _lowered(block, torch.zeros(1, 16, 4, 6), tmp_path)
    assert summary["graph_passes"]["decompose_layer_norm"] == 1
    assert "aten.native_layer_norm" not in summary["non_delegated_ops"], summary
    assert summary["partitions"] == 1 and not summary["non_delegated_ops"]
    assert diff < 1e-5
    # other delegates keep the LayerNorm op (Core ML and Vulkan have one)
    try:
        _, vulkan = lower(block.eval(), torch.zeros(1, 16, 4, 6), "vulkan")
    except EdgesegError as exc:
        pytest.skip(f"the executorch wheel cannot lower vulkan here: {exc}")
    assert "decompose_layer_norm" not in vulkan["graph_passes"]
