"""Supervised training of a registered segmentation model on an images/ + labels/ data set.

Random scale, crop, flip and photometric jitter; AdamW with linear warm-up and cosine decay; cross-entropy with
the dataset's ignore index and optional class weighting or OHEM for rare classes; periodic validation with the
same mIoU code as ``edgeseg eval``; atomic best/last checkpoints; ``resume``; a ``train.json`` log.

Model selection is honest by construction when ``select_groups`` is set: the pooled splits are cut by whole groups
(video sequences, ``edgeseg.data.groups``) and the best epoch is chosen on groups the model never trains on. A
selection split that shares groups with training is allowed (CamVid's own val does) but is reported as such.
On CPU, bf16 autocast (AVX-512 BF16 / AMX run bf16 matmuls about twice as fast as fp32), channels_last and a
prefetch thread for augmentation are the throughput levers. ``edgeseg.train.speedups`` supplies faster kernels for
the same arithmetic: the loss always upsamples its logits by matrix products, and under bf16 on the CPU the
depthwise convolutions compute in fp32. EMA weights are optional.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.data.datasets import DatasetSpec, check_labels, load_split
from edgeseg.data.groups import groups_of, overlap_warning, shared_groups, split_by_groups
from edgeseg.data.transforms import AugmentConfig, augment_pair, normalize
from edgeseg.errors import EdgesegError
from edgeseg.eval.evaluate import evaluate_arrays, torch_predictor
from edgeseg.io import atomic_save, load_checkpoint
from edgeseg.models.registry import create_model
from edgeseg.train.speedups import depthwise_in_fp32, upsample_bilinear


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
    brightness: float = 0.25  # brightness factor drawn uniformly in 1 +- this
    gamma: float = 0.0  # gamma jitter (see AugmentConfig): 0 = off
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
    train_split: str = "train"  # comma-separated splits are pooled ("train,val")
    val_split: str = "val"  # "none": no selection (a fixed schedule; best.pt is the last epoch)
    select_groups: tuple[str, ...] = ()  # hold these whole groups out of the pooled splits and select on them
    precision: str = "fp32"  # "fp32" | "bf16" (autocast; the loss and the optimizer stay fp32)
    channels_last: bool = False
    ema_decay: float | None = None  # keep an exponential moving average of the weights; evaluate and ship it
    prefetch: bool = True  # augment the next batch in a thread while the current one trains
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
    logits = upsample_bilinear(logits, tuple(target.shape[-2:]))
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


@dataclass
class TrainingData:
    """What a run trains and selects on, and which groups each side holds."""

    train_images: list
    train_labels: list
    val_images: list
    val_labels: list
    split: dict  # train/selection splits, their groups and any group shared between them


def load_training_data(cfg: TrainConfig, spec: DatasetSpec | None = None) -> TrainingData:
    """The training and selection images of ``cfg``: the named splits, or the pooled splits cut by whole groups.
    With ``spec``, every label value must be one of its classes or its ignore index (a stray value breaks the
    loss)."""
    root = Path(cfg.data)
    splits = [s.strip() for s in cfg.train_split.split(",") if s.strip()]
    stems, images, labels = [], [], []
    pool = splits + ([cfg.val_split] if cfg.select_groups and cfg.val_split not in ("none", *splits) else [])
    for name in pool:
        samples, ims, lbs = load_split(root, name)
        if spec is not None:
            check_labels(samples, lbs, spec)
        stems += [s.stem for s in samples]
        images += ims
        labels += lbs
    if cfg.select_groups:
        cut = split_by_groups(stems, root, cfg.select_groups)
        train_idx, val_idx = cut.train, cut.select
        val_name = "groups " + ",".join(sorted(cut.select_groups))
    else:
        train_idx, val_idx = list(range(len(stems))), []
        val_name = cfg.val_split
    val_stems = [stems[i] for i in val_idx]
    val_images, val_labels = [images[i] for i in val_idx], [labels[i] for i in val_idx]
    if not cfg.select_groups and cfg.val_split != "none":
        samples, val_images, val_labels = load_split(root, cfg.val_split)
        if spec is not None:
            check_labels(samples, val_labels, spec)
        val_stems = [s.stem for s in samples]
    train_images, train_labels = [images[i] for i in train_idx], [labels[i] for i in train_idx]
    train_stems = [stems[i] for i in train_idx]
    if cfg.limit_train:
        train_images, train_labels = train_images[: cfg.limit_train], train_labels[: cfg.limit_train]
        train_stems = train_stems[: cfg.limit_train]
    if cfg.limit_val:
        val_images, val_labels = val_images[: cfg.limit_val], val_labels[: cfg.limit_val]
        val_stems = val_stems[: cfg.limit_val]
    train_groups = groups_of(train_stems, root)
    split = {
        "train": ",".join(splits),
        "train_groups": train_groups,
        "select": val_name if val_stems else "none",
        "select_groups": groups_of(val_stems, root),
        "select_shares_groups": shared_groups(train_groups, val_stems, root),
    }
    return TrainingData(train_images, train_labels, val_images, val_labels, split)


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def ema_decay_at(decay: float, updates: int) -> float:
    """The EMA decay used for the update after ``updates`` earlier ones: ``min(decay, (1 + n) / (10 + n))``.

    Without the warm-up a 0.999 average still holds 35 % of the random initialisation after 1,000 steps (20 CamVid
    epochs), and its BatchNorm statistics (averaged with the weights) no longer match its weights: such an average
    scored 1.9 mIoU where the model itself scored 37.5."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


