"""ExecuTorch vs TFLite (both XNNPACK) for EfficientViT-Seg, side by side in one process.

For each model (shipped CamVid weights, 384x480): exports executorch-fp32 / -int8 and tflite-fp32 / -int8, takes
executorch-fp32's parity against PyTorch from its export (max abs diff, argmax agreement on CamVid val images),
evaluates every artifact and the PyTorch reference on CamVid val, then times the four artifacts round-robin
(``stats.interleave``: one call each in turn, the first rotating) at each thread count, and reports medians and the
ExecuTorch / TFLite ratio per pass (median, min, max) with the load average before and after. ExecuTorch's
delegation (partitions, ops left to the portable kernels) and an ETDump profile (1 thread) of its programs say
where its time goes. ``--extra`` models (untrained weights) are exported to executorch-fp32 for their delegation
only. A benchmark, not a test: the numbers go into docs/executorch.md (benchmarks/render_docs.py).

    python benchmarks/executorch_table.py --data ../shared/data/camvid --json out/executorch.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import provenance  # benchmarks/provenance.py (this script's folder is on sys.path)

from edgeseg.backends import load_artifact
from edgeseg.bench.host import inference_call
from edgeseg.bench.stats import interleave
from edgeseg.commands import evaluate as evaluate_cmd
from edgeseg.commands import export as export_cmd
from edgeseg.io import atomic_write_bytes

TARGETS = ("executorch-fp32", "executorch-int8", "tflite-fp32", "tflite-int8")


def _load() -> list[float] | None:
    return provenance.load_average()


def _per_pass(num: list[float], den: list[float]) -> dict:
    ratios = [a / b for a, b in zip(num, den)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def time_side_by_side(folders: dict[str, Path], threads: int, runs: int, warmup: int) -> dict:
    """Medians and ranges per artifact, and per pass (same round, same load) the ExecuTorch / TFLite ratio of each
    precision and ExecuTorch's int8 / fp32 ratio."""
    calls = {}
    for label, folder in folders.items():
        calls[label] = inference_call(load_artifact(folder, threads=threads))
    before = _load()
    (samples,) = interleave(list(calls.values()), runs, warmup)
    after = _load()
    by = dict(zip(calls, samples))
    out = {"threads": threads, "runs": runs, "warmup": warmup, "load_before": before, "load_after": after}
    out["median_ms"] = {k: statistics.median(v) for k, v in by.items()}
    out["range_ms"] = {k: [min(v), max(v)] for k, v in by.items()}
    for precision in ("fp32", "int8"):
        et, tfl = by.get(f"executorch-{precision}"), by.get(f"tflite-{precision}")
        if et and tfl:
            out[f"ratio_{precision}"] = _per_pass(et, tfl)
    first = next(iter(by))  # every artifact against the first one given, pass by pass
    out["ratio_to_first"] = {k: _per_pass(v, by[first]) for k, v in by.items() if k != first}
    for label in by:  # "executorch-int8<suffix>" against "executorch-fp32<suffix>" (e.g. two builds side by side)
        suffix = label.removeprefix("executorch-int8")
        if label.startswith("executorch-int8") and by.get(f"executorch-fp32{suffix}"):
            out[f"ratio_et_int8_fp32{suffix}"] = _per_pass(by[label], by[f"executorch-fp32{suffix}"])
    return out


