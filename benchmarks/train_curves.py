"""Benchmark report (not a test): training runs side by side, from their ``train.json`` logs.

    python benchmarks/train_curves.py base=runs/b0-base jitter=runs/b0-jitter --json out/train-curves.json \
        --plot docs/generated/train-curves.png

Each ``LABEL=DIR`` names a finished (or interrupted) ``edgeseg train --out DIR``. Per run the JSON records the
recipe (model, training and selection groups, epochs, precision, photometric jitter, EMA), the selection-split
mIoU at every evaluation (and the raw weights' beside an EMA's), the best and the last evaluation with their
per-class IoU, and the median images/s and 1-minute load average over the epochs. ``--plot`` draws the selection
mIoU against the epoch, one line per run (dashed: the raw weights of an EMA run). Nothing is re-measured: the
figures are the ones the trainer logged while it ran, on the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import provenance  # noqa: E402

RECIPE_KEYS = (
    "model",
    "epochs",
    "batch_size",
    "crop",
    "precision",
    "channels_last",
    "brightness",
    "gamma",
    "ema_decay",
    "loss",
    "lr",
    "seed",
    "threads",
    "select_groups",
    "train_split",
    "val_split",
)


def fail(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit 2, nothing written."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_record(label: str, run_dir: Path) -> dict:
    """One run's recipe, curve, best and last evaluation, from ``run_dir/train.json``."""
    log_path = run_dir / "train.json"
    if not log_path.is_file():
        fail(f"{log_path} not found: pass LABEL=DIR of an `edgeseg train --out DIR` run")
    try:
        log = json.loads(log_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        fail(f"{log_path} is not a readable train.json ({exc}): pass the --out folder of an `edgeseg train` run")
    history = log.get("history") or []
    evals = [h for h in history if "val_miou" in h]
    config = log.get("config") or {}
    split = log.get("split") or {}
    best = max(evals, key=lambda h: h["val_miou"]) if evals else None
    last = evals[-1] if evals else None
    loads = [h["load_1min"] for h in history if "load_1min" in h]
    return {
        "label": label,
        "dir": str(run_dir),
        "recipe": {k: config.get(k) for k in RECIPE_KEYS},
        "train_groups": split.get("train_groups"),
        "select_groups": split.get("select_groups"),
        "select_shares_groups": split.get("select_shares_groups"),
        "epochs_done": len(history),
        "curve": [{"epoch": h["epoch"], "miou": h["val_miou"], "raw_miou": h.get("raw_val_miou")} for h in evals],
        "best": _evaluation(best),
        "last": _evaluation(last),
        "images_per_s_median": statistics.median(h["images_per_s"] for h in history) if history else None,
        "load_1min_median": statistics.median(loads) if loads else None,
        "torch": log.get("torch"),
    }


def _evaluation(h: dict | None) -> dict | None:
    if h is None:
        return None
    return {"epoch": h["epoch"], "miou": h["val_miou"], "raw_miou": h.get("raw_val_miou"), "iou": h.get("val_iou")}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    for r in runs:
        epochs = [c["epoch"] for c in r["curve"]]
        (line,) = ax.plot(epochs, [100 * c["miou"] for c in r["curve"]], marker="o", ms=3, label=r["label"])
        raw = [(c["epoch"], 100 * c["raw_miou"]) for c in r["curve"] if c["raw_miou"] is not None]
        if raw:
            ax.plot(*zip(*raw), ls="--", lw=1, color=line.get_color(), label=f"{r['label']} (raw weights)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mIoU on the selection split (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=DIR")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--plot", type=Path, help="PNG of the selection mIoU curves")
    args = ap.parse_args()
    started = provenance.start()
    runs = []
    for spec in args.runs:
        label, sep, folder = spec.partition("=")
        if not sep or not label or not folder:
            fail(f"{spec!r} is not LABEL=DIR (e.g. jitter=runs/b0-jitter)")
        runs.append(run_record(label, Path(folder)))
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(runs, args.plot)
    doc = {"runs": runs, "plot": str(args.plot) if args.plot else None, "provenance": provenance.finish(started)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(args.json)
    for r in runs:
        best, last = r["best"] or {}, r["last"] or {}
        print(
            f"{r['label']}: best {100 * best.get('miou', float('nan')):.2f} at epoch {best.get('epoch')}, "
            f"last {100 * last.get('miou', float('nan')):.2f} at epoch {last.get('epoch')}"
        )


if __name__ == "__main__":
    main()
