"""Median latency here of several artifact folders timed round-robin in one pass (one call each in turn), so every
artifact sees the same machine load: for tables that compare artifacts built by separate runs (e.g. two models'
``export_table.py`` runs, each of which saw a different load on a shared machine). A benchmark, not a test.

    python benchmarks/time_artifacts.py out/artifacts/lvt-camvid-*-384x480 --runs 9 [--json out.json]
    python benchmarks/time_artifacts.py FP32 INT8 --runs 25 --rounds 9 --baseline FP32   # speed-up vs FP32

With ``--rounds N`` the pass is repeated N times: the latency column is the median of the rounds' medians and,
with ``--baseline``, the speed-up is the median of the per-round ratios (range in brackets), so a load change
between rounds does not enter a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import provenance  # benchmarks/provenance.py (this script's folder is on sys.path)

from edgeseg.bench.host import time_interleaved
from edgeseg.io import atomic_write_bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", type=Path, nargs="+", help="artifact folders (those that cannot run here are skipped)")
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the round-robin pass N times")
    ap.add_argument("--baseline", type=Path, default=None, help="one of the folders: print speed-ups against it")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    started = provenance.start()

    labels = {}
    for f in args.folders:  # the folder name, or parent/name where two folders share a name
        same = sum(g.name == f.name for g in args.folders) > 1
        labels[f"{f.parent.name}/{f.name}" if same else f.name] = f
    baseline = next((k for k, f in labels.items() if args.baseline and f == args.baseline), None)
    if args.baseline and baseline is None:
        ap.error(f"--baseline {args.baseline} is not one of the folders")
    load_before = os.getloadavg()[0]
    rounds = [time_interleaved(labels, args.runs, args.warmup, args.threads) for _ in range(args.rounds)]
    load_after = os.getloadavg()[0]
    timed = rounds[0]
    head = f"latency ms (median of {args.runs}" + (f", median over {args.rounds} rounds" if args.rounds > 1 else "")
    print(f"| artifact | runtime | {head}, {args.threads} threads) |" + (" speed-up vs baseline |" if baseline else ""))
    print("| --- | --- | --- |" + (" --- |" if baseline else ""))
    summary = {}
    for name in timed:
        ms = statistics.median(r[name]["median_ms"] for r in rounds)
        row = f"| {name} | {timed[name]['runtime']} | {ms:.2f} |"
        summary[name] = {
            "runtime": timed[name]["runtime"],
            "median_ms": ms,
            "rounds_ms": [r[name]["median_ms"] for r in rounds],
        }
        if baseline:
            ratios = [r[baseline]["median_ms"] / r[name]["median_ms"] for r in rounds]
            summary[name]["speedup"] = statistics.median(ratios)
            row += f" {statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}] |"
        print(row)
    print(f"1-minute load average {load_before:.1f} before, {load_after:.1f} after")
    if args.json:
        doc = {
            "latency": summary,
            "load_average": [load_before, load_after],
            "threads": args.threads,
            "runs": args.runs,
            "rounds": args.rounds,
            "provenance": provenance.finish(started),
        }
        atomic_write_bytes(args.json, json.dumps(doc, indent=2).encode())


if __name__ == "__main__":
    main()
