"""Where a TFLite model's time goes by op family, fp32 against int8, measured by ablation. A benchmark, not a test.

XNNPACK's per-op times are not exposed through ai-edge-litert's Python interpreter (``edgeseg op-profile`` says so and
names ``benchmark_model``), so this attributes time the other way round: it converts the graph ``edgeseg export``
builds for TFLite (fp32, and PT2E int8 with the same quantizer) and timing-only variants, each with one op family
neutralised, times every file in one pass and reports each family's cost as the time it removes:

- ``attention core``: EfficientViT's LiteMLA keeps its qkv convs, multi-scale aggregation and projection, and
  passes v straight to the projection (no ReLU kernels, matmuls or normaliser; int8 keeps these float);
- ``HardSwish``: replaced by ReLU6, which the converter fuses into the producing conv (so it costs nothing);
- ``depthwise taps``: every k x k depthwise conv gets a 1x1 kernel, same stride (removes (k^2 - 1)/k^2 of its work).

The variants compute other functions: they are converted and timed, never exported or evaluated. Timing is a
round robin of single invokes in a fresh random order each round, so a load change on a shared machine hits every
file alike; the table gives medians. The int8 files are calibrated on ``--calib-images`` train images (class-
balanced, as ``edgeseg export``); no mixed-precision search: every layer the policy allows is int8.

    python benchmarks/tflite_breakdown.py --model efficientvit-b0 --calib-data ../shared/data/camvid
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import provenance  # benchmarks/provenance.py (this script's folder is on sys.path)
import torch
import torch.nn as nn

from edgeseg.io import atomic_write_bytes


class _ValueOnly(nn.Module):
    """Timing only: LiteMLA without its attention core (v goes to the projection)."""

    def __init__(self, ref: nn.Module):
        super().__init__()
        self.ref = ref

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.ref
        qkv = r.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in r.aggreg], dim=1)
        b, _, h, w = qkv.shape
        v = torch.reshape(qkv, (b, -1, 3 * r.dim, h * w))[:, :, 2 * r.dim : 3 * r.dim]
        return r.proj(torch.reshape(v, (b, -1, h, w)))


class _Relu6(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, 0.0, 6.0)


def _swap(model: nn.Module, match, make) -> int:
    count = 0
    for name, child in list(model.named_children()):
        if match(child):
            setattr(model, name, make(child))
            count += 1
        else:
            count += _swap(child, match, make)
    return count


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels and m.kernel_size[0] > 1


def _one_tap(conv: nn.Conv2d) -> nn.Conv2d:
    k = conv.kernel_size[0]
    new = nn.Conv2d(
        conv.in_channels, conv.out_channels, 1, conv.stride, 0, groups=conv.groups, bias=conv.bias is not None
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight[:, :, k // 2 : k // 2 + 1, k // 2 : k // 2 + 1])
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _variants(deploy: nn.Module) -> dict[str, nn.Module]:
    """name -> module (deep copies of the deploy graph, one family neutralised each)."""
    import copy

    from edgeseg.models.efficientvit.rewrites import LiteMLAFp32Normaliser
    from edgeseg.rewrite.common import HardswishAsClamp

    out = {"as exported": deploy}
    for name, match, make in (
        ("attention core", lambda m: isinstance(m, LiteMLAFp32Normaliser), _ValueOnly),
        ("HardSwish", lambda m: isinstance(m, (HardswishAsClamp, nn.Hardswish)), lambda m: _Relu6()),
        ("depthwise taps", _is_depthwise, _one_tap),
    ):
        variant = copy.deepcopy(deploy)
        if _swap(variant, match, make):
            out[name] = variant.eval()
    return out


def _time_files(files: dict[str, Path], rounds: int, threads: int) -> dict[str, list[float]]:
    from edgeseg.backends.tflite.runtime import LiteRtModel, _quantize

    calls = {}
    for label, path in files.items():
        run = LiteRtModel(path, threads)
        x = _quantize(torch.randn(1, *run.input["shape"][1:]).numpy(), run.input)
        run.interpreter.set_tensor(run.input["index"], x)
        calls[label] = run.interpreter.invoke
    for call in calls.values():  # warm-up
        for _ in range(10):
            call()
    samples: dict[str, list[float]] = {k: [] for k in calls}
    order = list(calls)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for label in order:
            t0 = time.perf_counter()
            calls[label]()
            samples[label].append(1000.0 * (time.perf_counter() - t0))
    return samples


def main() -> None:
    from edgeseg.backends.tflite.export import export_tflite
    from edgeseg.commands.evaluate import load_model
    from edgeseg.errors import EdgesegError
    from edgeseg.models.registry import DEFAULT_INPUT, MODELS, deploy_rewrites
    from edgeseg.quantize.calibration import select_calibration
    from edgeseg.rewrite import DeployWrapper, apply_rewrites

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientvit-b0")
    ap.add_argument("--dataset", default="camvid")
    ap.add_argument("--weights", default="camvid")
    ap.add_argument("--calib-data", type=Path, required=True)
    ap.add_argument("--calib-images", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=300, help="invokes per file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    started = provenance.start()

    try:  # user errors (unknown model or weights, missing calibration data) as one line, like the CLI
        loaded = load_model(args.model, args.dataset, args.weights)
        if MODELS[loaded.name].family != "efficientvit":
            raise EdgesegError(f"{loaded.name}: the op families ablated here are EfficientViT's; use an efficientvit-*")
        calib = select_calibration(args.calib_data, loaded.spec, args.calib_images)
    except EdgesegError as exc:
        ap.exit(2, f"error: {exc}\n")
    size = DEFAULT_INPUT[loaded.dataset]
    # what `edgeseg export --target tflite-int8` converts (its rewrites and the default head upsampling)
    deploy, _ = apply_rewrites(loaded.model, deploy_rewrites(loaded.name, "tflite", "int8"))
    calib = calib.inputs(size)
    example = torch.zeros(1, 3, *size)
    variants = _variants(deploy.eval())
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, module in variants.items():
            for precision in ("fp32", "int8"):
                path = Path(tmp) / f"{len(files)}.tflite"
                print(f"converting {name} ({precision})", flush=True)
                export_tflite(
                    DeployWrapper(module).eval(), example, path, precision, True, calib if precision == "int8" else None
                )
                files[f"{name}|{precision}"] = path
        samples = _time_files(files, args.rounds, args.threads)
    load_after = os.getloadavg()[0]

    ms = {k: statistics.median(v) for k, v in samples.items()}
    base = {p: ms[f"as exported|{p}"] for p in ("fp32", "int8")}
    print(
        f"\n{loaded.name} {size[0]}x{size[1]}, {args.threads} threads, median of {args.rounds} invokes per file "
        f"(shuffled round robin), load {load_before:.1f} -> {load_after:.1f}\n"
    )
    print("| op family | fp32 ms | int8 ms | int8 speed-up |")
    print("| --- | --- | --- | --- |")
    rows = {}
    for name in variants:
        if name == "as exported":
            cost = base
        else:
            cost = {p: base[p] - ms[f"{name}|{p}"] for p in ("fp32", "int8")}
        rows[name] = cost
    rest = {p: base[p] - sum(rows[n][p] for n in variants if n != "as exported") for p in ("fp32", "int8")}
    for name, cost in list(rows.items())[1:] + [("everything else", rest), ("whole model", base)]:
        ratio = cost["fp32"] / cost["int8"] if cost["int8"] > 0 else float("nan")
        print(f"| {name} | {cost['fp32']:.2f} | {cost['int8']:.2f} | {ratio:.2f}x |")
    if args.json:
        report = {
            "model": loaded.name,
            "size": list(size),
            "threads": args.threads,
            "invokes": args.rounds,
            "load": [load_before, load_after],
            "median_ms": ms,
            "family_cost_ms": {**rows, "everything else": rest},
            "provenance": provenance.finish(started),
        }
        atomic_write_bytes(args.json, json.dumps(report, indent=2).encode())


if __name__ == "__main__":
    main()
