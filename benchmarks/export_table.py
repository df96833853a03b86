"""Export a model to every available target and print one markdown row per target: size, parity vs PyTorch on
real images, lint (with the largest tensor rank), export time, and with ``--latency`` the median latency here for
targets that run here (ONNX Runtime, LiteRT; same timing loop as ``edgeseg bench``). A benchmark, not a test: its
numbers go into reports.

    python benchmarks/export_table.py --model efficientvit-b0 --weights camvid \
        --parity-data ../shared/data/camvid --parity-images 20 [--latency] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgeseg import pipeline
from edgeseg.targets import TARGETS


def _max_rank(folder: Path) -> int | None:
    lint = folder / "lint.json"
    return json.loads(lint.read_text()).get("max_rank") if lint.is_file() else None


def _latency(folder: Path, threads: int) -> dict | None:
    """Median latency (ms) of the artifact here, or None where its runtime needs other hardware (Core ML, TensorRT)."""
    from edgeseg.bench.host import measure_here
    from edgeseg.bench.stats import TimingPlan
    from edgeseg.errors import EdgesegError

    try:
        timing, runtime, load = measure_here(folder, threads, TimingPlan(warmup=5, min_runs=20, max_seconds=15.0))
    except EdgesegError:
        return None
    return {"median_ms": timing.stats.median_ms, "runs": len(timing.samples_ms), "runtime": runtime, **load}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientvit-b0")
    ap.add_argument("--dataset", default="camvid")
    ap.add_argument("--weights", default="camvid")
    ap.add_argument(
        "--random-weights",
        type=int,
        default=None,
        metavar="SEED",
        help="untrained weights from this torch seed instead of --weights (models without shipped weights)",
    )
    ap.add_argument("--size", default="384x480")
    ap.add_argument("--parity-data", type=Path, default=None)
    ap.add_argument("--parity-images", type=int, default=20)
    ap.add_argument("--calib-data", type=Path, default=None, help="INT8 rows: train split (default: --parity-data)")
    ap.add_argument("--out", type=Path, default=Path("artifacts"))
    ap.add_argument("--targets", nargs="*", default=[t.name for t in TARGETS.values() if t.available])
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument("--max-miou-drop", default="0.5", help="INT8 budget in mIoU points, or 'off'")
    ap.add_argument("--latency", action="store_true", help="also time the artifacts that run here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    weights = args.weights
    if args.random_weights is not None:
        import torch

        from edgeseg.models.registry import create_model

        torch.manual_seed(args.random_weights)
        model, _ = create_model(args.model, args.dataset)
        args.out.mkdir(parents=True, exist_ok=True)
        weights = str(args.out / f"{args.model}-{args.dataset}-random-seed{args.random_weights}.pt")
        torch.save({"state_dict": model.state_dict()}, weights)

    rows = []
    print(
        "| target | size MB | max abs diff | SNR dB | argmax agreement | mIoU artifact / PyTorch | parity runtime "
        "| lint | max rank | export s |" + (" latency ms |" if args.latency else "")
    )
    print("| --- " * (10 + args.latency) + "|")
    for name in args.targets:
        m = pipeline.export(
            args.model,
            args.dataset,
            weights,
            name,
            args.size,
            args.out,
            parity_data=args.parity_data,
            parity_images=args.parity_images,
            force=True,
            calib_data=args.calib_data or args.parity_data,
            calib_size=args.calib_size,
            max_miou_drop=None if args.max_miou_drop == "off" else float(args.max_miou_drop),
        )
        folder = Path(m["folder"])
        m["max_rank"] = _max_rank(folder)
        m["latency"] = _latency(folder, args.threads) if args.latency else None
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
            f"{m['max_rank']} | {m['export_seconds']:.1f} |"
            + ("" if not args.latency else " - |" if m["latency"] is None else f" {m['latency']['median_ms']:.1f} |"),
            flush=True,
        )
        rows.append(m)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
