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
import functools
import json
import os
import time
from pathlib import Path

import numpy as np
import provenance  # benchmarks/provenance.py (this script's folder is on sys.path)

from edgeseg.bench.profiles import get_profile
from edgeseg.bench.stats import TimingPlan, measure
from edgeseg.commands import estimate as estimate_cmd
from edgeseg.estimate.calibrate import Point, held_out, leave_one_out, summarize
from edgeseg.io import atomic_write_bytes

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


def measure_host(cache: Path, max_runs: int = 40, min_runs: int = 8, max_cpu_seconds: float = 10.0) -> list[Point]:
    """Each case timed with ONNX Runtime on one intra-op thread (it runs in the calling thread), as CPU time per
    inference (edgeseg's timing loop with the process-time clock): on a machine shared with other jobs, wall time
    mostly measures their load, while the CPU time of one thread is what the inference costs on an idle core."""
    import onnxruntime as ort

    points = []
    for model, size in HOST_CASES:
        path, _ = estimate_cmd.estimation_graph(model, "camvid", HOST_TARGET, size, "conv", cache)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
        feed, names = {session.get_inputs()[0].name: x}, [session.get_outputs()[0].name]
        plan = TimingPlan(warmup=2, min_runs=min_runs, max_runs=max_runs, max_seconds=max_cpu_seconds)
        c = measure(functools.partial(session.run, names, feed), plan, timer=time.process_time).stats  # CPU time
        print(
            f"measured {model} {size[0]}x{size[1]}: CPU time median {c.median_ms:.1f} ms "
            f"(95 % CI {c.median_ci95_ms[0]:.1f}-{c.median_ci95_ms[1]:.1f}), n={c.n}, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        cost = estimate_cmd.graph_cost_for(HOST_TARGET, path, from_float=True)
        points.append(Point(f"{model} {size[0]}x{size[1]} {HOST_TARGET}", cost, c.median_ms))
    return points


def host_estimator(hw):
    """The host profile's estimator data at one thread (its peaks are for its 2 threads)."""
    peaks = {
        k: v.model_copy(update={"value": v.value / 2, "source": v.source + "; halved for one thread"})
        for k, v in hw.peak_gflops.items()
    }
    return hw.model_copy(update={"peak_gflops": peaks})


def flops_baseline(points: list[Point]) -> float:
    """Median abs % error, leave-one-out, of the naive baseline latency = k * FLOPs (k fitted on the others)."""
    errs = []
    for i, p in enumerate(points):
        rest = points[:i] + points[i + 1 :]
        k = float(np.exp(np.mean([np.log(q.measured_ms / q.cost.flops) for q in rest])))
        errs.append(100 * abs(k * p.cost.flops - p.measured_ms) / p.measured_ms)
    return float(np.median(errs))


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
    ap.add_argument("--cache", type=Path, default=estimate_cmd.ESTIMATE_GRAPHS)
    args = ap.parse_args()
    started = provenance.start()
    results = {}
    family_rows: list[str] = []
    lines = [
        "| model | size | device (target) | measured ms | estimated ms | abs % error |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for device in ("jetson-agx-orin", "jetson-nano", "snapdragon-8-gen-1"):
        prof = get_profile(device)
        pts, _, _ = estimate_cmd.published_points(prof, estimate_cmd.PUBLISHED_FIGURES, args.cache)
        for target, p in pts.items():
            rows = leave_one_out(p, prof.estimator)
            v = summarize(rows, "leave-one-out")
            results[device] = {
                "target": target,
                "validation": v.model_dump(),
                "rows": [r.__dict__ for r in rows],
                "flops_baseline_median_abs_pct_error": flops_baseline(p),
            }
            print(f"{device}: FLOPs-proportional baseline, leave-one-out median {flops_baseline(p):.1f} %")
            lines += table(device, rows)
            if device == "jetson-agx-orin":  # split by family: calibrate on the B series, predict L1 and L2
                train = [q for q in p if "-b" in q.label.split(" ")[0]]
                test = [q for q in p if q not in train]
                fam = held_out(train, test, prof.estimator)
                vf = summarize(fam, "calibrated on b0-b3, predicting l1 and l2")
                results[device]["split_by_family"] = {"validation": vf.model_dump(), "rows": [r.__dict__ for r in fam]}
                family_rows = table(device, fam)
                print(
                    f"{device}: {vf.method}: median {vf.median_abs_pct_error:.1f} %, max {vf.max_abs_pct_error:.1f} %"
                )
            print(
                f"{device} {target}: leave-one-out median {v.median_abs_pct_error:.1f} %, "
                f"max {v.max_abs_pct_error:.1f} %"
            )
    if not args.skip_host:
        host = get_profile("host")
        pts = measure_host(args.cache)
        hw = host_estimator(host.estimator)
        rows = leave_one_out(pts, hw)
        v = summarize(rows, "leave-one-out")
        lines += table("host", rows)
        print(
            f"host {HOST_TARGET}: leave-one-out median {v.median_abs_pct_error:.1f} %, max {v.max_abs_pct_error:.1f} %"
        )
        # split by model: calibrate on b0 and b2, predict b1 and l1 (all sizes)
        train = [p for p in pts if p.label.split(" ")[0] in ("efficientvit-b0", "efficientvit-b2")]
        test = [p for p in pts if p not in train]
        split = held_out(train, test, hw)
        vs = summarize(split, "calibrated on b0 + b2, predicting b1 + l1")
        print(f"host split by model: median {vs.median_abs_pct_error:.1f} %, max {vs.max_abs_pct_error:.1f} %")
        results["host"] = {
            "target": HOST_TARGET,
            "validation": v.model_dump(),
            "rows": [r.__dict__ for r in rows],
            "flops_baseline_median_abs_pct_error": flops_baseline(pts),
            "split_by_model": {"validation": vs.model_dump(), "rows": [r.__dict__ for r in split]},
        }
        lines.append("")
        lines += ["Host, split by model (calibrated on b0 + b2, predicting b1 + l1):", ""]
        lines += [
            "| model | size | device (target) | measured ms | estimated ms | abs % error |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += table("host", split)
    lines += ["", "Jetson AGX Orin, split by family (calibrated on b0-b3, predicting l1 and l2):", ""]
    lines += [lines[0], lines[1]] + family_rows
    print("\n".join(lines))
    if args.json:
        results["provenance"] = provenance.finish(started)  # beside the per-device entries
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.json, (json.dumps(results, indent=2) + "\n").encode())


if __name__ == "__main__":
    main()
