"""Confusion-matrix segmentation metrics: per-class IoU, mIoU, pixel accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


class ConfusionMatrix:
    """Accumulates a ``num_classes x num_classes`` matrix, rows = ground truth, columns = prediction.

    Pixels whose label equals ``ignore_index`` (or lies outside 0..num_classes-1) are not counted.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred, target) -> None:
        pred = torch.as_tensor(pred).reshape(-1).long()
        target = torch.as_tensor(target).reshape(-1).long()
        if pred.shape != target.shape:
            raise ValueError(f"prediction and label sizes differ: {pred.numel()} vs {target.numel()} pixels")
        keep = (target >= 0) & (target < self.num_classes)
        if self.ignore_index is not None:
            keep &= target != self.ignore_index
        idx = target[keep] * self.num_classes + pred[keep].clamp(0, self.num_classes - 1)
        counts = torch.bincount(idx, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes).cpu().numpy()

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix

    def result(self) -> SegMetrics:
        return SegMetrics.from_matrix(self.matrix)


@dataclass
class SegMetrics:
    iou: list[float | None]  # per class; None where the class is absent from labels and predictions
    miou: float
    pixel_accuracy: float
    pixels: int

    @staticmethod
    def from_matrix(m: np.ndarray) -> SegMetrics:
        tp = np.diag(m).astype(np.float64)
        gt = m.sum(axis=1).astype(np.float64)
        pr = m.sum(axis=0).astype(np.float64)
        union = gt + pr - tp
        iou = [float(t / u) if u > 0 else None for t, u in zip(tp, union)]
        present = [v for v in iou if v is not None]
        total = float(m.sum())
        return SegMetrics(
            iou=iou,
            miou=float(np.mean(present)) if present else 0.0,
            pixel_accuracy=float(tp.sum() / total) if total else 0.0,
            pixels=int(total),
        )

    def as_dict(self, classes: tuple[str, ...] | list[str]) -> dict:
        return {
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "pixels": self.pixels,
            "iou": {name: v for name, v in zip(classes, self.iou)},
        }
