"""Statistics for decisions: how sure a figure is, and whether two figures differ.

- ``bootstrap_iou``: 95 % intervals of mIoU and of each class's IoU by resampling *images* (the unit that varies
  between data sets), from per-image counts (``ImageScores``: confusion matrices and boundary counts). The
  resampling is vectorised: a resample's summed counts are a (resamples x images) weight matrix times the
  per-image counts, so 1000 resamples of 101 images take milliseconds.
- ``paired_difference``: two artifacts run on the same images, resampled with the same indices, so the image
  difficulty that both share cancels; the verdict is "tie" unless the difference's interval excludes zero *and*
  the difference is larger than a practical margin (0.1 mIoU points by default: fp16 rounding moves a handful of
  pixels the same way on every image, which is real but not a difference anyone ships on).
- ``boundary_counts``: Boundary IoU (Cheng et al., CVPR 2021) per class: IoU restricted to the pixels within ``d``
  of each mask's contour, ``d`` = 2 % of the image diagonal (their default), the contour of the image frame
  included. Quantization and resize errors sit on edges and thin classes (pole, sign), where mIoU barely moves.
- ``median_ci95``: the latency median's distribution-free interval (order statistics); ``bench.stats`` times with
  it. ``load_state`` / ``load_warning``: the machine's load beside every timing.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

RESAMPLES = 1000
SEED = 0
# Below this many images a bootstrap interval is too coarse to separate artifacts: say so instead of guessing.
MIN_IMAGES = 20
# mIoU difference (fraction, 0.001 = 0.1 points) below which two artifacts are a tie even when the difference is
# consistent across images.
TIE_MARGIN = 0.001
BOUNDARY_DILATION = 0.02  # of the image diagonal (Boundary IoU's default)


# ------------------------------------------------------------------------------------------------ latency, load


def median_ci95(sorted_ms: Sequence[float]) -> tuple[float, float]:
    """95 % confidence interval of the median from order statistics (binomial, normal approximation): ranks
    n/2 -+ 1.96 sqrt(n)/2, clamped to the sample."""
    n = len(sorted_ms)
    half = 1.96 * math.sqrt(n) / 2
    lo = max(1, math.floor(n / 2 - half))
    hi = min(n, math.ceil(1 + n / 2 + half))
    return float(sorted_ms[lo - 1]), float(sorted_ms[hi - 1])


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_state() -> dict:
    """The 1-minute load average and the cores this process may use, recorded beside a timing."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"loadavg_1min": load, "cores": usable_cores()}


def load_warning(load_1min: float | None, cores: int | None) -> str | None:
    """A warning when the 1-minute load exceeded the cores: other work competed for them, so times are high and
    spread (compare artifacts timed side by side, or time again on a quiet machine)."""
    if load_1min is None or not cores or load_1min <= cores:
        return None
    return (
        f"machine under load while timing: 1-minute load {load_1min:.1f} on {cores} cores; latencies are inflated "
        "and noisy, compare ratios of artifacts timed side by side or time again on a quiet machine"
    )


# ------------------------------------------------------------------------------------------ per-image counts


