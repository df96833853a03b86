"""weights list / publish: the shipped-weights registry (``edgeseg.models.weights``) as tables, and publishing a
finished training run into it with its val mIoU measured again on the published file."""

from __future__ import annotations

import json
import platform
import shlex
from pathlib import Path

from edgeseg.commands.evaluate import evaluate
from edgeseg.data.datasets import DATASETS
from edgeseg.errors import EdgesegError
from edgeseg.models import weights as weights_mod
from edgeseg.models.registry import resolve_model_name


def publish_weights(run: Path, tag: str, command: str | None = None, hardware: str | None = None) -> dict:
    """Register ``run/best.pt`` as shipped weights: fp16 file + index entry with mIoU, epochs, command, hash.

    The recorded val mIoU is measured again on the published fp16 file (not copied from training), so
    ``edgeseg eval --weights TAG`` reproduces it.
    """
    run = Path(run)
    log_path = run / "train.json"
    if not log_path.is_file() or not (run / "best.pt").is_file():
        raise EdgesegError(f"{run} is not a finished training run (needs best.pt and train.json)")
    log = json.loads(log_path.read_text())
    cfg = log["config"]
    model_name, dataset = resolve_model_name(cfg["model"], cfg["dataset"])
    curve = [
        {"epoch": h["epoch"], "loss": round(h["loss"], 4), "val_miou": round(h["val_miou"], 4)}
        for h in log["history"]
        if "val_miou" in h
    ]
    record = {
        "dataset": dataset,
        "epochs": len(log["history"]),
        "best_epoch": log["best_epoch"],
        "command": command or _train_command(cfg),
        "train_config": cfg,
        "train_seconds": round(sum(h["seconds"] for h in log["history"]), 1),  # training steps; evals excluded
        "hardware": hardware
        or f"{platform.processor() or platform.machine()}, {log['threads']} threads, {log['device']}",
        "curve": curve,
    }
    target = weights_mod.publish(run / "best.pt", model_name, tag, record)
    result = evaluate(model_name, dataset, tag, Path(cfg["data"]), split=cfg["val_split"])
    record = weights_mod.update_record(
        model_name,
        tag,
        val_miou=result["miou"],
        val_split=cfg["val_split"],
        val_pixel_accuracy=result["pixel_accuracy"],
        val_iou=result["iou"],
    )
    return {"file": str(target), **record}


RARE_CAMVID_CLASSES = ("pole", "sign", "pedestrian", "bicyclist")


def shipped_weights_rows() -> list[dict]:
    """One row per shipped weights file: what the README table and ``edgeseg weights list`` show.

    Every number comes from the registry (measured on the published fp16 file at publish time).
    """
    rows = []
    for model_name, tags in weights_mod.read_index().items():
        for tag, rec in tags.items():
            spec = DATASETS[rec["dataset"]]
            iou = rec.get("val_iou") or {}  # class name -> IoU
            rows.append(
                {
                    "model": model_name,
                    "tag": tag,
                    "val_miou": rec.get("val_miou"),
                    "rare_iou": {c: iou.get(c) for c in RARE_CAMVID_CLASSES if c in spec.classes},
                    "epochs": rec["epochs"],
                    "best_epoch": rec.get("best_epoch"),
                    "train_minutes": rec["train_seconds"] / 60,
                    "hardware": rec["hardware"],
                    "file": rec["file"],
                    "bytes": rec.get("bytes"),
                    "sha256": rec["sha256"],
                }
            )
    return rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def shipped_weights_markdown() -> str:
    """The README's shipped-weights table, generated from the registry (a test keeps the README in sync)."""
    lines = [
        "| model | tag | val mIoU | pole | sign | pedestrian | bicyclist | epochs (best) | training time | hardware |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in shipped_weights_rows():
        rare = [_pct(r["rare_iou"].get(c)) for c in RARE_CAMVID_CLASSES]
        lines.append(
            f"| {r['model']} | {r['tag']} | {_pct(r['val_miou'])} | " + " | ".join(rare) + " | "
            f"{r['epochs']} ({r['best_epoch']}) | {r['train_minutes']:.0f} min | {r['hardware']} |"
        )
    return "\n".join(lines)


def _train_command(cfg: dict) -> str:
    args = ["edgeseg", "train", "--model", cfg["model"], "--dataset", cfg["dataset"], "--data", cfg["data"]]
    args += ["--epochs", cfg["epochs"], "--batch-size", cfg["batch_size"]]
    args += ["--crop", f"{cfg['crop'][0]}x{cfg['crop'][1]}"]
    args += ["--lr", cfg["lr"]]
    if cfg.get("warmup_epochs", 3.0) != 3.0:
        args += ["--warmup-epochs", cfg["warmup_epochs"]]
    args += ["--loss", cfg["loss"], "--eval-every", cfg["eval_every"], "--seed", cfg["seed"]]
    if cfg.get("threads"):
        args += ["--threads", cfg["threads"]]
    args += ["--out", cfg["out"]]
    return shlex.join(str(a) for a in args)  # shell-quoted: it is printed to be pasted
