"""Validate the latency estimator (benchmark, not a test).

Host: export EfficientViT-Seg graphs (onnx-fp32 rewrites, random weights: latency does not depend on the
values), measure each here with ONNX Runtime (2 threads, edgeseg's timing loop: warm-up, then runs until the
median is stable or a cap), then predict every point from a calibration fitted on the others (leave-one-out) and
from a split by model. Published: the same leave-one-out on the EfficientViT-Seg README figures per device.

    .venv/bin/python benchmarks/estimate_validation.py [--skip-host] [--json out/estimate_validation.json]

The machine is shared (2 cores, other jobs running): host latencies are medians and still noisy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgeseg import pipeline
from edgeseg.bench.profiles import get_profile
from edgeseg.bench.stats import TimingPlan, measure
from edgeseg.estimate.calibrate import Point, held_out, leave_one_out, summarize

HOST_CASES = [
    ("efficientvit-b0", (384, 480)),
    ("efficientvit-b1", (384, 480)),
    ("efficientvit-b2", (384, 480)),
    ("efficientvit-l1", (384, 480)),
    ("efficientvit-b0", (512, 640)),
    ("efficientvit-b1", (512, 640)),
    ("efficientvit-b2", (256, 320)),
    ("efficientvit-l1", (256, 320)),
]
HOST_TARGET = "onnx-fp32"


def measure_host(cache: Path, plan: TimingPlan) -> list[Point]:
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeModel

    points = []
    for model, size in HOST_CASES:
        path, _ = pipeline.estimation_graph(model, "camvid", HOST_TARGET, size, "conv", cache)
        run = OnnxRuntimeModel(path, threads=2)
        x = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
        feed, names = {run.input_name: x}, [run.output_name]
        timing = measure(lambda s=run.session, f=feed, n=names: s.run(n, f), plan)
        ms = timing.stats.median_ms
        print(
            f"measured {model} {size[0]}x{size[1]}: median {ms:.1f} ms (n={timing.stats.n}, {timing.stop})", flush=True
        )
        cost = pipeline._cost_of(HOST_TARGET, path, from_float=True)
        points.append(Point(f"{model} {size[0]}x{size[1]} {HOST_TARGET}", cost, ms))
        del run
    return points


def table(device: str, rows) -> list[str]:
    out = []
    for r in rows:
        model, size, target = r.label.split(" ")
        out.append(
            f"| {model} | {size} | {device} ({target}) | {r.measured_ms:.1f} | {r.estimated_ms:.1f} | "
            f"{r.abs_pct_error:.1f} |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-host", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=pipeline.ESTIMATE_GRAPHS)
    args = ap.parse_args()
    results = {}
    lines = [
        "| model | size | device (target) | measured ms | estimated ms | abs % error |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for device in ("jetson-agx-orin", "jetson-nano", "snapdragon-8-gen-1"):
        prof = get_profile(device)
        pts, _ = pipeline._published_points(prof, pipeline.PUBLISHED_FIGURES, args.cache)
        for target, p in pts.items():
            rows = leave_one_out(p, prof.estimator)
            v = summarize(rows, "leave-one-out")
            results[device] = {"target": target, "validation": v.model_dump(), "rows": [r.__dict__ for r in rows]}
            lines += table(device, rows)
            print(
                f"{device} {target}: leave-one-out median {v.median_abs_pct_error:.1f} %, "
                f"max {v.max_abs_pct_error:.1f} %"
            )
    if not args.skip_host:
        host = get_profile("host")
        pts = measure_host(args.cache, TimingPlan(warmup=3, min_runs=15, max_runs=60, max_seconds=10, rel_ci=0.02))
        rows = leave_one_out(pts, host.estimator)
        v = summarize(rows, "leave-one-out")
        lines += table("host", rows)
        print(
            f"host {HOST_TARGET}: leave-one-out median {v.median_abs_pct_error:.1f} %, max {v.max_abs_pct_error:.1f} %"
        )
        # split by model: calibrate on b0 and b2, predict b1 and l1 (all sizes)
        train = [p for p in pts if p.label.split(" ")[0] in ("efficientvit-b0", "efficientvit-b2")]
        test = [p for p in pts if p not in train]
        split = held_out(train, test, host.estimator)
        vs = summarize(split, "calibrated on b0 + b2, predicting b1 + l1")
        print(f"host split by model: median {vs.median_abs_pct_error:.1f} %, max {vs.max_abs_pct_error:.1f} %")
        results["host"] = {
            "target": HOST_TARGET,
            "validation": v.model_dump(),
            "rows": [r.__dict__ for r in rows],
            "split_by_model": {"validation": vs.model_dump(), "rows": [r.__dict__ for r in split]},
        }
        lines.append("")
        lines += ["Host, split by model (calibrated on b0 + b2, predicting b1 + l1):", ""]
        lines += [
            "| model | size | device (target) | measured ms | estimated ms | abs % error |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += table("host", split)
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
