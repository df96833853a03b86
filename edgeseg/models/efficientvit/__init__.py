"""The EfficientViT-Seg family: the reference model (``model.py``) and its deploy rewrites (``rewrites.py``)."""

from edgeseg.models.efficientvit.model import (
    EFFICIENTVIT_SEG_CONFIGS,
    EfficientViTSeg,
    EfficientViTSegConfig,
    LiteMLA,
    UpSampleLayer,
    build_efficientvit_seg,
)

__all__ = [
    "EfficientViTSeg",
    "EfficientViTSegConfig",
    "LiteMLA",
    "UpSampleLayer",
    "build_efficientvit_seg",
    "EFFICIENTVIT_SEG_CONFIGS",
]
