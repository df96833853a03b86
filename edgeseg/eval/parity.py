"""Parity of a candidate (an exported artifact) against the PyTorch reference on real images."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from edgeseg.data.transforms import fit_input, plan_fit, to_tensor
from edgeseg.eval.evaluate import Predictor


@dataclass
class Parity:
    images: int
    max_abs_diff: float | None  # logits; None for label outputs
    snr_db: float | None  # 10 log10(|ref|^2 / |ref - out|^2) over all logits
    argmax_agreement: float  # fraction of pixels with the same class, at the network input size

    def as_dict(self) -> dict:
        return asdict(self)


def compare(reference: Predictor, candidate: Predictor, images: Sequence[np.ndarray], size: tuple[int, int],
            candidate_outputs_labels: bool = False) -> Parity:
    """Both run on the same fitted inputs; the reference yields logits at stride 8, which are upsampled to the input
    size (bilinear, as the deployed argmax does) before comparing labels."""
    max_diff, sig, noise, agree, total = 0.0, 0.0, 0.0, 0, 0
    for image in images:
        # both sides see the same input: padded when the artifact's size is larger than the image, else resized
        fits = image.shape[0] <= size[0] and image.shape[1] <= size[1]
        x = fit_input(to_tensor(image), plan_fit(image.shape[:2], "pad" if fits else "resize", size))
        with torch.inference_mode():
            ref = reference(x).float()
            out = candidate(x)
        ref_labels = F.interpolate(ref, size=size, mode="bilinear", align_corners=False).argmax(1)
        if candidate_outputs_labels:
            labels = out.long()
        else:
            out = out.float()
            max_diff = max(max_diff, float((out - ref).abs().max()))
            sig += float((ref.double() ** 2).sum())
            noise += float(((out.double() - ref.double()) ** 2).sum())
            labels = F.interpolate(out, size=size, mode="bilinear", align_corners=False).argmax(1)
        agree += int((labels == ref_labels).sum())
        total += ref_labels.numel()
    snr = None if candidate_outputs_labels else (math.inf if noise == 0 else 10 * math.log10(sig / noise))
    return Parity(len(images), None if candidate_outputs_labels else max_diff, snr, agree / total)
