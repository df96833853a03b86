"""Compare two sweeps of the same matrix (e.g. in-process vs a Ray cluster): the parts that must not depend on
where jobs ran (rows, artifact sizes, parity, mIoU, which cells are measured / estimated / failed) must be
equal; latencies are timings, so their ratio is printed instead (noisy on a shared machine).

    python benchmarks/sweep_compare.py sweep-local sweep-ray
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def _cells(folder: Path) -> dict:
    table = json.loads((folder / "sweep-table.json").read_text())
    out = {}
    for device in table["devices"]:
        report = json.loads((folder / device / "bench.json").read_text())
        for r in report["results"]:
            d = r["device"]
            m = d["measured"]
            latency = None if m is None else (m["stats"]["median_ms"] or m["stats"]["mean_ms"])
            estimate = None if d["estimate"] is None else round(d["estimate"]["latency_ms"], 3)
            stable = {
                "status": r["status"],
                "bytes": r["artifact"]["bytes"] if r["artifact"] else None,
                "parity": r["parity"]["argmax_agreement"] if r["parity"] else None,
                "miou": None if r["miou"] is None else round(r["miou"], 6),
                "measured": m is not None,
                "estimate": estimate,
            }
            out[(r["model"], r["size"], r["target"], device)] = (stable, latency)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    a, b = _cells(args.a), _cells(args.b)
    differ = 0
    if set(a) != set(b):
        print(f"cells only in {args.a}: {sorted(set(a) - set(b))}; only in {args.b}: {sorted(set(b) - set(a))}")
        differ += 1
    ratios = []
    print(f"| model | size | target | device | status | mIoU | {args.a.name} ms | {args.b.name} ms | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for key in sorted(set(a) & set(b), key=lambda k: tuple(str(x) for x in k)):
        (sa, la), (sb, lb) = a[key], b[key]
        same = sa == sb
        if not same:
            differ += 1
        ratio = lb / la if la and lb else None
        if ratio:
            ratios.append(ratio)
        miou = "-" if sa["miou"] is None else f"{100 * sa['miou']:.2f}"
        fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        mark = "" if same else f" DIFFERS: {sa} vs {sb}"
        cells = [*(str(x) for x in key), sa["status"], miou, fmt(la), fmt(lb), fmt(ratio)]
        print(f"| {' | '.join(cells)} |{mark}")
    if ratios:
        median = statistics.median(ratios)
        print(f"\nmedian latency ratio {args.b.name}/{args.a.name}: {median:.2f} over {len(ratios)} cells")
    print("stable parts equal" if not differ else f"{differ} cell(s) differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
