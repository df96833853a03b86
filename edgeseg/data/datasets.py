"""Segmentation datasets laid out as ``{root}/{split}/images/*.jpg|png`` + ``{root}/{split}/labels/*.png``.

A label PNG holds one class index per pixel (8-bit); ``ignore_index`` marks unlabelled pixels. CamVid in
``../shared/data/camvid`` uses this layout; any other data set with a class list works the same way.
"""

from __future__ import annotations

import re
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


# The most pixels an image or label file may declare (PIL's own decompression-bomb threshold, enforced as an
# error here rather than PIL's warning): a few hundred bytes of PNG can declare billions of pixels.
MAX_IMAGE_PIXELS = 89_478_485


def _open(path: Path, what: str) -> Image.Image:
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as exc:  # over twice PIL's threshold: PIL refuses it itself
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        detail = f" ({int(pixels.group(1)):,} pixels)" if pixels else ""
        raise EdgesegError(f"{what} {path} declares too many pixels{detail}: {_BOMB_FIX}") from None
    except (OSError, ValueError) as exc:
        raise EdgesegError(f"cannot read {what} {path}: {exc}") from None
    width, height = im.size
    if width * height > MAX_IMAGE_PIXELS:
        im.close()
        raise EdgesegError(f"{what} {path} declares too many pixels ({width}x{height}): {_BOMB_FIX}")
    return im


_BOMB_FIX = f"the limit is {MAX_IMAGE_PIXELS:,} pixels (a decompression bomb, or a picture to downscale before use)"


def check_image_header(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding it: an unreadable file or one over the pixel limit
    is refused before any work starts."""
    with _open(path, "image") as im:
        return im.size


def _to_uint8_grey(values: np.ndarray, path: Path) -> np.ndarray:
    """A 16-bit (or 32-bit integer) grey image scaled to 0..255: a 16-bit file spans 0..65535, so v / 257."""
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise EdgesegError(f"cannot read image {path}: grey values outside 0..65535; save it as 8- or 16-bit")
    return np.round(values.astype(np.float64) / 257.0).astype(np.uint8)


def _is_16bit(im: Image.Image) -> bool:
    """Whether the file stores 16 bits per sample (PIL reads 16-bit colour PNGs as 8-bit RGB by the high byte)."""
    tiles = getattr(im, "tile", None) or []
    return im.mode.startswith("I;16") or any(";16" in str(t[3]) for t in tiles if len(t) > 3)


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 array (H, W, 3). 16-bit files are scaled to 8 bits (16-bit colour PNGs by their high byte, which
    PIL reads; 16-bit grey by v / 257), never clipped; a 16-bit file whose values all lie below 256 (8-bit values
    stored without rescaling: it would read as black) and float images are refused."""
    im = _open(path, "image")
    try:
        with im:
            if im.mode == "F":
                raise EdgesegError(f"image {path} holds floating-point pixels: save it as an 8-bit RGB image")
            sixteen = _is_16bit(im)
            if im.mode.startswith("I;16") or im.mode == "I":
                grey = np.array(im)
                top = int(grey.max()) if grey.size else 0
                sixteen = sixteen or top > 255  # a 32-bit integer image: 16-bit values, or 8-bit ones as they are
                grey8 = _to_uint8_grey(grey, path) if sixteen else grey.astype(np.uint8)
                rgb, below_256 = np.repeat(grey8[:, :, None], 3, axis=2), top < 256
            else:
                rgb = np.array(im.convert("RGB"))  # writable: torch.from_numpy needs it
                below_256 = rgb.size == 0 or int(rgb.max()) == 0  # every high byte 0
    except (OSError, ValueError) as exc:
        raise EdgesegError(f"cannot read image {path}: {exc}") from None
    if sixteen and below_256:
        raise EdgesegError(
            f"image {path} is a 16-bit file whose values all lie below 256 (8-bit values stored without rescaling, "
            "which would read as black): save it as an 8-bit image, or scale its values to 0..65535"
        )
    return rgb


def read_label(path: Path) -> np.ndarray:
    """Class-index array (H, W) uint8. A 16-bit label PNG is read at full width and refused when a value does not
    fit 8 bits (259 would otherwise alias to 3)."""
    im = _open(path, "label")
    try:
        with im:
            if im.mode not in ("L", "P", "I;16", "I;16B", "I;16L", "I"):
                raise EdgesegError(f"label {path} has mode {im.mode}: expected a single-channel index PNG")
            values = np.array(im)
    except OSError as exc:
        raise EdgesegError(f"cannot read label {path}: {exc}") from None
    if values.dtype != np.uint8:
        wide = values.astype(np.int64)
        bad = np.unique(wide[(wide < 0) | (wide > 255)])
        if bad.size:
            raise EdgesegError(
                f"label {path} holds class indices above 255 ({_values(bad)}): edgeseg reads 8-bit class indices; "
                "remap the labels to 0..255 and save them as 8-bit PNGs"
            )
        values = wide.astype(np.uint8)
    return values


def _values(values: np.ndarray, n: int = 6) -> str:
    shown = ", ".join(str(int(v)) for v in values[:n])
    return shown + (f" and {len(values) - n} more" if len(values) > n else "")


def invalid_label_values(label: np.ndarray, spec: DatasetSpec) -> tuple[np.ndarray, int]:
    """The distinct values of ``label`` outside ``[0, classes)`` and the ignore index, and how many pixels hold
    them."""
    bad = ((label >= spec.num_classes) & (label != spec.ignore_index)) | (label < 0)
    if not bad.any():  # the common case: two vectorised comparisons, no histogram
        return np.empty(0, dtype=label.dtype), 0
    values = label[bad]
    return np.unique(values), int(values.size)


def check_labels(
    samples: list[Sample], labels: list[np.ndarray], spec: DatasetSpec, allow_invalid: bool = False
) -> tuple[int, int]:
    """Every label value must be a class of ``spec`` (``0..classes-1``) or its ignore index: a label set for another
    data set would otherwise be scored as if the stray values were unlabelled. With ``allow_invalid`` they are
    counted instead; returns (pixels, files) holding invalid values."""
    pixels, files, first = 0, 0, None
    for sample, label in zip(samples, labels):
        bad, n = invalid_label_values(label, spec)
        if n:
            pixels, files = pixels + n, files + 1
            first = first or (sample.label, bad)
    if pixels and not allow_invalid:
        path, bad = first
        raise EdgesegError(
            f"label {path} holds values {_values(bad)} outside the {spec.name} classes 0..{spec.num_classes - 1} "
            f"and ignore index {spec.ignore_index} ({pixels:,} pixels in {files} file(s)): pass the --dataset the "
            "labels were made for, fix the labels, or pass --ignore-invalid-labels to count them as unlabelled"
        )
    return pixels, files


def load_split(root: Path, split: str) -> tuple[list[Sample], list[np.ndarray], list[np.ndarray]]:
    """All images and labels of a split in memory (CamVid train is ~190 MB as uint8)."""
    samples = list_split(root, split)
    images = [read_image(s.image) for s in samples]
    labels = [read_label(s.label) for s in samples]
    for s, im, lb in zip(samples, images, labels):
        if im.shape[:2] != lb.shape:
            raise EdgesegError(f"{s.stem}: image {im.shape[:2]} and label {lb.shape} sizes differ")
    return samples, images, labels
