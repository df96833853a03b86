"""Evaluation over a labelled split, shared by ``edgeseg eval``, training and (later) exported artifacts.

Anything that maps a normalised (N, 3, H, W) float tensor to logits (N, C, h, w) can be evaluated: a PyTorch
module, or a runtime session wrapped to the same call. Logits are resized to the label size before argmax.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from edgeseg.data.datasets import DatasetSpec
from edgeseg.data.transforms import InputFit, fit_input, logits_to_source, plan_fit, to_tensor
from edgeseg.eval.metrics import ConfusionMatrix, SegMetrics

Predictor = Callable[[torch.Tensor], torch.Tensor]


def predict_logits(predict: Predictor, image: np.ndarray, fit: InputFit) -> torch.Tensor:
    """Logits (1, C, H, W) at the source image size for one RGB uint8 image."""
    x = fit_input(to_tensor(image), fit)
    with torch.inference_mode():
        logits = predict(x)
    return logits_to_source(logits.float(), fit)


def evaluate_arrays(
    predict: Predictor,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    spec: DatasetSpec,
    fit_mode: str = "pad",
    size: tuple[int, int] | None = None,
    on_step: Callable[[], None] | None = None,
) -> SegMetrics:
    cm = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    for image, label in zip(images, labels):
        fit = plan_fit(image.shape[:2], fit_mode, size)
        pred = predict_logits(predict, image, fit).argmax(1)[0]
        cm.update(pred, torch.from_numpy(label))
        if on_step is not None:
            on_step()
    return cm.result()


def torch_predictor(model: torch.nn.Module, device: torch.device | str = "cpu") -> Predictor:
    model.eval()

    def predict(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device)).cpu()

    return predict


def argmax_labels(logits: torch.Tensor) -> np.ndarray:
    return logits.argmax(1)[0].to(torch.uint8).numpy()

