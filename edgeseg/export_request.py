"""The knobs of one export, each default written once: ``edgeseg export``'s options, a check config's ``export:``
block, a sweep matrix and bench all build exports from this record."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeseg.models.registry import DEFAULT_UPSAMPLE

# INT8 budget: mIoU points lost vs fp32 on HOLDOUT_IMAGES train images that calibration did not use.
DEFAULT_MAX_MIOU_DROP = 0.5
HOLDOUT_IMAGES = 32  # 16 was too noisy to hold B1 tflite-int8 to 0.5: it said 0.48 where val said 0.51
# ``--weights random``: an untrained, seeded initialisation (graph, size, lint and latency work; no mIoU)
RANDOM_WEIGHTS = "random"
RANDOM_SEED = 0
# ONNX opsets an export may ask for: 17 is the oldest the deploy graphs need; 23 is torch 2.13's exporter's
# newest (torch.onnx._constants.ONNX_MAX_OPSET; tests check the two agree).
MIN_OPSET, MAX_OPSET = 17, 23


class ExportOptions(BaseModel):
    """How an artifact is built (besides model, weights, target and size). ``upsample``: the head's upsampling
    where the model has a choice (EfficientViT: ``matmul`` exact bicubic as two matmuls, ``conv``, ``resize``,
    ``bilinear``); ``max_miou_drop``: the INT8 budget in mIoU points on the held-out slice (None: no search)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    upsample: str = DEFAULT_UPSAMPLE
    opset: int = Field(18, ge=MIN_OPSET, le=MAX_OPSET)
    with_argmax: bool = False
    calib_size: int = Field(64, ge=1)
    calib_method: str = "percentile"
    max_miou_drop: float | None = Field(DEFAULT_MAX_MIOU_DROP, ge=0, le=100)
    # what the INT8 budget judges: the mIoU drop ("mean") or the largest per-class IoU drop ("worst-class")
    int8_objective: Literal["mean", "worst-class", "agreement"] = "mean"


EXPORT_DEFAULTS = ExportOptions()
PARITY_IMAGES = 20  # parity images of `edgeseg export` (the first N of the parity split)
# free space an export wants in its --out filesystem: the fp32 weights this many times over (fp32 + converted
# copies, probes of the int8 search) plus a fixed allowance for graph structure and reports
EXPORT_SPACE_FACTOR, EXPORT_SPACE_EXTRA = 3, 16 * 2**20
