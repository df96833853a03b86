"""Preprocessing as the official EfficientViT eval (RGB / 255, ImageNet mean/std), the stride-32 input fit,
and the training augmentations (random scale, crop, flip, photometric jitter), all in torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgeseg.errors import EdgesegError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDE = 32  # EfficientViT-Seg downsamples 32x and its head adds stride-32/16/8 maps: H, W must divide by 32
# The largest network input accepted: 4096x4096 (a 4K frame fits). Activations grow with the pixel count (B1 at
# 4096x4096 holds several GB of them), so a typo such as 100000x100000 is refused instead of exhausting memory.
MAX_INPUT_PIXELS = 4096 * 4096


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 or float in 0..255 -> normalised float32."""
    x = images_uint8.float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) normalised float32."""
    return normalize(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0))


@dataclass(frozen=True)
class InputFit:
    """How an image of ``source`` size becomes a network input of ``size`` (both multiples of 32).

    ``pad``: zero-pad (in normalised space, i.e. the mean colour) bottom/right to the next multiple of 32 and crop
    the logits back: exact, every original pixel is predicted. ``resize``: bilinear resize to ``size`` and resize
    the logits back to the source size.
    """

    source: tuple[int, int]
    size: tuple[int, int]
    mode: str  # "pad" | "resize" | "none"

    def describe(self) -> str:
        if self.mode == "none":
            return f"{self.source[0]}x{self.source[1]} (already a multiple of {STRIDE})"
        verb = "padded" if self.mode == "pad" else "resized"
        return f"{self.source[0]}x{self.source[1]} {verb} to {self.size[0]}x{self.size[1]} (multiple of {STRIDE})"


def round_up(n: int, m: int = STRIDE) -> int:
    return (n + m - 1) // m * m


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise EdgesegError(f"size {text!r} is not HxW (e.g. 384x480)") from None
    if h <= 0 or w <= 0:
        raise EdgesegError(f"size {text!r} must be positive")
    if h * w > MAX_INPUT_PIXELS:
        raise EdgesegError(
            f"size {text!r} is {h * w:,} pixels: the limit is {MAX_INPUT_PIXELS:,} (e.g. 4096x4096); pass a smaller HxW"
        )
    return h, w


def check_input_size(
    size: tuple[int, int], multiple: int = STRIDE, why: str = "edgeseg's models downsample 32x"
) -> tuple[int, int]:
    """A fixed network input size (export, bench) must be a multiple of the model's stride (32 for edgeseg's own
    models; a user model's output stride); the error names the nearest fix."""
    h, w = size
    if h % multiple or w % multiple:
        down_h, down_w = max(multiple, h // multiple * multiple), max(multiple, w // multiple * multiple)
        up_h, up_w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        raise EdgesegError(
            f"input size {h}x{w} is not a multiple of {multiple} ({why}): use {up_h}x{up_w} or {down_h}x{down_w}"
        )
    return size


def plan_fit(source: tuple[int, int], mode: str = "pad", size: tuple[int, int] | None = None) -> InputFit:
    if mode not in ("pad", "resize"):
        raise EdgesegError(f"unknown fit mode {mode!r}: use 'pad' or 'resize'")
    if size is not None:
        check_input_size(size)
        if mode == "pad" and (size[0] < source[0] or size[1] < source[1]):
            raise EdgesegError(
                f"cannot pad {source[0]}x{source[1]} to the smaller {size[0]}x{size[1]}: use --fit resize"
            )
        return InputFit(source, size, mode if size != source else "none")
    target = (round_up(source[0]), round_up(source[1]))
    return InputFit(source, target, "none" if target == source else mode)


def fit_input(x: torch.Tensor, fit: InputFit) -> torch.Tensor:
    if fit.mode == "none":
        return x
    if fit.mode == "pad":
        return F.pad(x, (0, fit.size[1] - fit.source[1], 0, fit.size[0] - fit.source[0]))
    return F.interpolate(x, size=fit.size, mode="bilinear", align_corners=False)


def logits_to_source(logits: torch.Tensor, fit: InputFit) -> torch.Tensor:
    """Logits (any stride) -> logits at the source image size, undoing the fit; bilinear as the official eval."""
    if fit.mode == "pad":
        logits = F.interpolate(logits, size=fit.size, mode="bilinear", align_corners=False)
        return logits[..., : fit.source[0], : fit.source[1]]
    return F.interpolate(logits, size=fit.source, mode="bilinear", align_corners=False)


def labels_to_source(labels: torch.Tensor, fit: InputFit) -> torch.Tensor:
    """(N, H, W) class labels at the network input size -> the source size (crop the padding, or nearest)."""
    if fit.mode == "pad":
        return labels[..., : fit.source[0], : fit.source[1]]
    if fit.mode == "resize":
        return F.interpolate(labels[:, None].float(), size=fit.source, mode="nearest")[:, 0].long()
    return labels


def auto_fit(source: tuple[int, int], size: tuple[int, int]) -> InputFit:
    """For a fixed-size artifact: pad when the image fits inside ``size`` (exact), else resize."""
    fits = source[0] <= size[0] and source[1] <= size[1]
    return plan_fit(source, "pad" if fits else "resize", size)


# --------------------------------------------------------------------------------------------------------------
# Training augmentation
# --------------------------------------------------------------------------------------------------------------


@dataclass
class AugmentConfig:
    crop: tuple[int, int] = (320, 320)
    scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    gamma: float = 0.0  # gamma exponent drawn log-uniformly in [1/(1+g), 1+g]: darkens or lifts shadows (dusk)


def augment_pair(
    image: np.ndarray, label: np.ndarray, cfg: AugmentConfig, gen: torch.Generator, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scale -> random crop (padded with ignore when the scaled image is smaller) -> flip -> jitter.

    Returns a (3, h, w) float image in 0..255 and an (h, w) int64 label.
    """
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().unsqueeze(0)
    lab = torch.from_numpy(np.ascontiguousarray(label)).float()[None, None]
    s = cfg.scale[0] + (cfg.scale[1] - cfg.scale[0]) * torch.rand((), generator=gen).item()
    h, w = image.shape[:2]
    nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    img = F.interpolate(img, size=(nh, nw), mode="bilinear", align_corners=False)
    lab = F.interpolate(lab, size=(nh, nw), mode="nearest")

    ch, cw = cfg.crop
    ph, pw = max(0, ch - nh), max(0, cw - nw)
    if ph or pw:
        img = F.pad(img, (0, pw, 0, ph), value=0.0)
        lab = F.pad(lab, (0, pw, 0, ph), value=float(ignore_index))
    H, W = img.shape[-2:]
    y0 = int(torch.randint(0, H - ch + 1, (), generator=gen))
    x0 = int(torch.randint(0, W - cw + 1, (), generator=gen))
    img = img[..., y0 : y0 + ch, x0 : x0 + cw]
    lab = lab[..., y0 : y0 + ch, x0 : x0 + cw]
    if cfg.flip and torch.rand((), generator=gen).item() < 0.5:
        img, lab = img.flip(-1), lab.flip(-1)

    img = img[0]

    def factor(amount: float) -> float:
        return 1.0 + amount * (2 * torch.rand((), generator=gen).item() - 1)

    if cfg.brightness:
        img = img * factor(cfg.brightness)
    if cfg.contrast:
        mean = img.mean()
        img = (img - mean) * factor(cfg.contrast) + mean
    if cfg.saturation:
        gray = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
        img = (img - gray) * factor(cfg.saturation) + gray
    img = img.clamp_(0, 255)
    if cfg.gamma:
        # log-uniform, so darkening and brightening are equally likely (1/(1+g) .. 1+g)
        g = math.exp(math.log1p(cfg.gamma) * (2 * torch.rand((), generator=gen).item() - 1))
        img = 255.0 * (img / 255.0).pow_(g)
    return img, lab[0, 0].long()
