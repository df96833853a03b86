"""Segmentation datasets laid out as ``{root}/{split}/images/*.jpg|png`` + ``{root}/{split}/labels/*.png``.

A label PNG holds one class index per pixel (8-bit); ``ignore_index`` marks unlabelled pixels. CamVid in
``../shared/data/camvid`` uses this layout; any other data set with a class list works the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgeseg.errors import EdgesegError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = 255

    @property
    def num_classes(self) -> int:
        return len(self.classes)


CAMVID = DatasetSpec(
    name="camvid",
    classes=("sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car", "pedestrian", "bicyclist"),
    palette=(
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (60, 40, 222),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ),
    ignore_index=11,
)


def _cityscapes_palette() -> tuple[tuple[int, int, int], ...]:
    return (
        (128, 64, 128),
        (244, 35, 232),
        (70, 70, 70),
        (102, 102, 156),
        (190, 153, 153),
        (153, 153, 153),
        (250, 170, 30),
        (220, 220, 0),
        (107, 142, 35),
        (152, 251, 152),
        (70, 130, 180),
        (220, 20, 60),
        (255, 0, 0),
        (0, 0, 142),
        (0, 0, 70),
        (0, 60, 100),
        (0, 80, 100),
        (0, 0, 230),
        (119, 11, 32),
    )


CITYSCAPES = DatasetSpec(
    name="cityscapes",
    classes=(
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic light",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ),
    palette=_cityscapes_palette(),
    ignore_index=255,
)


def _generated_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    # Deterministic, well-spread colours for label sets without a conventional palette (ADE20K's 150 classes).
    rng = np.random.default_rng(150)
    return tuple(tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(n))


ADE20K = DatasetSpec(
    name="ade20k",
    classes=tuple(f"class{i}" for i in range(150)),
    palette=_generated_palette(150),
    ignore_index=255,
)

DATASETS: dict[str, DatasetSpec] = {d.name: d for d in (CAMVID, CITYSCAPES, ADE20K)}


@dataclass(frozen=True)
class Sample:
    stem: str
    image: Path
    label: Path | None


def list_images(directory: Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise EdgesegError(f"image folder not found: {directory} (pass an existing folder of .jpg/.png images)")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EdgesegError(f"no images (.jpg/.png) in {directory}")
    return files


def list_split(root: Path, split: str) -> list[Sample]:
    """Pairs of image and label for ``split``; every image must have a label of the same stem."""
    root = Path(root)
    images_dir, labels_dir = root / split / "images", root / split / "labels"
    if not images_dir.is_dir():
        raise EdgesegError(
            f"{images_dir} not found: --data must point at a folder with {split}/images and {split}/labels"
        )
    if not labels_dir.is_dir():
        raise EdgesegError(f"{labels_dir} not found: labels are needed to evaluate the {split!r} split")
    samples = []
    missing = []
    for img in list_images(images_dir):
        label = labels_dir / f"{img.stem}.png"
        if not label.is_file():
            missing.append(label.name)
        samples.append(Sample(img.stem, img, label))
    if missing:
        raise EdgesegError(f"{len(missing)} label file(s) missing in {labels_dir}, e.g. {missing[0]}")
    return samples


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 array (H, W, 3)."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # writable: torch.from_numpy needs it
    except (OSError, ValueError) as exc:
        raise EdgesegError(f"cannot read image {path}: {exc}") from None


def read_label(path: Path) -> np.ndarray:
    """Class-index array (H, W) uint8."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I;16", "I"):
                raise EdgesegError(f"label {path} has mode {im.mode}: expected a single-channel index PNG")
            return np.array(im, dtype=np.uint8)
    except OSError as exc:
        raise EdgesegError(f"cannot read label {path}: {exc}") from None


def load_split(root: Path, split: str) -> tuple[list[Sample], list[np.ndarray], list[np.ndarray]]:
    """All images and labels of a split in memory (CamVid train is ~190 MB as uint8)."""
    samples = list_split(root, split)
    images = [read_image(s.image) for s in samples]
    labels = [read_label(s.label) for s in samples]
    for s, im, lb in zip(samples, images, labels):
        if im.shape[:2] != lb.shape:
            raise EdgesegError(f"{s.stem}: image {im.shape[:2]} and label {lb.shape} sizes differ")
    return samples, images, labels
