"""Calibration sets for INT8: real training images, picked so that rare classes are seen.

A uniform sample of CamVid train is dominated by road, sky and building; activation ranges calibrated on it clip
the responses that thin, rare classes (pole, sign, pedestrian, bicyclist) depend on. The sampler here reads every
label map's class pixel histogram and picks images greedily for the class the picks so far cover least.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgeseg.data.datasets import DatasetSpec, Sample, check_image_header, list_split, read_image, read_label
from edgeseg.data.transforms import auto_fit, fit_input, to_tensor
from edgeseg.errors import EdgesegError

CALIB_METHODS = ("minmax", "percentile", "entropy")
# Percentile (99.999 %) kept B0's CamVid val mIoU within 0.4 of fp32 where minmax lost 0.7 (README, INT8).
DEFAULT_CALIB_METHOD = "percentile"


def label_histograms(labels: list[np.ndarray], num_classes: int) -> np.ndarray:
    """(N, C) pixel counts per image and class; pixels outside 0..C-1 (the ignore index) are not counted."""
    out = np.zeros((len(labels), num_classes), dtype=np.int64)
    for i, lb in enumerate(labels):
        counts = np.bincount(lb.ravel(), minlength=256)[:num_classes]
        out[i] = counts
    return out


def class_balanced_pick(hist: np.ndarray, n: int, seed: int = 0, pool: int = 8) -> list[int]:
    """Indices of ``n`` images from their (N, C) class pixel histograms.

    Each pick serves the class with the fewest pixels among the images picked so far, taking one of the ``pool``
    unpicked images with the most pixels of that class (at random among them: CamVid is video, and the single
    best image's neighbours look alike). Presence alone is no measure here: thin poles appear in every CamVid image
    yet cover 1 % of the pixels. Classes no unpicked image contains are skipped; if none is left, the rest are
    drawn at random.
    """
    n_images, _ = hist.shape
    if n > n_images:
        raise EdgesegError(f"--calib-size {n} is larger than the {n_images} images available: use at most {n_images}")
    rng = np.random.default_rng(seed)
    pixels = hist.astype(np.float64)
    picked: list[int] = []
    free = np.ones(n_images, dtype=bool)
    acc = np.zeros(hist.shape[1])
    while len(picked) < n:
        left = np.flatnonzero(pixels[free].sum(axis=0) > 0)
        if left.size == 0:
            picked.extend(int(i) for i in rng.permutation(np.flatnonzero(free))[: n - len(picked)])
            break
        cls = left[np.argmin(acc[left])]
        candidates = np.flatnonzero(free & (pixels[:, cls] > 0))
        best = candidates[np.argsort(-pixels[candidates, cls], kind="stable")[:pool]]
        i = int(rng.choice(best))
        picked.append(i)
        free[i] = False
        acc += pixels[i]
    return picked


@dataclass(frozen=True)
class CalibrationSet:
    root: Path
    split: str
    samples: list[Sample]
    images: list[np.ndarray]
    method: str
    pixel_share: dict[str, float]  # class -> share of the calibration set's labelled pixels
    split_pixel_share: dict[str, float]  # the same over the whole split, for comparison
    sha256: str  # over the picked file names and contents, in order
    # A held-out slice of the same split (never calibrated on, class-balanced too): the mixed-precision search
    # measures its mIoU drop there, so the budget is not checked on the images that set the ranges.
    holdout: list[Sample] = field(default_factory=list)
    holdout_images: list[np.ndarray] = field(default_factory=list)
    holdout_labels: list[np.ndarray] = field(default_factory=list)

    def inputs(self, size: tuple[int, int]) -> list[torch.Tensor]:
        """The images as network inputs of ``size``: (1, 3, H, W) normalised and fitted as the deployed input."""
        return [fit_input(to_tensor(im), auto_fit(im.shape[:2], size)) for im in self.images]

    def manifest(self) -> dict:
        return {
            "data": str(self.root),
            "split": self.split,
            "size": len(self.samples),
            "method": self.method,
            "sampler": "class-balanced over label histograms",
            "files": [s.image.name for s in self.samples],
            "class_pixel_share": self.pixel_share,
            "split_pixel_share": self.split_pixel_share,
            "sha256": self.sha256,
            "holdout_files": [s.image.name for s in self.holdout],
        }


def select_calibration(
    root: Path,
    spec: DatasetSpec,
    size: int = 64,
    method: str = DEFAULT_CALIB_METHOD,
    split: str = "train",
    seed: int = 0,
    holdout: int = 0,
) -> CalibrationSet:
    """Pick ``size`` images of ``root/split`` with the class-balanced sampler and load them, and ``holdout``
    more of the remaining images (same sampler) with their labels."""
    if method not in CALIB_METHODS:
        raise EdgesegError(f"unknown --calib-method {method!r}: use {', '.join(CALIB_METHODS)}")
    if size < 1:
        raise EdgesegError(f"--calib-size must be at least 1 (got {size})")
    root = Path(root)
    if not root.is_dir():
        raise EdgesegError(f"calibration data not found: {root} (pass --calib-data DIR with {split}/images and labels)")
    samples = list_split(root, split)
    if not samples:
        raise EdgesegError(f"no images in {root / split / 'images'}: calibration needs labelled {split} images")
    # one label at a time: only its class histogram is kept (a large data set never sits in memory at once)
    hist = np.concatenate([label_histograms([read_label(s.label)], spec.num_classes) for s in samples])
    if size + holdout > len(samples):
        raise EdgesegError(
            f"--calib-size {size} plus a held-out slice of {holdout} needs {size + holdout} images; "
            f"{root / split} has {len(samples)}: use a smaller --calib-size (or --max-miou-drop off: no held-out slice)"
        )
    order = class_balanced_pick(hist, size, seed)
    picked = set(order)
    rest = [i for i in range(len(samples)) if i not in picked]
    held = [rest[j] for j in class_balanced_pick(hist[rest], holdout, seed)] if holdout else []
    chosen = [samples[i] for i in order]
    for s in chosen + [samples[i] for i in held]:
        check_image_header(s.image)  # unreadable or over the pixel limit: one line, before anything is hashed
    digest = hashlib.sha256()
    for s in chosen:
        digest.update(s.image.name.encode())
        with open(s.image, "rb") as f:  # streamed: the file's size never decides the memory used
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return CalibrationSet(
        root,
        split,
        chosen,
        [read_image(s.image) for s in chosen],
        method,
        _shares(hist[order], spec),
        _shares(hist, spec),
        digest.hexdigest(),
        [samples[i] for i in held],
        [read_image(samples[i].image) for i in held],
        [read_label(samples[i].label) for i in held],
    )


def _shares(hist: np.ndarray, spec: DatasetSpec) -> dict[str, float]:
    total = hist.sum(axis=0)
    return {c: round(float(total[k] / max(total.sum(), 1)), 5) for k, c in enumerate(spec.classes)}