def _running(a: np.ndarray, w: int, axis: int, op, fill) -> np.ndarray:
    """``op`` (np.minimum / np.maximum) over every window of ``w`` along ``axis`` (output length n - w + 1), in
    linear time whatever ``w`` (van Herk / Gil-Werman: per block of ``w``, a prefix and a suffix scan; a window
    spans at most two blocks)."""
    a = np.ascontiguousarray(np.moveaxis(a, axis, -1))
    n = a.shape[-1]
    m = -(-n // w) * w
    padded = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, m - n)], constant_values=fill)
    blocks = padded.reshape(*a.shape[:-1], m // w, w)
    prefix = op.accumulate(blocks, axis=-1).reshape(*a.shape[:-1], m)
    suffix = np.flip(op.accumulate(np.flip(blocks, -1), axis=-1), -1).reshape(*a.shape[:-1], m)
    return np.moveaxis(op(suffix[..., : n - w + 1], prefix[..., w - 1 : n]), -1, axis)


def _window_extremes(a: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``a`` over a (2r+1)^2 square window (separable), padding with values outside the labels'
    range so the frame of the image counts as a contour (Boundary IoU pads its masks with zeros)."""
    w, big = 2 * radius + 1, np.iinfo(a.dtype).max
    lo = np.pad(a, radius, constant_values=-1)
    hi = np.pad(a, radius, constant_values=big)
    lo = _running(_running(lo, w, 0, np.minimum, big), w, 1, np.minimum, big)
    hi = _running(_running(hi, w, 0, np.maximum, -1), w, 1, np.maximum, -1)
    return lo, hi


def contour_band(labels: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` (chessboard distance, as repeated 3x3 erosion) of another label or the frame: the
    union over classes of ``mask - erode(mask, radius)``."""
    a = labels.astype(np.int16 if labels.max(initial=0) < 32767 else np.int32)
    lo, hi = _window_extremes(a, radius)
    return (lo != a) | (hi != a)


def boundary_radius(shape: tuple[int, int], dilation: float = BOUNDARY_DILATION) -> int:
    return max(1, round(dilation * math.hypot(*shape)))


def boundary_counts(
    pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int | None, dilation: float = BOUNDARY_DILATION
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, (intersection, union) pixel counts of the contour bands of label and prediction (Boundary IoU).
    Ignored and out-of-range label pixels are left out."""
    pred, label = np.asarray(pred), np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f"prediction and label sizes differ: {pred.shape} vs {label.shape}")
    r = boundary_radius(label.shape, dilation)
    band_g, band_p = contour_band(label, r), contour_band(pred, r)
    keep = (label >= 0) & (label < num_classes)
    if ignore_index is not None:
        keep &= label != ignore_index
    pred_ok = (pred >= 0) & (pred < num_classes)
    g = np.bincount(label[keep & band_g].ravel(), minlength=num_classes)[:num_classes]
    p = np.bincount(pred[keep & band_p & pred_ok].ravel(), minlength=num_classes)[:num_classes]
    both = keep & band_g & band_p & (label == pred)
    inter = np.bincount(label[both].ravel(), minlength=num_classes)[:num_classes]
    return inter.astype(np.int64), (g + p - inter).astype(np.int64)


@dataclass
class ImageScores:
    """Per-image counts of one artifact (or model) over a split, in image order: the confusion matrix (rows: label,
    columns: prediction) and the boundary intersection/union per class. What the intervals resample."""

    num_classes: int
    ignore_index: int | None = None
    boundary: bool = True
    names: list[str] = field(default_factory=list)
    confusions: list[np.ndarray] = field(default_factory=list)
    boundary_inter: list[np.ndarray] = field(default_factory=list)
    boundary_union: list[np.ndarray] = field(default_factory=list)

    def add(self, confusion: np.ndarray, pred: np.ndarray, label: np.ndarray, name: str = "") -> None:
        self.confusions.append(np.asarray(confusion, dtype=np.int64))
        self.names.append(name)
        if self.boundary:
            inter, union = boundary_counts(pred, label, self.num_classes, self.ignore_index)
            self.boundary_inter.append(inter)
            self.boundary_union.append(union)

    def __len__(self) -> int:
        return len(self.confusions)

    def iou_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(intersection, union), each (images, classes), of the region IoU."""
        cm = np.stack(self.confusions)
        tp = np.diagonal(cm, axis1=1, axis2=2)
        return tp, cm.sum(axis=2) + cm.sum(axis=1) - tp

    def boundary_iou_counts(self) -> tuple[np.ndarray, np.ndarray] | None:
        if not self.boundary_inter:
            return None
        return np.stack(self.boundary_inter), np.stack(self.boundary_union)


# ------------------------------------------------------------------------------------------------- intervals


def resample_weights(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, n) counts: how often each image is drawn in each bootstrap resample (with replacement)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    w = np.zeros((resamples, n), dtype=np.float64)
    np.add.at(w, (np.arange(resamples)[:, None], idx), 1.0)
    return w


def _iou(inter: np.ndarray, union: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class IoU (NaN where the class is in neither labels nor predictions) and its mean over present classes,
    over the last axis."""
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)
    present = union > 0
    mean = np.where(present.any(-1), np.nansum(iou, -1) / np.maximum(present.sum(-1), 1), np.nan)
    return iou, mean


@dataclass
class IouInterval:
    """A mean IoU and per-class IoUs with their bootstrap intervals (fractions, not points)."""

    images: int
    mean: float
    mean_ci95: tuple[float, float]
    per_class: list[float | None]
    per_class_ci95: list[tuple[float, float] | None]
    resamples: int

    def as_dict(self, classes: Sequence[str]) -> dict:
        return {
            "images": self.images,
            "mean": self.mean,
            "mean_ci95": list(self.mean_ci95),
            "per_class": {
                c: None if v is None else {"iou": v, "ci95": list(ci)}
                for c, v, ci in zip(classes, self.per_class, self.per_class_ci95)
            },
            "resamples": self.resamples,
        }


def bootstrap_iou(
    inter: np.ndarray, union: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED, level: float = 0.95
) -> IouInterval:
    """mIoU (over classes present in the data) and per-class IoU of the summed per-image counts ``inter``/``union``
    (images x classes), with percentile bootstrap intervals from resampling images."""
    inter, union = np.asarray(inter, dtype=np.float64), np.asarray(union, dtype=np.float64)
    n = inter.shape[0]
    if n == 0:
        raise ValueError("no images to resample")
    iou, mean = _iou(inter.sum(0), union.sum(0))
    mean = float(mean)
    w = resample_weights(n, resamples, seed)
    b_iou, b_mean = _iou(w @ inter, w @ union)
    a = 100 * (1 - level) / 2
    with warnings.catch_warnings():  # a class absent from every resample: all-NaN column, NaN bounds
        warnings.simplefilter("ignore", RuntimeWarning)
        lo_c, hi_c = np.nanpercentile(b_iou, a, axis=0), np.nanpercentile(b_iou, 100 - a, axis=0)
    lo, hi = np.percentile(b_mean, a), np.percentile(b_mean, 100 - a)
    return IouInterval(
        images=n,
        mean=float(mean),
        mean_ci95=(float(lo), float(hi)),
        per_class=[None if math.isnan(v) else float(v) for v in iou],
        per_class_ci95=[None if math.isnan(v) else (float(x), float(y)) for v, x, y in zip(iou, lo_c, hi_c)],
        resamples=resamples,
    )


@dataclass
class PairedDifference:
    """``b - a`` on the same images (fractions), its bootstrap interval and a verdict: "tie", "better" (b higher),
    "worse" (b lower), or "too few images" (fewer than ``MIN_IMAGES``: the interval is still given)."""

    images: int
    difference: float
    ci95: tuple[float, float]
    verdict: str
    margin: float

    def text(self, what: str = "mIoU") -> str:
        d, (lo, hi) = 100 * self.difference, (100 * self.ci95[0], 100 * self.ci95[1])
        figure = f"{what} {d:+.2f} points (95 % interval {lo:+.2f} to {hi:+.2f}, {self.images} images)"
        if self.verdict == "too few images":
            return f"{figure}: too few images to tell apart"
        if self.verdict == "tie":
            return f"{figure}: a tie"
        return f"{figure}: {'higher' if self.verdict == 'better' else 'lower'}"

    def as_dict(self) -> dict:
        return {
            "images": self.images,
            "difference": self.difference,
            "ci95": list(self.ci95),
            "verdict": self.verdict,
            "margin": self.margin,
        }


def paired_difference(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    resamples: int = RESAMPLES,
    seed: int = SEED,
    margin: float = TIE_MARGIN,
    min_images: int = MIN_IMAGES,
) -> PairedDifference:
    """Mean IoU of ``b`` minus that of ``a``, each given as per-image (inter, union) on the same images in the same
    order, with a paired bootstrap interval (one set of resampled images for both)."""
    (ia, ua), (ib, ub) = ([np.asarray(x, dtype=np.float64) for x in pair] for pair in (a, b))
    if ia.shape != ib.shape or ua.shape != ub.shape:
        raise ValueError(f"paired comparison needs the same images: {ia.shape} vs {ib.shape}")
    n = ia.shape[0]
    _, ma = _iou(ia.sum(0), ua.sum(0))
    _, mb = _iou(ib.sum(0), ub.sum(0))
    w = resample_weights(n, resamples, seed)
    diff = _iou(w @ ib, w @ ub)[1] - _iou(w @ ia, w @ ua)[1]
    lo, hi = float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))
    d = float(mb - ma)
    if n < min_images:
        verdict = "too few images"
    elif hi < 0 and d <= -margin:
        verdict = "worse"
    elif lo > 0 and d >= margin:
        verdict = "better"
    else:
        verdict = "tie"
    return PairedDifference(n, d, (lo, hi), verdict, margin)