def _ema(model: nn.Module, decay: float | None):
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel

    @torch.no_grad()
    def warmed_ema(averaged: list, current: list, num_averaged) -> None:
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1.0 - ema_decay_at(decay, int(num_averaged)))
        else:  # integer buffers (BatchNorm's num_batches_tracked) follow the model
            torch._foreach_copy_(averaged, current)

    # buffers (BatchNorm statistics) are averaged with the weights they belong to
    return AveragedModel(model, multi_avg_fn=warmed_ema, use_buffers=True)


def train(cfg: TrainConfig, progress: Callable[..., object] | None = None, resume: bool = False) -> TrainResult:
    """Train ``cfg.model`` and write ``last.pt``, ``best.pt`` and ``train.json`` to ``cfg.out``.

    ``progress(kind, **fields)`` is called with kind "start", "warning", "step", "eval" and "end" (the CLI draws a
    rich bar). Resuming continues the same schedule: the same order, augmentations and learning rates as an
    uninterrupted run (each epoch's randomness is seeded by (seed, epoch)).
    """
    if cfg.loss not in ("ce", "wce", "ohem"):
        raise EdgesegError(f"unknown loss {cfg.loss!r}: use ce, wce or ohem")
    if cfg.precision not in ("fp32", "bf16"):
        raise EdgesegError(f"unknown precision {cfg.precision!r}: use fp32 or bf16")
    if cfg.ema_decay is not None and not 0.0 < cfg.ema_decay < 1.0:
        raise EdgesegError(f"--ema {cfg.ema_decay} must lie in (0, 1), e.g. 0.999")
    if cfg.crop[0] % 32 or cfg.crop[1] % 32:
        raise EdgesegError(f"crop {cfg.crop[0]}x{cfg.crop[1]} must be a multiple of 32")
    if not 0 <= cfg.brightness < 1:
        raise EdgesegError(f"--brightness {cfg.brightness} must lie in [0, 1), e.g. 0.6 for factors 0.4x-1.6x")
    if not 0 <= cfg.gamma <= 4:
        raise EdgesegError(f"--gamma {cfg.gamma} must lie in [0, 4], e.g. 0.5 for exponents 0.67-1.5")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    report = progress or (lambda kind, **kw: None)
    out = Path(cfg.out)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    if not resume and (out / "last.pt").is_file():
        raise EdgesegError(
            f"{out} holds a training run already (last.pt): pass --resume to continue it, or a new --out (its "
            "checkpoints are not replaced)"
        )
    seed_everything(cfg.seed)
    model, spec = create_model(cfg.model, cfg.dataset)
    data = load_training_data(cfg, spec)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.precision == "bf16" and device.type == "cpu":
        depthwise_in_fp32(model)  # before the EMA copy, so the average runs the same kernels
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    ema = _ema(model, cfg.ema_decay)
    weight = class_weights(data.train_labels, spec).to(device) if cfg.loss == "wce" else None

    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    n_train = len(data.train_images)
    batch_size = min(cfg.batch_size, n_train)
    steps_per_epoch = max(1, n_train // batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)

    history: list[dict] = []
    start_epoch, best_miou, best_epoch = 0, -1.0, -1
    if resume and (out / "last.pt").is_file():
        state = load_checkpoint(out / "last.pt")
        for text in _check_resumable(state.get("config", {}), cfg):
            report("warning", text=text)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        start_epoch = state["epoch"]
        best_miou, best_epoch = state["best_miou"], state["best_epoch"]
        history = state.get("history", [])
    aug = AugmentConfig(crop=tuple(cfg.crop), scale=tuple(cfg.scale), brightness=cfg.brightness, gamma=cfg.gamma)
    report(
        "start",
        total_steps=total_steps,
        done_steps=start_epoch * steps_per_epoch,
        epochs=cfg.epochs,
        device=str(device),
        images=n_train,
        split=data.split,
    )
    if data.split["select_shares_groups"]:
        report("warning", text=overlap_warning(data.split["select"], data.split["select_shares_groups"]))

    def batch(idx: list[int], gen: torch.Generator):
        pairs = [augment_pair(data.train_images[i], data.train_labels[i], aug, gen, spec.ignore_index) for i in idx]
        x = normalize(torch.stack([p[0] for p in pairs])).contiguous(memory_format=memory_format)
        return x, torch.stack([p[1] for p in pairs])

    step = start_epoch * steps_per_epoch
    with ThreadPoolExecutor(max_workers=1) as pool:
        for epoch in range(start_epoch, cfg.epochs):
            # Deterministic given (seed, epoch): resuming replays the same order and augmentations. Only one thread
            # (the prefetcher, or this one) draws from ``gen``, in batch order, so prefetching keeps the sequence.
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            model.train()
            t0, seen, loss_sum = time.perf_counter(), 0, 0.0
            order = _batches(n_train, batch_size, gen)
            pending = pool.submit(batch, order[0], gen) if cfg.prefetch else None
            for k, idx in enumerate(order):
                x, y = pending.result() if pending is not None else batch(idx, gen)
                if cfg.prefetch and k + 1 < len(order):
                    pending = pool.submit(batch, order[k + 1], gen)
                x, y = x.to(device), y.to(device)
                for g in optimizer.param_groups:
                    g["lr"] = cfg.lr * lr_factor(step, total_steps, warmup_steps, cfg.min_lr_ratio)
                with _autocast(device, cfg.precision):
                    logits = model(x)
                loss = segmentation_loss(logits.float(), y, cfg, spec.ignore_index, weight)
                if not torch.isfinite(loss):
                    raise EdgesegError(f"loss became {loss.item()} at step {step}: lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if ema is not None:
                    ema.update_parameters(model)
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
            if pending is not None:
                pending.cancel()
            record = {
                "epoch": epoch + 1,
                "loss": loss_sum / max(seen, 1),
                "lr": optimizer.param_groups[0]["lr"],
                "images_per_s": seen / (time.perf_counter() - t0),
                "seconds": time.perf_counter() - t0,
                "load_1min": os.getloadavg()[0],  # images/s on a shared machine is read against its load
            }
            shipped = ema.module if ema is not None else model
            last_epoch = epoch + 1 == cfg.epochs or (cfg.max_steps is not None and step >= cfg.max_steps)
            if data.val_images and ((epoch + 1) % cfg.eval_every == 0 or last_epoch):
                metrics = evaluate_arrays(torch_predictor(shipped, device), data.val_images, data.val_labels, spec)
                record.update(
                    val_miou=metrics.miou,
                    val_pixel_accuracy=metrics.pixel_accuracy,
                    val_iou=dict(zip(spec.classes, metrics.iou)),
                )
                if ema is not None:  # the raw weights too, so a run shows whether the average helps
                    raw = evaluate_arrays(torch_predictor(model, device), data.val_images, data.val_labels, spec)
                    record.update(raw_val_miou=raw.miou)
                if metrics.miou > best_miou:
                    best_miou, best_epoch = metrics.miou, epoch + 1
                    _save_best(out, shipped, epoch + 1, metrics.miou, cfg, data.split)
                report("eval", epoch=epoch + 1, miou=metrics.miou, best=best_miou, raw_miou=record.get("raw_val_miou"))
            elif not data.val_images and last_epoch:
                best_epoch = epoch + 1  # a fixed schedule: the last epoch is the one shipped
                _save_best(out, shipped, epoch + 1, None, cfg, data.split)
            history.append(record)
            checkpoint = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "best_miou": best_miou,
                "best_epoch": best_epoch,
                "history": history,
                "config": asdict(cfg),
                "split": data.split,
            }
            if ema is not None:
                checkpoint["ema"] = ema.state_dict()
            atomic_save(checkpoint, out / "last.pt")
            _write_log(out / "train.json", cfg, history, best_miou, best_epoch, str(device), data.split)
            if last_epoch:
                break
    report("end", best=best_miou, best_epoch=best_epoch)
    return TrainResult(best_miou, best_epoch, len(history), out, history)


# what may differ between an interrupted run and its resumption (everything else shapes the schedule)
_RESUME_FREE = {"out", "threads", "max_steps", "prefetch", "eval_every", "epochs"}


def _check_resumable(saved: dict, cfg: TrainConfig) -> list[str]:
    """Refuse a resumption whose options would change what the interrupted run was doing; a longer (or shorter)
    run is allowed, with a warning, since it stretches the learning-rate schedule."""
    now = asdict(cfg)
    changed = sorted(k for k in saved if k not in _RESUME_FREE and k in now and _norm(saved[k]) != _norm(now[k]))
    if changed:
        k = changed[0]
        raise EdgesegError(
            f"cannot resume: {k} was {saved[k]!r} in the interrupted run and is {now[k]!r} now (resume with the same "
            "options, or train into a new --out)"
        )
    if "epochs" in saved and saved["epochs"] != cfg.epochs:
        return [
            f"warning: resuming a {saved['epochs']}-epoch run as a {cfg.epochs}-epoch run: the learning-rate "
            "schedule is stretched from here on, so the result differs from either uninterrupted run"
        ]
    return []


def _norm(value):
    return list(value) if isinstance(value, tuple | list) else value


def _save_best(out: Path, model: nn.Module, epoch: int, miou: float | None, cfg: TrainConfig, split: dict) -> None:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}  # channels_last tensors: a plain layout
    atomic_save({"model": state, "epoch": epoch, "miou": miou, "config": asdict(cfg), "split": split}, out / "best.pt")


def _write_log(
    path: Path, cfg: TrainConfig, history: list[dict], best: float, best_epoch: int, device: str, split: dict
) -> None:
    log = {
        "config": asdict(cfg),
        "split": split,
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
