"""Median latency here of several artifact folders timed round-robin in one pass (one call each in turn), so every
artifact sees the same machine load: for tables that compare artifacts built by separate runs (e.g. two models'
``export_table.py`` runs, each of which saw a different load on a shared machine). A benchmark, not a test.

    python benchmarks/time_artifacts.py out/artifacts/lvt-camvid-*-384x480 --runs 9 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from edgeseg.bench.host import time_interleaved
from edgeseg.io import atomic_write_bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", type=Path, nargs="+", help="artifact folders (those that cannot run here are skipped)")
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    load_before = os.getloadavg()[0]
    timed = time_interleaved({f.name: f for f in args.folders}, args.runs, args.warmup, args.threads)
    load_after = os.getloadavg()[0]
    print(f"| artifact | runtime | latency ms (median of {args.runs}, {args.threads} threads) |")
    print("| --- | --- | --- |")
    for name, t in timed.items():
        print(f"| {name} | {t['runtime']} | {t['median_ms']:.1f} |")
    print(f"1-minute load average {load_before:.1f} before, {load_after:.1f} after")
    if args.json:
        doc = {"latency": timed, "load_average": [load_before, load_after], "threads": args.threads}
        atomic_write_bytes(args.json, json.dumps(doc, indent=2).encode())


if __name__ == "__main__":
    main()
