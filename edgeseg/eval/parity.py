"""Parity of a candidate (an exported artifact) against the PyTorch reference on real images, and, where labels
exist, both sides' mIoU on those images."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgeseg.data.transforms import auto_fit, fit_input, labels_to_source, logits_to_source, to_tensor
from edgeseg.errors import EdgesegError
from edgeseg.eval.evaluate import Predictor
from edgeseg.eval.metrics import ConfusionMatrix


@dataclass
class Parity:
    images: int
    max_abs_diff: float | None  # logits; None for label outputs
    snr_db: float | None  # 10 log10(|ref|^2 / |ref - out|^2) over all logits
    argmax_agreement: float  # fraction of pixels with the same class, at the network input size
    miou_reference: float | None = None  # on the same images, when labels are given
    miou_candidate: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _require_finite(logits: torch.Tensor, who: str, index: int, count: int) -> None:
    """NaN logits would "pass": max(0.0, nan) is 0.0 and the argmax of all-NaN logits is 0 on both sides."""
    bad = int((~torch.isfinite(logits)).sum())
    if bad:
        raise EdgesegError(
            f"parity failed: {who} outputs NaN or infinite logits ({bad:,} of {logits.numel():,} values, parity "
            f"image {index + 1} of {count}): its numerics are broken (overflow, or non-finite weights); the "
            "artifact is not kept"
        )


def compare(
    reference: Predictor,
    candidate: Predictor,
    images: Sequence[np.ndarray],
    size: tuple[int, int],
    candidate_outputs_labels: bool = False,
    labels: Sequence[np.ndarray] | None = None,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> Parity:
    """Both run on the same fitted inputs; the reference yields logits at its stride (8 or 4), upsampled to the input
    size (bilinear, as the deployed argmax does) before comparing labels."""
    max_diff, sig, noise, agree, total = 0.0, 0.0, 0.0, 0, 0
    score = labels is not None and num_classes is not None
    cm_ref = ConfusionMatrix(num_classes, ignore_index) if score else None
    cm_out = ConfusionMatrix(num_classes, ignore_index) if score else None
    for i, image in enumerate(images):
        fit = auto_fit(image.shape[:2], size)  # both sides see the same input
        x = fit_input(to_tensor(image), fit)
        with torch.inference_mode():
            ref = reference(x).float()
            out = candidate(x)
        _require_finite(ref, "the PyTorch reference", i, len(images))
        ref_labels = F.interpolate(ref, size=size, mode="bilinear", align_corners=False).argmax(1)
        if candidate_outputs_labels:
            out_labels = out.long()
        else:
            out = out.float()
            _require_finite(out, "the exported model", i, len(images))
            max_diff = max(max_diff, float((out - ref).abs().max()))
            sig += float((ref.double() ** 2).sum())
            noise += float(((out.double() - ref.double()) ** 2).sum())
            out_labels = F.interpolate(out, size=size, mode="bilinear", align_corners=False).argmax(1)
        agree += int((out_labels == ref_labels).sum())
        total += ref_labels.numel()
        if score:
            target = torch.from_numpy(labels[i])
            cm_ref.update(logits_to_source(ref, fit).argmax(1), target)
            if candidate_outputs_labels:
                cm_out.update(labels_to_source(out_labels, fit), target)
            else:
                cm_out.update(logits_to_source(out, fit).argmax(1), target)
    snr = None if candidate_outputs_labels else (math.inf if noise == 0 else 10 * math.log10(sig / noise))
    return Parity(
        len(images),
        None if candidate_outputs_labels else max_diff,
        snr,
        agree / total,
        cm_ref.result().miou if score else None,
        cm_out.result().miou if score else None,
    )
