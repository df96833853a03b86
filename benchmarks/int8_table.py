"""INT8 vs fp32 for one model: mIoU on a labelled split and latency measured side by side in one process.

Exports onnx-fp32, onnx-int8 (one artifact per calibration method), tflite-fp32 and tflite-int8, evaluates every
artifact on CamVid val with its runtime here, then times them interleaved (same input, ORT intra-op spinning off
so sessions do not steal each other's cores) and prints medians.
A benchmark, not a test: numbers go into the README and reports.

    python benchmarks/int8_table.py --model efficientvit-b0 --data ../shared/data/camvid
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from edgeseg import pipeline
from edgeseg.runtimes import load_artifact


def time_interleaved(folders: dict[str, str], runs: int, warmup: int, threads: int) -> dict[str, float]:
    """Median ms per artifact, runs interleaved round-robin so machine noise hits all alike."""
    loaded = {k: load_artifact(Path(f), threads=threads) for k, f in folders.items()}
    h, w = next(iter(loaded.values())).input_size
    x = torch.randn(1, 3, h, w)
    times: dict[str, list[float]] = {k: [] for k in loaded}
    for i in range(warmup + runs):
        for k, art in loaded.items():
            t0 = time.perf_counter()
            art.run(x)
            if i >= warmup:
                times[k].append(1000 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientvit-b0")
    ap.add_argument("--dataset", default="camvid")
    ap.add_argument("--weights", default="camvid")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument("--methods", nargs="*", default=["minmax", "percentile"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("out/int8"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    common = dict(out=args.out, parity_data=args.data, parity_images=20)
    built = {"onnx-fp32": pipeline.export(args.model, args.dataset, args.weights, "onnx-fp32", **common)}
    for method in args.methods:
        built[f"onnx-int8 ({method})"] = pipeline.export(
            args.model,
            args.dataset,
            args.weights,
            "onnx-int8",
            calib_data=args.data,
            calib_size=args.calib_size,
            calib_method=method,
            **common,
        )

    built["tflite-fp32"] = pipeline.export(args.model, args.dataset, args.weights, "tflite-fp32", **common)
    built["tflite-int8 (PT2E)"] = pipeline.export(
        args.model,
        args.dataset,
        args.weights,
        "tflite-int8",
        calib_data=args.data,
        calib_size=args.calib_size,
        **common,
    )

    reference = pipeline.evaluate(args.model, args.dataset, args.weights, args.data, threads=args.threads)
    evals = {
        k: pipeline.evaluate(None, None, None, args.data, artifact=Path(m["folder"]), threads=args.threads)
        for k, m in built.items()
    }
    ms = time_interleaved({k: m["folder"] for k, m in built.items()}, args.runs, 3, args.threads)

    print(f"{args.model} ({args.dataset}), CamVid val {reference['images']} images, {args.threads} threads")
    print("| artifact | val mIoU | vs PyTorch fp32 | median ms | speed-up vs its fp32 | int8 ops | size MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| PyTorch fp32 (reference) | {100 * reference['miou']:.2f} | | | | | |")
    for k, m in built.items():
        ops = m.get("quantization", {}).get("int8_nodes", {})
        print(
            f"| {k} | {100 * evals[k]['miou']:.2f} | {100 * (evals[k]['miou'] - reference['miou']):+.2f} | "
            f"{ms[k]:.1f} | {ms[k.split('-')[0] + '-fp32'] / ms[k]:.2f}x | "
            + (", ".join(f"{op} {n}" for op, n in ops.items()) or "-")
            + f" | {m['bytes'] / 1e6:.2f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"reference": reference, "artifacts": built, "eval": evals, "ms": ms}, indent=2)
        )


if __name__ == "__main__":
    main()
