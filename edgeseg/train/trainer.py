"""Supervised training of a registered segmentation model on an images/ + labels/ data set.

Random scale, crop, flip and photometric jitter; AdamW with linear warm-up and cosine decay; cross-entropy with
the dataset's ignore index and optional class weighting or OHEM for rare classes; periodic validation with the
same mIoU code as ``edgeseg eval``; atomic best/last checkpoints; ``resume``; a ``train.json`` log.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.data.datasets import DatasetSpec, check_labels, load_split
from edgeseg.data.transforms import AugmentConfig, augment_pair, normalize
from edgeseg.errors import EdgesegError
from edgeseg.eval.evaluate import evaluate_arrays, torch_predictor
from edgeseg.io import atomic_save, load_checkpoint
from edgeseg.models.registry import create_model


@dataclass
class TrainConfig:
    model: str
    dataset: str
    data: str
    out: str
    epochs: int = 100
    batch_size: int = 8
    crop: tuple[int, int] = (320, 320)
    scale: tuple[float, float] = (0.5, 2.0)
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 3.0
    min_lr_ratio: float = 0.01
    loss: str = "wce"  # "ce" | "wce" (class-weighted) | "ohem"
    ohem_keep: float = 0.25  # OHEM: fraction of the hardest labelled pixels kept per batch
    eval_every: int = 5
    seed: int = 0
    threads: int | None = None
    max_steps: int | None = None  # stop early (smoke tests)
    train_split: str = "train"
    val_split: str = "val"
    limit_train: int | None = None  # first N training images only (smoke tests)
    limit_val: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    best_miou: float
    best_epoch: int
    epochs_done: int
    out: Path
    history: list[dict]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(labels: list[np.ndarray], spec: DatasetSpec) -> torch.Tensor:
    """Square root of median-frequency balancing (SegNet's weighting, softened), clipped to [0.2, 5]."""
    counts = np.zeros(spec.num_classes, dtype=np.float64)
    for lb in labels:
        counts += np.bincount(lb.reshape(-1), minlength=256)[: spec.num_classes]
    freq = counts / max(counts.sum(), 1)
    freq = np.where(freq > 0, freq, freq[freq > 0].min() if (freq > 0).any() else 1.0)
    w = np.sqrt(np.median(freq) / freq)
    return torch.tensor(np.clip(w, 0.2, 5.0), dtype=torch.float32)


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, cfg: TrainConfig, ignore_index: int, weight: torch.Tensor | None
) -> torch.Tensor:
    logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    if cfg.loss == "ohem":
        per_pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none").flatten()
        valid = per_pixel[(target != ignore_index).flatten()]
        if valid.numel() == 0:
            return logits.sum() * 0.0
        k = max(1, int(valid.numel() * cfg.ohem_keep))
        return valid.topk(k).values.mean()
    return F.cross_entropy(logits, target, weight=weight if cfg.loss == "wce" else None, ignore_index=ignore_index)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on norms and biases (1-D parameters)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[list[int]]:
    order = torch.randperm(n, generator=gen).tolist()
    # drop the last incomplete batch: BatchNorm with a batch of 1-2 crops is noisy
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)] or [order]


