"""The EfficientViT-Seg family: the reference model (``model.py``), its deploy rewrites (``rewrites.py``) and
``register()``, which ``edgeseg.models`` calls once to add one model entry per variant and the rewrites to the
registries.

The head's upsampling is chosen per export (``--upsample``): one rewrite per choice, exact bicubic as two matmuls
by default.
"""

from edgeseg.models.efficientvit.model import (
    EFFICIENTVIT_SEG_CONFIGS,
    EfficientViTSeg,
    EfficientViTSegConfig,
    LiteMLA,
    UpSampleLayer,
    build_efficientvit_seg,
)
from edgeseg.models.efficientvit.rewrites import (
    BicubicAsConv,
    BicubicAsMatmul,
    LiteMLABatched,
    LiteMLAFp32Normaliser,
    LiteMLAOnesMatmulNormaliser,
    UpSampleFp32,
)
from edgeseg.models.registry import ModelEntry, register_family
from edgeseg.rewrite import Rewrite

__all__ = [
    "EfficientViTSeg",
    "EfficientViTSegConfig",
    "LiteMLA",
    "UpSampleLayer",
    "build_efficientvit_seg",
    "EFFICIENTVIT_SEG_CONFIGS",
]

FAMILY = "efficientvit"

# Where a dataset's head comes from: CamVid reuses the Cityscapes head (street scenes, few classes).
_HEAD_FAMILY = {"cityscapes": "cityscapes", "camvid": "cityscapes", "ade20k": "ade20k"}


def _entry(variant: str) -> ModelEntry:
    heads = EFFICIENTVIT_SEG_CONFIGS[variant].heads
    datasets = tuple(d for d, head in _HEAD_FAMILY.items() if head in heads)
    return ModelEntry(
        name=f"efficientvit-{variant}",
        family=FAMILY,
        datasets=datasets,
        build=lambda dataset, n, v=variant: build_efficientvit_seg(v, _HEAD_FAMILY[dataset], n),
    )


FAMILY_REWRITES = (
    Rewrite(
        "attention-fp32-normaliser",
        LiteMLA,
        LiteMLAFp32Normaliser,
        "LiteMLA: pad-free normaliser, fp32 attention core with explicit casts, eps as clamp_min",
        (FAMILY,),
    ),
    Rewrite(
        "attention-normaliser-matmul",
        LiteMLA,
        LiteMLAOnesMatmulNormaliser,
        "LiteMLA as attention-fp32-normaliser, the token sums as matmuls with a ones vector: ONNX mobile EPs lack "
        "ReduceSum",
        (FAMILY,),
        formats=("onnx",),
    ),
    Rewrite(  # registered after attention-fp32-normaliser: supersedes it where both are wanted
        "attention-batched-bmm",
        LiteMLA,
        LiteMLABatched,
        "LiteMLA as attention-fp32-normaliser on 3-D views with bmm (no expand_copy, token sum as a bmm): one "
        "XNNPACK partition per attention block in ExecuTorch",
        (FAMILY,),
        formats=("executorch",),
    ),
    # Head upsampling, one rewrite per --upsample choice. Exact bicubic as two matmuls is the default: faster than
    # the conv form in TFLite (no layout transposes) and ONNX Runtime, same numbers (README "Export").
    Rewrite(
        "bicubic-as-matmul",
        UpSampleLayer,
        BicubicAsMatmul,
        "head bicubic resize as two matmuls with constant interpolation matrices on a channels-last view: exact",
        (FAMILY,),
        upsample="matmul",
    ),
    Rewrite(
        "bicubic-as-conv",
        UpSampleLayer,
        BicubicAsConv,
        "head bicubic resize as pad + fixed depthwise conv + pixel shuffle: exact, fast, every backend",
        (FAMILY,),
        default=False,
        upsample="conv",
    ),
    Rewrite(
        "upsample-fp32",
        UpSampleLayer,
        UpSampleFp32,
        "head resize kept as a Resize op, in fp32, cast back: strongly typed half-precision graphs",
        (FAMILY,),
        default=False,
        upsample="resize",
    ),
    Rewrite(
        "bicubic-to-bilinear",
        UpSampleLayer,
        lambda m: UpSampleFp32(m, mode="bilinear"),
        "head resize bilinear for targets without bicubic (TFLite)",
        (FAMILY,),
        default=False,
        upsample="bilinear",
    ),
)


def register() -> None:
    register_family((_entry(v) for v in EFFICIENTVIT_SEG_CONFIGS), FAMILY_REWRITES)
