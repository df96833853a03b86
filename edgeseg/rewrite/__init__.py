"""The rewrite registry: named module swaps applied to a copy of a reference model before export.

Like MMDeploy's rewriters, but explicit: each rewrite names the module class it replaces and a factory for the
replacement; the replacement's docstring states the pattern and the backend constraint. Targets list the
rewrites they need (``edgeseg.targets``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.errors import EdgesegError
from edgeseg.models.efficientvit import LiteMLA, UpSampleLayer
from edgeseg.rewrite.efficientvit import BicubicAsConv, HardswishAsClamp, LiteMLAFp32Normaliser, UpSampleFp32


@dataclass(frozen=True)
class Rewrite:
    name: str
    pattern: type[nn.Module]
    replace: Callable[[nn.Module], nn.Module]
    summary: str


REWRITES: dict[str, Rewrite] = {
    r.name: r
    for r in (
        Rewrite(
            "attention-fp32-normaliser",
            LiteMLA,
            LiteMLAFp32Normaliser,
            "LiteMLA: pad-free normaliser, fp32 attention core with explicit casts, eps as clamp_min",
        ),
        Rewrite(
            "bicubic-as-conv",
            UpSampleLayer,
            BicubicAsConv,
            "head bicubic resize as pad + fixed depthwise conv + pixel shuffle: exact, fast, every backend",
        ),
        Rewrite(
            "upsample-fp32",
            UpSampleLayer,
            UpSampleFp32,
            "head resize kept as a Resize op, in fp32, cast back: strongly typed half-precision graphs",
        ),
        Rewrite(
            "bicubic-to-bilinear",
            UpSampleLayer,
            lambda m: UpSampleFp32(m, mode="bilinear"),
            "head resize bilinear for targets without bicubic (TFLite)",
        ),
        Rewrite(
            "hardswish-as-clamp",
            nn.Hardswish,
            HardswishAsClamp,
            "Hardswish as add/clamp/mul: XNNPACK has no int8 HARD_SWISH (keeps int8 TFLite in one partition)",
        ),
    )
}


def apply_rewrites(model: nn.Module, names: list[str] | tuple[str, ...]) -> tuple[nn.Module, dict[str, int]]:
    """A deep copy of ``model`` with each named rewrite applied; returns it and the count of swaps per rewrite.

    Later rewrites of the same pattern win (``bicubic-to-bilinear`` after ``upsample-fp32``).
    """
    unknown = [n for n in names if n not in REWRITES]
    if unknown:
        raise EdgesegError(f"unknown rewrite(s) {', '.join(unknown)}; valid: {', '.join(REWRITES)}")
    model = copy.deepcopy(model)
    chosen: dict[type, Rewrite] = {}
    for name in names:
        chosen[REWRITES[name].pattern] = REWRITES[name]
    counts = {r.name: 0 for r in chosen.values()}
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            rewrite = chosen.get(type(child))
            if rewrite is not None:
                setattr(parent, child_name, rewrite.replace(child))
                counts[rewrite.name] += 1
    return model, counts


class DeployWrapper(nn.Module):
    """The graph an artifact holds: fp32 image in, logits (or labels) out.

    ``dtype`` fp16 casts the input to half at the entry and the output back to fp32 (apps feed fp32 buffers).
    ``with_argmax`` upsamples logits to the input size (bilinear, align_corners=False) and returns int32 class
    labels, which is what an app on a device wants.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32, with_argmax: bool = False):
        super().__init__()
        self.model, self.dtype, self.with_argmax = model, dtype, with_argmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x.to(self.dtype)).float()
        if not self.with_argmax:
            return logits
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits.argmax(dim=1).to(torch.int32)
