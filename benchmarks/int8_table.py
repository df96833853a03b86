"""INT8 vs fp32 for one model: mIoU on a labelled split and latency measured side by side in one process.

Exports onnx-fp32, onnx-int8 (one artifact per calibration method, mixed-precision search to the default mIoU
budget), tflite-fp32 and tflite-int8 (all with the default exact bicubic-as-matmul head), plus both fp32 formats
with the earlier exact bicubic-as-conv head and with the head upsampling switched to bilinear (the fast-but-inexact
baseline the exact heads are compared with), evaluates every artifact on CamVid val
with its runtime here, then times them interleaved (same input, ORT intra-op spinning off so sessions do not steal
each other's cores) and prints medians, the speed-up against the same format's fp32 and against the best fp32
artifact, and (``--profile``) the op types that take the time in ORT fp32 and int8 (``edgeseg op-profile``).
A benchmark, not a test: numbers go into the README and reports.

    python benchmarks/int8_table.py --model efficientvit-b0 --data ../shared/data/camvid [--no-eval] [--profile]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import provenance  # benchmarks/provenance.py (this script's folder is on sys.path)

from edgeseg.bench.host import time_interleaved
from edgeseg.commands import evaluate as evaluate_cmd
from edgeseg.commands import export as export_cmd
from edgeseg.io import atomic_write_bytes


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
    ap.add_argument("--no-eval", action="store_true", help="latency only (the artifacts' mIoU is not measured)")
    ap.add_argument("--profile", action="store_true", help="top op types of onnx-fp32 and onnx-int8 (ORT profiler)")
    args = ap.parse_args()
    started = provenance.start()

    common = dict(out=args.out, parity_data=args.data, parity_images=20)
    built = {"onnx-fp32": export_cmd.export(args.model, args.dataset, args.weights, "onnx-fp32", **common)}
    for method in args.methods:
        built[f"onnx-int8 ({method})"] = export_cmd.export(
            args.model,
            args.dataset,
            args.weights,
            "onnx-int8",
            calib_data=args.data,
            calib_size=args.calib_size,
            calib_method=method,
            **common,
        )

    built["tflite-fp32"] = export_cmd.export(args.model, args.dataset, args.weights, "tflite-fp32", **common)
    for fmt in ("onnx", "tflite"):
        for upsample in ("conv", "bilinear"):
            built[f"{fmt}-fp32 ({upsample} head)"] = export_cmd.export(
                args.model, args.dataset, args.weights, f"{fmt}-fp32", upsample=upsample, **common
            )
    built["tflite-int8 (PT2E)"] = export_cmd.export(
        args.model,
        args.dataset,
        args.weights,
        "tflite-int8",
        calib_data=args.data,
        calib_size=args.calib_size,
        **common,
    )

    if args.no_eval:
        reference, evals = None, {k: None for k in built}
    else:
        reference = evaluate_cmd.evaluate(args.model, args.dataset, args.weights, args.data, threads=args.threads)
        evals = {
            k: evaluate_cmd.evaluate(None, None, None, args.data, artifact=Path(m["folder"]), threads=args.threads)
            for k, m in built.items()
        }
    timed = time_interleaved({k: Path(m["folder"]) for k, m in built.items()}, args.runs, 3, args.threads)
    ms = {k: t["median_ms"] for k, t in timed.items()}
    best_fp32 = min((k for k in ms if "fp32" in k and "bilinear" not in k), key=ms.get)

    images = f"CamVid val {reference['images']} images" if reference else "mIoU not measured (--no-eval)"
    print(f"{args.model} ({args.dataset}), {images}, {args.threads} threads, median of {args.runs} interleaved runs")
    print(f"best fp32 artifact with the exact bicubic head: {best_fp32} ({ms[best_fp32]:.1f} ms)")
    print("| artifact | val mIoU | vs PyTorch fp32 | median ms | vs its fp32 | vs best fp32 | int8 ops | size MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    if reference:
        print(f"| PyTorch fp32 (reference) | {100 * reference['miou']:.2f} | | | | | | |")
    for k, m in built.items():
        ops = m.get("quantization", {}).get("int8_nodes", {})
        miou = (
            f"{100 * evals[k]['miou']:.2f} | {100 * (evals[k]['miou'] - reference['miou']):+.2f}"
            if reference
            else "- | -"
        )
        print(
            f"| {k} | {miou} | {ms[k]:.1f} | {ms[k.split('-')[0] + '-fp32'] / ms[k]:.2f}x | "
            f"{ms[best_fp32] / ms[k]:.2f}x | "
            + (", ".join(f"{op} {n}" for op, n in ops.items()) or "-")
            + f" | {m['bytes'] / 1e6:.2f} |"
        )
    profiles = {}
    if args.profile:
        for k in [k for k in built if k.startswith("onnx-") and "head" not in k]:
            p = export_cmd.op_profile(built[k]["folder"], threads=args.threads, runs=args.runs, warmup=3)
            profiles[k] = p
            top = ", ".join(f"{r['op_type']} {100 * r['share']:.0f}%" for r in p["by_type"][:6])
            off = "; ".join(f"{kind} {100 * o['share']:.0f}%" for kind, o in p["off_path"].items())
            print(f"profile {k}: {p['run_ms']:.1f} ms, explained {100 * p['explained']:.0f}%: {top} | {off}")
    if args.json:
        doc = {
            "reference": reference,
            "artifacts": built,
            "eval": evals,
            "latency": timed,
            "profiles": profiles,
            "provenance": provenance.finish(started),
        }
        atomic_write_bytes(args.json, json.dumps(doc, indent=2).encode())


if __name__ == "__main__":
    main()
