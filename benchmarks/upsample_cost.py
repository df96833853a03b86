"""What each deploy head-upsampling variant costs in mIoU, measured side by side in one run on a labelled split.

The reference model upsamples its head with bicubic interpolation. `matmul` (the default rewrite) computes the
same bicubic exactly as two matmuls with constant interpolation matrices, `conv` exactly as pad + depthwise
convolutions, `resize` keeps the bicubic Resize op, `bilinear` is the approximation for backends without bicubic.
A benchmark, not a test: its numbers go into the README and reports.

    python benchmarks/upsample_cost.py --model efficientvit-b0 --weights camvid --data ../shared/data/camvid
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import provenance  # benchmarks/provenance.py (this script's folder is on sys.path)

from edgeseg.commands import evaluate as evaluate_cmd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientvit-b0")
    ap.add_argument("--dataset", default="camvid")
    ap.add_argument("--weights", default="camvid")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--variants", nargs="*", default=["reference", "matmul", "conv", "bilinear"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    started = provenance.start()

    reports = {}
    for variant in args.variants:
        reports[variant] = evaluate_cmd.evaluate(
            args.model,
            args.dataset,
            args.weights,
            args.data,
            split=args.split,
            threads=args.threads,
            upsample=None if variant == "reference" else variant,
        )
    ref = reports.get("reference")
    classes = list(next(iter(reports.values()))["iou"])
    print(f"| head upsampling | images | mIoU | delta vs reference | {' | '.join(classes)} |")
    print("| --- " * (4 + len(classes)) + "|")
    for variant, r in reports.items():
        delta = "-" if ref is None else f"{100 * (r['miou'] - ref['miou']):+.2f}"
        ious = " | ".join(f"{100 * r['iou'][c]:.1f}" for c in classes)
        print(f"| {variant} | {r['images']} | {100 * r['miou']:.2f} | {delta} | {ious} |")
    if args.json:
        # one entry per variant, plus the provenance record beside them
        args.json.write_text(json.dumps({**reports, "provenance": provenance.finish(started)}, indent=2))


if __name__ == "__main__":
    main()
