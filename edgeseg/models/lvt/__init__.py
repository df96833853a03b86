"""The LVT family: the reference model (``model.py``) and its deploy rewrites (``rewrites.py``)."""

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
