"""The SegFormer family: the reference model (``model.py``) and its deploy rewrites (``rewrites.py``)."""

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
