"""The rewrite registry: named module swaps applied to a copy of a reference model before export.

Like MMDeploy's rewriters, but explicit: each rewrite names the module class it replaces and a factory for the
replacement; the replacement's docstring states the pattern and the backend constraint. Targets list the
rewrites they need (``edgeseg.targets``); a rewrite names the model families it is for, and an export applies the
target's rewrites that fit the model's family (``rewrites_for``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.errors import EdgesegError
from edgeseg.models.efficientvit.model import LiteMLA, UpSampleLayer
from edgeseg.models.efficientvit.rewrites import (
    BicubicAsConv,
    BicubicAsMatmul,
    LiteMLAFp32Normaliser,
    UpSampleFp32,
)
from edgeseg.models.lvt.model import CSA, RASA
from edgeseg.models.lvt.rewrites import CSADeploy, RASADeploy, RASAWeightsPerUse
from edgeseg.models.segformer.model import SpatialReductionAttention
from edgeseg.models.segformer.rewrites import SRADeploy, SRASingleHeadAsBatch2
from edgeseg.rewrite.common import GeluTanh, HardswishAsClamp, LayerNormFp32

_TRANSFORMERS = ("lvt", "segformer")


@dataclass(frozen=True)
class Rewrite:
    name: str
    pattern: type[nn.Module]
    replace: Callable[[nn.Module], nn.Module]
    summary: str
    families: tuple[str, ...] = ()  # model families (registry ``family``) it is for; empty: any model

    def fits(self, family: str) -> bool:
        return not self.families or family in self.families


REWRITES: dict[str, Rewrite] = {
    r.name: r
    for r in (
        Rewrite(
            "attention-fp32-normaliser",
            LiteMLA,
            LiteMLAFp32Normaliser,
            "LiteMLA: pad-free normaliser, fp32 attention core with explicit casts, eps as clamp_min",
            ("efficientvit",),
        ),
        Rewrite(
            "bicubic-as-conv",
            UpSampleLayer,
            BicubicAsConv,
            "head bicubic resize as pad + fixed depthwise conv + pixel shuffle: exact, fast, every backend",
            ("efficientvit",),
        ),
        Rewrite(
            "bicubic-as-matmul",
            UpSampleLayer,
            BicubicAsMatmul,
            "head bicubic resize as two matmuls with constant interpolation matrices on a channels-last view: exact",
            ("efficientvit",),
        ),
        Rewrite(
            "upsample-fp32",
            UpSampleLayer,
            UpSampleFp32,
            "head resize kept as a Resize op, in fp32, cast back: strongly typed half-precision graphs",
            ("efficientvit",),
        ),
        Rewrite(
            "bicubic-to-bilinear",
            UpSampleLayer,
            lambda m: UpSampleFp32(m, mode="bilinear"),
            "head resize bilinear for targets without bicubic (TFLite)",
            ("efficientvit",),
        ),
        Rewrite(
            "hardswish-as-clamp",
            nn.Hardswish,
            HardswishAsClamp,
            "Hardswish as add/clamp/mul: XNNPACK has no int8 HARD_SWISH (keeps int8 TFLite in one partition)",
        ),
        Rewrite(
            "csa-no-unfold",
            CSA,
            CSADeploy,
            "LVT CSA: unfold as pad + 9 strided slices, fold as parity planes + 4-D interleave; rank <= 4, fp32 core",
            ("lvt",),
        ),
        Rewrite(
            "rasa-split-kv",
            RASA,
            RASADeploy,
            "LVT RASA: kv Linear split (no 5-D permute), recursion written out, fp32 scores/softmax",
            ("lvt",),
        ),
        Rewrite(
            "rasa-weights-per-use",
            RASA,
            RASAWeightsPerUse,
            "LVT RASA as rasa-split-kv, each weight use (dilation, recursion step) its own copy: PT2E int8 "
            "quantizes every conv/linear (litert-torch converts it)",
            ("lvt",),
        ),
        Rewrite(
            "sra-split-kv",
            SpatialReductionAttention,
            SRADeploy,
            "SegFormer attention: kv Linear split (no 5-D permute), fp32 scores/softmax",
            ("segformer",),
        ),
        Rewrite(
            "sra-single-head-batch2",
            SpatialReductionAttention,
            SRASingleHeadAsBatch2,
            "SegFormer attention as sra-split-kv; single-head queries split into a batch of 2 (TFLite: a "
            "BATCH_MATMUL XNNPACK takes, not a FULLY_CONNECTED with runtime weights)",
            ("segformer",),
        ),
        Rewrite(
            "layernorm-fp32",
            nn.LayerNorm,
            LayerNormFp32,
            "LayerNorm as one LayerNormalization computed in fp32 (casts only in half-precision graphs)",
            _TRANSFORMERS,
        ),
        Rewrite(
            "gelu-tanh",
            nn.GELU,
            GeluTanh,
            "GELU erf -> tanh approximation, for kernels without erf (not applied by default)",
            _TRANSFORMERS,
        ),
    )
}


def rewrites_for(names: list[str] | tuple[str, ...], family: str) -> tuple[str, ...]:
    """The rewrites among ``names`` that are for models of ``family`` (a target lists them for every family)."""
    _check_names(names)
    return tuple(n for n in names if REWRITES[n].fits(family))


def _check_names(names) -> None:
    unknown = [n for n in names if n not in REWRITES]
    if unknown:
        raise EdgesegError(f"unknown rewrite(s) {', '.join(unknown)}; valid: {', '.join(REWRITES)}")


def apply_rewrites(model: nn.Module, names: list[str] | tuple[str, ...]) -> tuple[nn.Module, dict[str, int]]:
    """A deep copy of ``model`` with each named rewrite applied; returns it and the count of swaps per rewrite.

    Later rewrites of the same pattern win (``bicubic-to-bilinear`` after ``upsample-fp32``). A replacement's own
    children are visited too, so a rewrite of an inner module (``layernorm-fp32``) reaches the modules a replaced
    attention block holds.
    """
    _check_names(names)
    model = copy.deepcopy(model)
    chosen: dict[type, Rewrite] = {}
    for name in names:
        chosen[REWRITES[name].pattern] = REWRITES[name]
    counts = {r.name: 0 for r in chosen.values()}

    def swap(parent: nn.Module) -> None:
        for child_name, child in list(parent.named_children()):
            rewrite = chosen.get(type(child))
            if rewrite is not None:
                child = rewrite.replace(child)
                setattr(parent, child_name, child)
                counts[rewrite.name] += 1
            swap(child)

    swap(model)
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
