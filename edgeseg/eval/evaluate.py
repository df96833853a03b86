"""Evaluation over a labelled split, shared by ``edgeseg eval``, training and (later) exported artifacts.

Anything that maps a normalised (N, 3, H, W) float tensor to logits (N, C, h, w) can be evaluated: a PyTorch
module, or a runtime session wrapped to the same call. Logits are resized to the label size before argmax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from edgeseg.data.datasets import DatasetSpec
from edgeseg.data.transforms import (
    InputFit,
    auto_fit,
    fit_input,
    labels_to_source,
    logits_to_source,
    plan_fit,
    to_tensor,
)
from edgeseg.eval.metrics import ConfusionMatrix, SegMetrics
from edgeseg.eval.stats import ImageScores

Predictor = Callable[[torch.Tensor], torch.Tensor]


def predict_logits(predict: Predictor, image: np.ndarray, fit: InputFit) -> torch.Tensor:
    """Logits (1, C, H, W) at the source image size for one RGB uint8 image."""
    x = fit_input(to_tensor(image), fit)
    with torch.inference_mode():
        logits = predict(x)
    return logits_to_source(logits.float(), fit)


def predict_label_map(
    predict: Predictor, image: np.ndarray, fit: InputFit, outputs_labels: bool = False
) -> torch.Tensor:
    """(H, W) class labels at the source image size, from a logits model or a labels (in-graph argmax) artifact."""
    if not outputs_labels:
        return predict_logits(predict, image, fit).argmax(1)[0]
    with torch.inference_mode():
        labels = predict(fit_input(to_tensor(image), fit)).long()
    return labels_to_source(labels, fit)[0]


def plan_for(image: np.ndarray, fit_mode: str | None, size: tuple[int, int] | None) -> InputFit:
    """``fit_mode`` None means a fixed-size artifact: pad when the image fits, else resize."""
    if fit_mode is None and size is not None:
        return auto_fit(image.shape[:2], size)
    return plan_fit(image.shape[:2], fit_mode or "pad", size)


def evaluate_arrays(
    predict: Predictor,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    spec: DatasetSpec,
    fit_mode: str | None = "pad",
    size: tuple[int, int] | None = None,
    on_step: Callable[[], None] | None = None,
    outputs_labels: bool = False,
    scores: ImageScores | None = None,
) -> SegMetrics:
    """mIoU over the images; with ``scores``, also each image's confusion matrix and boundary counts appended to it
    (what ``edgeseg.eval.stats`` resamples for intervals and paired comparisons)."""
    cm = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    for image, label in zip(images, labels):
        pred = predict_label_map(predict, image, plan_for(image, fit_mode, size), outputs_labels)
        if scores is None:
            cm.update(pred, torch.from_numpy(label))
        else:
            one = ConfusionMatrix(spec.num_classes, spec.ignore_index)
            one.update(pred, torch.from_numpy(label))
            cm.merge(one)
            scores.add(one.matrix, pred.numpy(), label)
        if on_step is not None:
            on_step()
    return cm.result()


def torch_predictor(model: torch.nn.Module, device: torch.device | str = "cpu") -> Predictor:
    model.eval()

    def predict(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device)).cpu()

    return predict
