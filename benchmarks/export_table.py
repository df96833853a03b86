"""Export a model to every available target and print one markdown row per target: size, parity vs PyTorch on
real images, lint (with the largest tensor rank), export time, and with ``--latency`` the median latency here for
targets that run here (ONNX Runtime, LiteRT: all artifacts timed round-robin in one pass, median of ``--runs``; a
target whose export fails is listed with its error). A benchmark, not a test: its
numbers go into reports. With ``--miou-data`` each artifact that runs here is also evaluated on the val split
(``edgeseg.commands.evaluate.evaluate`` with the artifact, as ``edgeseg eval --artifact``; ``--miou-images`` caps the
images) beside the PyTorch fp32 model on the same images, so the column shows what each target's conversion changes.

    python benchmarks/export_table.py --model efficientvit-b0 --weights camvid \
        --parity-data ../shared/data/camvid --parity-images 20 [--latency] \
        [--miou-data ../shared/data/camvid --miou-images 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import provenance  # benchmarks/provenance.py (this script's folder is on sys.path)

from edgeseg.backends import TARGETS
from edgeseg.bench.host import time_interleaved
from edgeseg.commands import evaluate as evaluate_cmd
from edgeseg.commands import export as export_cmd
from edgeseg.errors import EdgesegError
from edgeseg.io import atomic_write_bytes


def _max_rank(folder: Path) -> int | None:
    lint = folder / "lint.json"
    return json.loads(lint.read_text()).get("max_rank") if lint.is_file() else None


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
    ap.add_argument("--targets", nargs="*", default=list(TARGETS))
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument("--max-miou-drop", default="0.5", help="INT8 budget in mIoU points, or 'off'")
    ap.add_argument("--latency", action="store_true", help="also time the artifacts that run here (round-robin)")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per artifact with --latency")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--miou-data", type=Path, default=None, help="val mIoU per artifact on this dataset folder")
    ap.add_argument("--miou-images", type=int, default=None, help="first N val images (default: all)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    started = provenance.start()

    weights = args.weights
    if args.random_weights is not None:
        import torch

        from edgeseg.models.registry import create_model

        torch.manual_seed(args.random_weights)
        model, _ = create_model(args.model, args.dataset)
        args.out.mkdir(parents=True, exist_ok=True)
        weights = str(args.out / f"{args.model}-{args.dataset}-random-seed{args.random_weights}.pt")
        torch.save({"state_dict": model.state_dict()}, weights)

    rows, failed = [], []
    for name in args.targets:
        try:
            m = export_cmd.export(
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
        except EdgesegError as exc:  # a target this model cannot reach yet is a row of the table, not the end of it
            failed.append({"target": name, "error": str(exc)})
            print(f"{name}: export failed: {exc}", flush=True)
            continue
        m["max_rank"] = _max_rank(Path(m["folder"]))
        rows.append(m)
    # all artifacts timed round-robin in one pass, so every row sees the same machine load
    timed = (
        time_interleaved({m["target"]: Path(m["folder"]) for m in rows}, args.runs, 5, args.threads)
        if args.latency
        else {}
    )
    val = _val_miou(args, weights, rows) if args.miou_data else None
    print(
        "| target | size MB | max abs diff | SNR dB | argmax agreement | mIoU artifact / PyTorch | parity runtime "
        "| lint | max rank | export s |" + (" latency ms |" if args.latency else "") + (" val mIoU |" if val else "")
    )
    print("| --- " * (10 + args.latency + bool(val)) + "|")
    for m in rows:
        m["latency"] = timed.get(m["target"])
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
            f"| {m['target']} | {m['bytes'] / 1e6:.2f} | {diff} | {snr} | {agree} | {miou} | {p['runtime']} | {lint} | "
            f"{m['max_rank']} | {m['export_seconds']:.1f} |"
            + ("" if not args.latency else " - |" if m["latency"] is None else f" {m['latency']['median_ms']:.1f} |")
            + ("" if not val else f" {_miou_cell(m['val_miou'], val['reference'])} |")
        )
    if val:
        print(f"val mIoU: {val['images']} CamVid val images; PyTorch fp32 {100 * val['reference']['miou']:.2f}")
    for f in failed:
        print(f"| {f['target']} | export failed: {f['error']} |")
    if args.json:
        doc = {
            "rows": rows,
            "failed": failed,
            **({"val_miou_reference": val["reference"]} if val else {}),
            "provenance": provenance.finish(started),
        }
        atomic_write_bytes(args.json, json.dumps(doc, indent=2).encode())


def _val_miou(args, weights: str, rows: list[dict]) -> dict:
    """Val mIoU of the PyTorch fp32 model and of each artifact that runs here, on the same images; sets
    ``row["val_miou"]`` (None where the runtime needs other hardware)."""
    reference = evaluate_cmd.evaluate(
        args.model, args.dataset, weights, args.miou_data, size=args.size, limit=args.miou_images, threads=args.threads
    )
    print(f"PyTorch fp32: val mIoU {100 * reference['miou']:.2f} ({reference['images']} images)", flush=True)
    for m in rows:
        try:
            report = evaluate_cmd.evaluate(
                None,
                None,
                None,
                args.miou_data,
                artifact=Path(m["folder"]),
                limit=args.miou_images,
                threads=args.threads,
            )
        except EdgesegError as exc:  # Core ML prediction off macOS, TensorRT without CUDA
            m["val_miou"] = None
            print(f"{m['target']}: val mIoU not measured here: {exc}", flush=True)
            continue
        m["val_miou"] = {k: report[k] for k in ("miou", "pixel_accuracy", "images", "seconds", "runtime")}
        print(f"{m['target']}: val mIoU {100 * report['miou']:.2f}", flush=True)
    return {"reference": {k: reference[k] for k in ("miou", "pixel_accuracy", "images")}, "images": reference["images"]}


def _miou_cell(row: dict | None, reference: dict) -> str:
    if row is None:
        return "-"
    delta = round(100 * (row["miou"] - reference["miou"]), 2) + 0.0  # + 0.0: no "-0.00"
    return f"{100 * row['miou']:.2f} ({delta:+.2f})"


if __name__ == "__main__":
    main()