def profile_summary(folder: Path, runs: int) -> dict:
    p = export_cmd.op_profile(folder, threads=1, runs=runs, warmup=2)
    return {
        "run_ms": p["run_ms"],
        "explained": p["explained"],
        "partitions": p["partitions"],
        "top_op_types": [
            {"op_type": r["op_type"], "count": r["count"], "ms": r["ms"], "share": r["share"], "path": r["path"]}
            for r in p["by_type"][:8]
        ],
        "off_path": p["off_path"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["efficientvit-b0", "efficientvit-b1"])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--size", default="384x480")
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument(
        "--max-miou-drop", default="off", help="int8 mixed-precision budget (points) or 'off' (quantize all)"
    )
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--limit", type=int, default=None, help="val images for mIoU (default: all)")
    ap.add_argument("--parity-images", type=int, default=10)
    ap.add_argument("--extra", nargs="*", default=["lvt", "segformer-b0"], help="exported with --weights random")
    ap.add_argument(
        "--time-only",
        nargs="*",
        default=None,
        metavar="TARGET=FOLDER",
        help="only time these exported artifacts side by side (labels: executorch-fp32, tflite-fp32, ...)",
    )
    ap.add_argument("--out", type=Path, default=Path("out/executorch"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    started = provenance.start()
    if args.time_only is not None:
        folders = {label: Path(folder) for label, folder in (item.split("=", 1) for item in args.time_only)}
        doc = {"time_only": {str(f): label for label, f in folders.items()}, "cpu_count": os.cpu_count()}
        doc["latency"] = [time_side_by_side(folders, threads, args.runs, 3) for threads in args.threads]
        doc["provenance"] = provenance.finish(started)
        if args.json:
            atomic_write_bytes(args.json, json.dumps(doc, indent=2, default=str).encode())
        print(json.dumps(doc["latency"], indent=1, default=str))
        return
    budget = None if args.max_miou_drop == "off" else float(args.max_miou_drop)
    common = dict(out=args.out, parity_data=args.data, parity_images=args.parity_images)
    int8 = dict(calib_data=args.data, calib_size=args.calib_size, max_miou_drop=budget)
    doc: dict = {"size": args.size, "max_miou_drop": budget, "models": {}, "extra": {}}
    for model in args.models:
        built = {}
        for target in TARGETS:
            print(f"export {model} {target}", flush=True)
            extra = int8 if target.endswith("int8") else {}
            built[target] = export_cmd.export(model, "camvid", "camvid", target, args.size, **common, **extra)
        row: dict = {"artifacts": {}, "eval": {}}
        for target, m in built.items():
            row["artifacts"][target] = {
                "folder": m["folder"],
                "bytes": m["bytes"],
                "export_seconds": m["export_seconds"],
                "parity": m["parity"],
                "lint_warnings": m["lint"]["warnings"],
                "delegation": m.get("delegation"),
                "mixed_precision": (m.get("quantization") or {}).get("mixed_precision"),
            }
        print(f"eval {model}", flush=True)
        ref = evaluate_cmd.evaluate(model, "camvid", "camvid", args.data, size=args.size, limit=args.limit, threads=2)
        row["eval"]["pytorch-fp32"] = {"miou": ref["miou"], "images": ref["images"]}
        for target, m in built.items():
            ev = evaluate_cmd.evaluate(None, None, None, args.data, artifact=Path(m["folder"]), limit=args.limit,
                                       threads=2)  # fmt: skip
            row["eval"][target] = {"miou": ev["miou"], "images": ev["images"], "runtime": ev.get("runtime")}
        folders = {t: Path(m["folder"]) for t, m in built.items()}
        row["latency"] = []
        for threads in args.threads:
            print(f"time {model} {threads} thread(s)", flush=True)
            row["latency"].append(time_side_by_side(folders, threads, args.runs, 3))
        row["profile"] = {t: profile_summary(folders[t], args.runs) for t in TARGETS if t.startswith("executorch")}
        doc["models"][model] = row
    for model in args.extra:
        print(f"export {model} executorch-fp32 (random weights)", flush=True)
        m = export_cmd.export(model, "camvid", "random", "executorch-fp32", None, **common)
        doc["extra"][model] = {
            "size": m["input"]["shape"][2:],
            "delegation": m["delegation"],
            "parity": m["parity"],
            "lint": m["lint"],
            "rewrites": m["rewrites"],
        }
    doc["threads_note"] = (
        "ExecuTorch's thread pool is process-wide (executorch.extension.pybindings.portable_lib."
        "_unsafe_reset_threadpool); each program resets it to its own count before it runs"
    )
    doc["cpu_count"] = os.cpu_count()
    doc["provenance"] = provenance.finish(started)
    if args.json:
        atomic_write_bytes(args.json, json.dumps(doc, indent=2, default=str).encode())
    print(json.dumps({k: v["latency"] for k, v in doc["models"].items()}, indent=1, default=str))


if __name__ == "__main__":
    main()
