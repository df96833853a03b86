"""Benchmark (not a test): does bf16 autocast + channels_last train as well as fp32 at equal epochs?

    python benchmarks/train_equal_epochs.py --model efficientvit-b0 --epochs 20 --json out/train-equal-epochs.json

Runs ``edgeseg.train`` once per configuration with everything else equal (seed, split, schedule, augmentations:
the same batches in the same order; by default the held-out recipe of docs/weights.md, brightness 0.6, gamma 0.5,
EMA 0.999), selecting on whole held-out CamVid sequences (``--select-groups``), one after
the other or, with ``--parallel``, at the same time with ``--threads`` each. Reported per configuration: the
selection-split mIoU at every evaluation, the best and the last, and the training images/s (steps only). The runs
are short: they compare the two numerics at equal epochs, they do not reproduce the shipped weights.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import provenance  # noqa: E402

from edgeseg.train.trainer import TrainConfig, train  # noqa: E402

CONFIGS = {
    "fp32": dict(precision="fp32", channels_last=False),
    "bf16+channels_last": dict(precision="bf16", channels_last=True),
}


def run_one(label: str, args) -> dict:
    out = args.out / label
    cfg = TrainConfig(
        model=args.model,
        dataset="camvid",
        data=str(args.data),
        out=str(out),
        epochs=args.epochs,
        eval_every=args.eval_every,
        threads=args.threads,
        train_split="train,val",
        select_groups=args.select_groups.split(","),
        seed=0,
        brightness=args.brightness,
        gamma=args.gamma,
        ema_decay=args.ema,
        **CONFIGS[label],
    )
    result = train(cfg)
    record = json.loads((out / "train.json").read_text())
    history = record["history"]
    evals = [(h["epoch"], round(h["val_miou"] * 100, 2)) for h in history if "val_miou" in h]
    return {
        "select_miou_per_eval": evals,
        "best_select_miou": max(m for _, m in evals),
        "last_select_miou": evals[-1][1],
        "images_per_s_median": round(statistics.median(h["images_per_s"] for h in history), 2),
        "best_epoch": result.best_epoch,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientvit-b0")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/camvid"))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--select-groups", default="0001TP")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--brightness", type=float, default=0.6, help="photometric jitter, as edgeseg train")
    ap.add_argument("--gamma", type=float, default=0.5, help="gamma jitter, as edgeseg train")
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay, as edgeseg train (0: none)")
    ap.add_argument("--parallel", action="store_true", help="run the configurations at the same time")
    ap.add_argument("--out", type=Path, default=Path("out/train-equal-epochs"))
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    args.ema = args.ema or None
    started = provenance.start()
    if args.parallel:
        # one process per run: torch's thread pool is per process
        with ProcessPoolExecutor(len(CONFIGS), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {label: pool.submit(run_one, label, args) for label in CONFIGS}
            results = {label: f.result() for label, f in futures.items()}
    else:
        results = {label: run_one(label, args) for label in CONFIGS}
    doc = {
        "model": args.model,
        "epochs": args.epochs,
        "select_groups": args.select_groups,
        "threads": args.threads,
        "recipe": {"brightness": args.brightness, "gamma": args.gamma, "ema": args.ema},
        "results": results,
        "provenance": provenance.finish(started),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
