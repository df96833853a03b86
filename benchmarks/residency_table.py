"""Residency before and after the residency rewrites: for each model x target, export twice (``before``: the
rewrites that keep graphs on the mobile accelerators disabled; ``after``: edgeseg's defaults) and record each
artifact's residency records (the manifest's, written at export: ORT's NNAPI / Core ML partitioner for ONNX,
XNNPACK and the GPU delegate for TFLite), its rewrites and its parity against PyTorch. A target none of those
rewrites is declared for exports once and is listed under both. With ``--latency`` the ONNX CPU latency of one
model before and after is timed side by side in one process (round-robin, 1 thread by default), with the load
average.

    python benchmarks/residency_table.py --out /tmp/residency --json out/residency.json --latency
    python benchmarks/render_docs.py out/residency.json --out docs/residency.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
from pathlib import Path

import provenance  # benchmarks/provenance.py (this script's folder is on sys.path)

from edgeseg.commands import export as export_cmd
from edgeseg.io import atomic_write_bytes
from edgeseg.models.registry import MODELS, deploy_rewrites
from edgeseg.rewrite import REWRITES

# The rewrites that exist to keep graphs resident on the accelerators; "before" exports without them.
RESIDENCY_REWRITES = (
    "hardswish-as-clip",
    "attention-normaliser-matmul",
    "gelu-erfc-rational",
    "layernorm-matmul-fp32",
)
SHIPPED = ("efficientvit-b0", "efficientvit-b1")  # models with shipped weights; the others use --weights random


def _disable(names) -> dict:
    saved = {n: REWRITES[n] for n in names}
    for n in names:
        REWRITES[n] = dataclasses.replace(REWRITES[n], default=False)
    return saved


def _export(model: str, target: str, out: Path) -> dict:
    weights = None if model in SHIPPED else "random"
    m = export_cmd.export(model, None, weights, target, out=out)
    return {
        "folder": m["folder"],
        "rewrites": m["rewrites"],
        "nodes": m.get("nodes"),
        "parity": {k: m["parity"].get(k) for k in ("max_abs_diff", "argmax_agreement", "images", "runtime")},
        "residency": m.get("residency") or [],
        "residency_error": m.get("residency_error"),
        "untrained": m.get("untrained"),
    }


def _time_side_by_side(before: Path, after: Path, runs: int, warmup: int, threads: int) -> dict:
    from edgeseg.backends import load_artifact
    from edgeseg.bench.host import inference_call
    from edgeseg.bench.stats import interleave

    arts = [load_artifact(Path(f), threads=threads) for f in (before, after)]
    load_start = os.getloadavg()
    (samples,) = interleave([inference_call(a) for a in arts], runs, warmup)
    load_end = os.getloadavg()
    out = {"threads": threads, "runs": runs, "warmup": warmup, "load_start": load_start, "load_end": load_end}
    for name, ms in zip(("before", "after"), samples, strict=True):
        out[name] = {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms)}
    ratios = [a / b for a, b in zip(samples[1], samples[0], strict=True)]  # pairwise, the same pass
    out["ratio_after_before"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    out["runtime"] = arts[0].runtime
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["efficientvit-b0", "efficientvit-b1", "lvt", "segformer-b0"])
    ap.add_argument("--targets", nargs="*", default=["onnx-fp32", "onnx-fp16", "tflite-fp32", "tflite-fp16"])
    ap.add_argument("--out", type=Path, default=Path("artifacts/residency"))
    ap.add_argument("--latency", action="store_true", help="time --latency-model onnx-fp32 before vs after")
    ap.add_argument("--latency-model", default="efficientvit-b0")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    started = provenance.start()
    rows = []
    for model in args.models:
        if model not in MODELS:
            raise SystemExit(f"error: unknown model {model}")
        for target in args.targets:
            fmt, precision = target.split("-", 1)
            fmt = {"trt": "tensorrt"}.get(fmt, fmt)
            after_rw = deploy_rewrites(model, fmt, precision)
            saved = _disable(RESIDENCY_REWRITES)
            try:
                before_rw = deploy_rewrites(model, fmt, precision)
                before = _export(model, target, args.out / "before")
            finally:
                REWRITES.update(saved)
            same = before_rw == after_rw
            after = before if same else _export(model, target, args.out / "after")
            rows.append({"model": model, "target": target, "same_artifact": same, "before": before, "after": after})
            print(f"{model} {target}: done", flush=True)
    doc = {"rows": rows, "residency_rewrites": list(RESIDENCY_REWRITES)}
    if args.latency:
        folder = f"{args.latency_model}-camvid-onnx-fp32-384x480"
        doc["latency"] = {
            "model": args.latency_model,
            "target": "onnx-fp32",
            **_time_side_by_side(
                args.out / "before" / folder, args.out / "after" / folder, args.runs, args.warmup, args.threads
            ),
        }
    doc["provenance"] = provenance.finish(started)
    text = json.dumps(doc, indent=2) + "\n"
    if args.json:
        atomic_write_bytes(args.json, text.encode())
    else:
        print(text)


if __name__ == "__main__":
    main()
