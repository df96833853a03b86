"""Benchmark (not a test): the kernels behind ``edgeseg.train.speedups``, timed one by one on this CPU.

    python benchmarks/train_kernels.py --models efficientvit-b0 efficientvit-b1 --json out/train-kernels.json

Per model: every grouped convolution (depthwise and grouped 1x1) at the shape a training batch gives it, forward +
backward in channels_last, as plain bf16 (what autocast runs), plain fp32, and through
:class:`~edgeseg.train.speedups.Float32DepthwiseConv2d` under bf16 autocast (fp32 compute plus the casts, what the
trainer runs for depthwise layers). Then the loss: upsampling the logits to the label size, cross-entropy and
backward, with ``F.interpolate`` and with :func:`~edgeseg.train.speedups.upsample_bilinear`. Each time is the median of
``--repeats`` runs after one warm-up; configurations alternate so that load hits them alike.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import NoReturn

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import provenance  # noqa: E402

from edgeseg.data.datasets import CAMVID  # noqa: E402
from edgeseg.errors import EdgesegError  # noqa: E402
from edgeseg.io import atomic_write_bytes  # noqa: E402
from edgeseg.models.registry import create_model, resolve_model_name  # noqa: E402
from edgeseg.train.speedups import Float32DepthwiseConv2d, upsample_bilinear  # noqa: E402

CL = torch.channels_last


def fail(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit 2, nothing written."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_crop(text: str) -> tuple[int, int]:
    """``HxW`` with both sides positive multiples of 32 (the models' stride)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        fail(f"--crop {text!r} is not HxW: use e.g. 320x320")
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        fail(f"--crop {text!r}: both sides must be positive multiples of 32, e.g. 320x320")
    return h, w


def grouped_convs(name: str, batch: int, crop: tuple[int, int]) -> list[tuple[str, nn.Conv2d, tuple]]:
    """(module name, conv, input shape) of every grouped convolution, in forward order."""
    model, _ = create_model(name, "camvid")
    found: list[tuple[str, nn.Conv2d, tuple]] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o, n=n: found.append((n, m, tuple(i[0].shape))))
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.groups > 1
    ]
    with torch.no_grad():
        model(torch.randn(batch, 3, *crop))
    for h in hooks:
        h.remove()
    return found


def conv_step(conv: nn.Module, x: torch.Tensor, autocast: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = conv(x)
    y.backward(torch.ones_like(y))


def conv_variants(conv: nn.Conv2d, shape: tuple) -> dict:
    """The three ways to run one convolution: (module, input, under autocast)."""
    plain, swapped = copy.deepcopy(conv).to(memory_format=CL), copy.deepcopy(conv).to(memory_format=CL)
    swapped.__class__ = Float32DepthwiseConv2d
    x32 = torch.randn(shape).contiguous(memory_format=CL).requires_grad_(True)
    x16 = x32.detach().to(torch.bfloat16).contiguous(memory_format=CL).requires_grad_(True)
    return {
        "bf16": (plain, x16, True),
        "fp32": (plain, x32, False),
        "fp32 in bf16 autocast": (swapped, x16, True),
    }


def loss_step(logits: torch.Tensor, target: torch.Tensor, fast: bool) -> None:
    size = tuple(target.shape[-2:])
    up = upsample_bilinear(logits, size) if fast else F.interpolate(logits, size, mode="bilinear", align_corners=False)
    F.cross_entropy(up, target, ignore_index=CAMVID.ignore_index).backward()


def median_ms(runs: dict, repeats: int) -> dict:
    """Median milliseconds of each zero-argument callable, alternating between them."""
    for fn in runs.values():  # warm-up: oneDNN primitive creation
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(1000 * (time.perf_counter() - t0))
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["efficientvit-b0", "efficientvit-b1"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", default="320x320")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    crop = parse_crop(args.crop)
    for name in args.models:
        try:
            resolve_model_name(name, "camvid")
        except EdgesegError as exc:
            fail(f"{exc} (see 'edgeseg models')")
    if min(args.batch_size, args.threads, args.repeats) < 1:
        fail("--batch-size, --threads and --repeats must be at least 1")
    started = provenance.start()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    for name in args.models:
        rows = []
        for layer, conv, shape in grouped_convs(name, args.batch_size, crop):
            variants = conv_variants(conv, shape)
            runs = {k: (lambda m=m, x=x, a=a: conv_step(m, x, a)) for k, (m, x, a) in variants.items()}
            depthwise = conv.groups == conv.in_channels
            ms = median_ms(runs, args.repeats)
            rows.append(
                {
                    "layer": layer,
                    "input": list(shape),
                    "kernel": conv.kernel_size[0],
                    "stride": conv.stride[0],
                    "groups": conv.groups,
                    "depthwise": depthwise,
                    "ms": ms,
                    "trainer_runs": "fp32 in bf16 autocast" if depthwise else "bf16",
                }
            )
        logits = torch.randn(args.batch_size, 11, crop[0] // 8, crop[1] // 8).contiguous(memory_format=CL)
        logits.requires_grad_(True)
        target = torch.randint(0, CAMVID.num_classes + 1, (args.batch_size, *crop))  # includes the ignore index
        loss_ms = median_ms(
            {
                "F.interpolate": lambda x=logits, y=target: loss_step(x, y, False),
                "upsample_bilinear (matmul)": lambda x=logits, y=target: loss_step(x, y, True),
            },
            args.repeats,
        )
        total = {k: round(sum(r["ms"][k] for r in rows), 1) for k in ("bf16", "fp32")}
        total["trainer"] = round(sum(r["ms"][r["trainer_runs"]] for r in rows), 1)
        results.append({"model": name, "convs": rows, "convs_total_ms": total, "loss_ms": loss_ms})
        print(json.dumps({"model": name, "convs_total_ms": total, "loss_ms": loss_ms}), flush=True)
    doc = {
        "batch_size": args.batch_size,
        "crop": args.crop,
        "threads": args.threads,
        "repeats": args.repeats,
        "results": results,
        "provenance": provenance.finish(started),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.json, json.dumps(doc, indent=2).encode())


if __name__ == "__main__":
    main()
