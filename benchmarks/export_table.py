"""Export a model to every available target and print one markdown row per target: size, parity vs PyTorch on
real images, lint, export time. A benchmark, not a test: its numbers go into reports.

    python benchmarks/export_table.py --model efficientvit-b0 --weights camvid \
        --parity-data ../shared/data/camvid --parity-images 20 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgeseg import pipeline
from edgeseg.targets import TARGETS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientvit-b0")
    ap.add_argument("--dataset", default="camvid")
    ap.add_argument("--weights", default="camvid")
    ap.add_argument("--size", default="384x480")
    ap.add_argument("--parity-data", type=Path, default=None)
    ap.add_argument("--parity-images", type=int, default=20)
    ap.add_argument("--calib-data", type=Path, default=None, help="INT8 rows: train split (default: --parity-data)")
    ap.add_argument("--out", type=Path, default=Path("artifacts"))
    ap.add_argument("--targets", nargs="*", default=[t.name for t in TARGETS.values() if t.available])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    rows = []
    print(
        "| target | size MB | max abs diff | SNR dB | argmax agreement | mIoU artifact / PyTorch | parity runtime "
        "| lint | export s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.targets:
        m = pipeline.export(
            args.model,
            args.dataset,
            args.weights,
            name,
            args.size,
            args.out,
            parity_data=args.parity_data,
            parity_images=args.parity_images,
            force=True,
            calib_data=args.calib_data or args.parity_data,
        )
        p = m["parity"]
        lint = "clean" if m["lint"]["clean"] else f"{m['lint']['errors']} errors"
        if m["lint"]["warnings"]:
            lint += f", {m['lint']['warnings']} warnings"
        agree = "-" if p["argmax_agreement"] is None else f"{100 * p['argmax_agreement']:.3f} % ({p['images']} img)"
        diff = "-" if p["max_abs_diff"] is None else f"{p['max_abs_diff']:.2e}"
        snr = "-" if p["snr_db"] is None else f"{p['snr_db']:.1f}"
        miou = (
            "-"
            if p.get("miou_candidate") is None
            else f"{100 * p['miou_candidate']:.2f} / {100 * p['miou_reference']:.2f}"
        )
        print(
            f"| {name} | {m['bytes'] / 1e6:.2f} | {diff} | {snr} | {agree} | {miou} | {p['runtime']} | {lint} | "
            f"{m['export_seconds']:.1f} |",
            flush=True,
        )
        rows.append(m)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
