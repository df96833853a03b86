"""The LVT family: the reference model (``model.py``), its deploy rewrites (``rewrites.py``) and ``register()``,
which ``edgeseg.models`` calls once to add the model entry, its rewrites and the shared rewrites it declares
(``layernorm-fp32``, opt-in ``gelu-tanh``) to the registries. The head is SegFormer's and resizes bilinear: no
``--upsample`` choice."""

from edgeseg.models.lvt.model import (
    CSA,
    LVT_CONFIGS,
    RASA,
    DilatedSharedDWConv,
    LiteVisionTransformer,
    LVTConfig,
    LVTSeg,
    build_lvt_seg,
)
from edgeseg.models.lvt.rewrites import CSADeploy, RASADeploy, RASAWeightsPerUse
from edgeseg.models.registry import ModelEntry, register_family
from edgeseg.rewrite import Rewrite, common

__all__ = [
    "CSA",
    "RASA",
    "DilatedSharedDWConv",
    "LiteVisionTransformer",
    "LVTSeg",
    "LVTConfig",
    "LVT_CONFIGS",
    "build_lvt_seg",
]

FAMILY = "lvt"

# One head design for every dataset (the official configs differ only in classes); the official zoo has LVT on
# ADE20K. CamVid heads have 11 classes.
MODEL = ModelEntry("lvt", FAMILY, ("ade20k", "camvid"), lambda dataset, n: build_lvt_seg(n))

FAMILY_REWRITES = (
    Rewrite(
        "csa-no-unfold",
        CSA,
        CSADeploy,
        "LVT CSA: unfold as pad + 9 strided slices, fold as parity planes + 4-D interleave; rank <= 4, fp32 core",
        (FAMILY,),
    ),
    Rewrite(
        "rasa-split-kv",
        RASA,
        RASADeploy,
        "LVT RASA: kv Linear split (no 5-D permute), recursion written out, fp32 scores/softmax",
        (FAMILY,),
    ),
    Rewrite(  # registered after rasa-split-kv: supersedes it where both are wanted
        "rasa-weights-per-use",
        RASA,
        RASAWeightsPerUse,
        "LVT RASA as rasa-split-kv, each weight use (dilation, recursion step) its own copy: PT2E int8 "
        "quantizes every conv/linear (litert-torch converts it)",
        (FAMILY,),
        formats=("tflite",),
        precisions=("int8",),
    ),
    common.LAYERNORM_FP32.for_family(FAMILY),
    common.LAYERNORM_MATMUL_FP32.for_family(FAMILY),
    common.GELU_TANH.for_family(FAMILY),
    common.GELU_ERFC_RATIONAL.for_family(FAMILY),
)


def register() -> None:
    register_family((MODEL,), FAMILY_REWRITES)
