"""Benchmark (not a test): training throughput on this CPU, fp32 against bf16 autocast and channels_last.

    python benchmarks/train_throughput.py --models efficientvit-b0 efficientvit-b1 --json out/train-throughput.json

The baseline, ``fp32 (plain ops)``, is a training step without ``edgeseg.train.speedups``: the loss upsamples with
``F.interpolate`` and nothing is swapped. ``bf16+channels_last (plain ops)`` is the same with bf16 autocast and
channels_last, bf16 depthwise convolutions included. The other configurations are what the trainer runs now: the
matmul upsampling in the loss for all, and fp32 depthwise convolutions under bf16.

``--compile`` adds bf16 + channels_last under ``torch.compile`` (inductor); its compilation time is reported
separately and excluded from its images/s.

Each configuration owns its model and optimizer; one training step (forward, loss, backward, AdamW) of a batch of
``--batch-size`` crops is timed per configuration in turn, round robin, so that the machine's load hits all of them
alike. Reported per model: median images/s of each configuration and the median (min-max) of the per-round ratio to
fp32. The augmentation of one batch is timed separately (the trainer prefetches it in a thread). Real CamVid crops
(``--data``) when present, else random pixels with random labels.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import provenance  # noqa: E402

from edgeseg.data.datasets import CAMVID, load_split  # noqa: E402
from edgeseg.data.transforms import AugmentConfig, augment_pair, normalize  # noqa: E402
from edgeseg.models.registry import create_model  # noqa: E402
from edgeseg.train.speedups import depthwise_in_fp32  # noqa: E402
from edgeseg.train.trainer import TrainConfig, _autocast, param_groups, segmentation_loss  # noqa: E402

BASELINE = "fp32 (plain ops)"
CONFIGS = {  # label: TrainConfig options, and whether the step uses the trainer's fast paths
    BASELINE: (dict(precision="fp32", channels_last=False), False),
    "bf16+channels_last (plain ops)": (dict(precision="bf16", channels_last=True), False),
    "fp32": (dict(precision="fp32", channels_last=False), True),
    "fp32+channels_last": (dict(precision="fp32", channels_last=True), True),
    "bf16": (dict(precision="bf16", channels_last=False), True),
    "bf16+channels_last": (dict(precision="bf16", channels_last=True), True),
}


def batches(data: Path | None, crop: tuple[int, int], batch_size: int, n: int):
    gen = torch.Generator().manual_seed(0)
    aug = AugmentConfig(crop=crop, scale=(0.5, 2.0))
    if data is not None and (data / "train").is_dir():
        _, images, labels = load_split(data, "train")
        images, labels = images[: batch_size * 2], labels[: batch_size * 2]
    else:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 255, (360, 480, 3), dtype=np.uint8) for _ in range(batch_size * 2)]
        labels = [rng.integers(0, 11, (360, 480), dtype=np.uint8) for _ in range(batch_size * 2)]
    out, aug_ms = [], []
    for k in range(n):
        t0 = time.perf_counter()
        pairs = [
            augment_pair(images[(k * batch_size + i) % len(images)], labels[0], aug, gen, 11) for i in range(batch_size)
        ]
        x = normalize(torch.stack([p[0] for p in pairs]))
        y = torch.stack([p[1] for p in pairs])
        aug_ms.append(1000 * (time.perf_counter() - t0))
        out.append((x, y))
    return out, statistics.median(aug_ms)


def plain_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The loss before ``edgeseg.train.speedups``: interpolation kernel, then cross-entropy."""
    logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, target, ignore_index=CAMVID.ignore_index)


def step(run: tuple, batch: tuple) -> None:
    """One training step: forward under the configuration's autocast, loss, backward, AdamW."""
    model, opt, cfg, fmt, fast = run
    x, y = batch
    with _autocast(torch.device("cpu"), cfg.precision):
        logits = model(x.contiguous(memory_format=fmt))
    if fast:
        loss = segmentation_loss(logits.float(), y, cfg, CAMVID.ignore_index, None)
    else:
        loss = plain_loss(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["efficientvit-b0", "efficientvit-b1"])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/camvid"))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", default="320x320")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per configuration per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time bf16+channels_last under torch.compile")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    started = provenance.start()
    torch.set_num_threads(args.threads)
    crop = tuple(int(v) for v in args.crop.split("x"))
    data, aug_ms = batches(args.data, crop, args.batch_size, 4)
    results = []
    for name in args.models:
        runs, compile_s = {}, {}
        configs = dict(CONFIGS)
        if args.compile:
            configs["bf16+channels_last+compile"] = (dict(precision="bf16", channels_last=True), True)
        for label, (opts, fast) in configs.items():
            torch.manual_seed(0)
            model, _ = create_model(name, "camvid")
            if fast and opts["precision"] == "bf16":
                depthwise_in_fp32(model)  # as the trainer does
            fmt = torch.channels_last if opts["channels_last"] else torch.contiguous_format
            model.to(memory_format=fmt).train()
            opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
            cfg = TrainConfig(model=name, dataset="camvid", data="", out="", loss="ce", **opts)
            runs[label] = (torch.compile(model) if label.endswith("+compile") else model, opt, cfg, fmt, fast)

        for label in runs:  # warm-up: first-call allocations, oneDNN primitive creation, compilation
            t0 = time.perf_counter()
            step(runs[label], data[0])
            compile_s[label] = round(time.perf_counter() - t0, 1)
        per_round = {label: [] for label in runs}
        loads = []
        for r in range(args.rounds):
            loads.append(round(os.getloadavg()[0], 2))
            for label in runs:
                t0 = time.perf_counter()
                for k in range(args.steps):
                    step(runs[label], data[(r + k) % len(data)])
                per_round[label].append(args.steps * args.batch_size / (time.perf_counter() - t0))
        row = {
            "model": name,
            "crop": args.crop,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "load_1min": loads,
            "first_step_s": compile_s,
            "baseline": BASELINE,
        }
        for label, ips in per_round.items():
            ratios = [a / b for a, b in zip(ips, per_round[BASELINE])]
            row[label] = {
                "images_per_s": round(statistics.median(ips), 2),
                "vs_baseline": round(statistics.median(ratios), 3),
                "vs_baseline_range": [round(min(ratios), 3), round(max(ratios), 3)],
            }
        results.append(row)
        print(json.dumps(row), flush=True)
    doc = {"augment_ms_per_batch": round(aug_ms, 1), "results": results, "provenance": provenance.finish(started)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