def train(cfg: TrainConfig, progress: Callable[..., object] | None = None, resume: bool = False) -> TrainResult:
    """Train ``cfg.model`` and write ``last.pt``, ``best.pt`` and ``train.json`` to ``cfg.out``.

    ``progress(kind, **fields)`` is called with kind "start", "step", "eval" and "end" (the CLI draws a rich bar).
    """
    if cfg.loss not in ("ce", "wce", "ohem"):
        raise EdgesegError(f"unknown loss {cfg.loss!r}: use ce, wce or ohem")
    if cfg.crop[0] % 32 or cfg.crop[1] % 32:
        raise EdgesegError(f"crop {cfg.crop[0]}x{cfg.crop[1]} must be a multiple of 32")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    report = progress or (lambda kind, **kw: None)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    seed_everything(cfg.seed)
    model, spec = create_model(cfg.model, cfg.dataset)
    model.to(device)
    train_samples, train_images, train_labels = load_split(Path(cfg.data), cfg.train_split)
    val_samples, val_images, val_labels = load_split(Path(cfg.data), cfg.val_split)
    check_labels(train_samples + val_samples, train_labels + val_labels, spec)  # a stray value breaks the loss
    if cfg.limit_train:
        train_images, train_labels = train_images[: cfg.limit_train], train_labels[: cfg.limit_train]
    if cfg.limit_val:
        val_images, val_labels = val_images[: cfg.limit_val], val_labels[: cfg.limit_val]
    weight = class_weights(train_labels, spec).to(device) if cfg.loss == "wce" else None

    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    batch_size = min(cfg.batch_size, len(train_images))
    steps_per_epoch = max(1, len(train_images) // batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)

    history: list[dict] = []
    start_epoch, best_miou, best_epoch = 0, -1.0, -1
    if resume and (out / "last.pt").is_file():
        state = load_checkpoint(out / "last.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"]
        best_miou, best_epoch = state["best_miou"], state["best_epoch"]
        history = state.get("history", [])
    # Deterministic given (seed, epoch): resuming replays the same order and augmentations.
    aug = AugmentConfig(crop=tuple(cfg.crop), scale=tuple(cfg.scale))
    report(
        "start",
        total_steps=total_steps,
        done_steps=start_epoch * steps_per_epoch,
        epochs=cfg.epochs,
        device=str(device),
        images=len(train_images),
    )

    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        model.train()
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        for idx in _batches(len(train_images), batch_size, gen):
            pairs = [augment_pair(train_images[i], train_labels[i], aug, gen, spec.ignore_index) for i in idx]
            x = normalize(torch.stack([p[0] for p in pairs])).to(device)
            y = torch.stack([p[1] for p in pairs]).to(device)
            for g in optimizer.param_groups:
                g["lr"] = cfg.lr * lr_factor(step, total_steps, warmup_steps, cfg.min_lr_ratio)
            loss = segmentation_loss(model(x), y, cfg, spec.ignore_index, weight)
            if not torch.isfinite(loss):
                raise EdgesegError(f"loss became {loss.item()} at step {step}: lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            report(
                "step",
                step=step,
                epoch=epoch + 1,
                loss=loss.item(),
                lr=optimizer.param_groups[0]["lr"],
                ips=seen / (time.perf_counter() - t0),
            )
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
        record = {
            "epoch": epoch + 1,
            "loss": loss_sum / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": seen / (time.perf_counter() - t0),
            "seconds": time.perf_counter() - t0,
        }
        last_epoch = epoch + 1 == cfg.epochs or (cfg.max_steps is not None and step >= cfg.max_steps)
        if (epoch + 1) % cfg.eval_every == 0 or last_epoch:
            metrics = evaluate_arrays(torch_predictor(model, device), val_images, val_labels, spec)
            record.update(
                val_miou=metrics.miou,
                val_pixel_accuracy=metrics.pixel_accuracy,
                val_iou=dict(zip(spec.classes, metrics.iou)),
            )
            if metrics.miou > best_miou:
                best_miou, best_epoch = metrics.miou, epoch + 1
                atomic_save(
                    {"model": model.state_dict(), "epoch": epoch + 1, "miou": metrics.miou, "config": asdict(cfg)},
                    out / "best.pt",
                )
            report("eval", epoch=epoch + 1, miou=metrics.miou, best=best_miou)
        history.append(record)
        atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "best_miou": best_miou,
                "best_epoch": best_epoch,
                "history": history,
                "config": asdict(cfg),
            },
            out / "last.pt",
        )
        _write_log(out / "train.json", cfg, history, best_miou, best_epoch, str(device))
        if last_epoch:
            break
    report("end", best=best_miou, best_epoch=best_epoch)
    return TrainResult(best_miou, best_epoch, len(history), out, history)


def _write_log(path: Path, cfg: TrainConfig, history: list[dict], best: float, best_epoch: int, device: str) -> None:
    log = {
        "config": asdict(cfg),
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "best_val_miou": best,
        "best_epoch": best_epoch,
        "history": history,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(log, indent=2))
    os.replace(tmp, path)
