"""The SegFormer family: the reference model (``model.py``), its deploy rewrites (``rewrites.py``) and
``register()``, which ``edgeseg.models`` calls once to add the model entry, its rewrites and the shared rewrites it
declares (``layernorm-fp32``, opt-in ``gelu-tanh``) to the registries. The head resizes bilinear: no ``--upsample``
choice."""

from edgeseg.models.registry import ModelEntry, register_family
from edgeseg.models.segformer.model import (
    SEGFORMER_CONFIGS,
    DropPath,
    MixVisionTransformer,
    SegFormer,
    SegFormerConfig,
    SegFormerHead,
    SpatialReductionAttention,
    build_segformer,
)
from edgeseg.models.segformer.rewrites import SRADeploy, SRASingleHeadAsBatch2
from edgeseg.rewrite import Rewrite, common

__all__ = [
    "DropPath",
    "SegFormerHead",
    "MixVisionTransformer",
    "SpatialReductionAttention",
    "SegFormer",
    "SegFormerConfig",
    "SEGFORMER_CONFIGS",
    "build_segformer",
]

FAMILY = "segformer"

# One head design for every dataset (the official configs differ only in classes); the official zoo has
# SegFormer-B0 on ADE20K and Cityscapes. CamVid heads have 11 classes.
MODEL = ModelEntry(
    "segformer-b0", FAMILY, ("cityscapes", "ade20k", "camvid"), lambda dataset, n: build_segformer("b0", n)
)

FAMILY_REWRITES = (
    Rewrite(
        "sra-split-kv",
        SpatialReductionAttention,
        SRADeploy,
        "SegFormer attention: kv Linear split (no 5-D permute), fp32 scores/softmax",
        (FAMILY,),
    ),
    Rewrite(  # registered after sra-split-kv: supersedes it where both are wanted
        "sra-single-head-batch2",
        SpatialReductionAttention,
        SRASingleHeadAsBatch2,
        "SegFormer attention as sra-split-kv; single-head queries split into a batch of 2 (TFLite: a "
        "BATCH_MATMUL XNNPACK takes, not a FULLY_CONNECTED with runtime weights)",
        (FAMILY,),
        formats=("tflite",),
    ),
    common.LAYERNORM_FP32.for_family(FAMILY),
    common.LAYERNORM_MATMUL_FP32.for_family(FAMILY),
    common.GELU_TANH.for_family(FAMILY),
    common.GELU_ERFC_RATIONAL.for_family(FAMILY),
)


def register() -> None:
    register_family((MODEL,), FAMILY_REWRITES)
