"""weights list / publish: the shipped-weights registry (``edgeseg.models.weights``) as tables, and publishing a
finished training run into it with its figures measured again on the published file: the selection split's (whole
held-out groups, when the run selected on groups) and the val split's, each with the groups it shares with the
training data."""

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
        {"epoch": h["epoch"], "loss": round(h["loss"], 4), "select_miou": round(h["val_miou"], 4)}
        for h in log["history"]
        if "val_miou" in h
    ]
    split = log.get("split") or {}
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
        "split": split,
    }
    target = weights_mod.publish(run / "best.pt", model_name, tag, record)
    data = Path(cfg["data"])
    figures = {}
    if cfg.get("select_groups"):
        pooled = ",".join(s for s in dict.fromkeys([*cfg["train_split"].split(","), cfg["val_split"]]) if s != "none")
        sel = evaluate(model_name, dataset, tag, data, split=pooled, groups=list(cfg["select_groups"]))
        figures.update(
            select_miou=sel["miou"],
            select_split=sel["split"],
            select_iou=sel["iou"],
            select_shares_training_groups=sel["shares_training_groups"],
        )
    if cfg["val_split"] != "none":
        result = evaluate(model_name, dataset, tag, data, split=cfg["val_split"])
        figures.update(
            val_miou=result["miou"],
            val_split=cfg["val_split"],
            val_pixel_accuracy=result["pixel_accuracy"],
            val_iou=result["iou"],
            val_shares_training_groups=result["shares_training_groups"],
        )
    record = weights_mod.update_record(model_name, tag, **figures)
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
                    "val_shares": (rec.get("split") or {}).get("select_shares_groups")
                    if rec.get("val_split", "val") == (rec.get("split") or {}).get("select")
                    else rec.get("val_shares_training_groups"),
                    "select_miou": rec.get("select_miou"),
                    "select_split": rec.get("select_split"),
                    "rare_iou": {c: iou.get(c) for c in RARE_CAMVID_CLASSES if c in spec.classes},
                    "epochs": rec["epochs"],
                    "best_epoch": rec.get("best_epoch"),
                    "train_minutes": rec["train_seconds"] / 60,
                    "hardware": rec["hardware"],
                    "file": rec["file"],
                    "bytes": rec.get("bytes"),
                    "sha256": rec["sha256"],
                    "command": rec.get("command"),
                }
            )
    return rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def shipped_weights_markdown() -> str:
    """The README's shipped-weights table, generated from the registry (a test keeps the README in sync)."""
    lines = [
        "| model | tag | held-out mIoU | val mIoU | pole | sign | pedestrian | bicyclist | epochs (best) "
        "| training time | hardware |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in shipped_weights_rows():
        rare = [_pct(r["rare_iou"].get(c)) for c in RARE_CAMVID_CLASSES]
        lines.append(
            f"| {r['model']} | {r['tag']} | {held_out_text(r)} | {val_text(r)} | " + " | ".join(rare) + " | "
            f"{r['epochs']} ({r['best_epoch']}) | {r['train_minutes']:.0f} min | {r['hardware']} |"
        )
    return "\n".join(lines)


def held_out_text(row: dict) -> str:
    """The selection figure on whole held-out groups, or a dash where the weights were selected on a shared split."""
    if row.get("select_miou") is None:
        return "-"
    return f"{_pct(row['select_miou'])} ({row['select_split']})"


def val_text(row: dict) -> str:
    """The val figure, marked when val shares groups with the training data (it then overstates generalisation)."""
    shared = row.get("val_shares")
    return _pct(row["val_miou"]) + (f" (shares {', '.join(shared)} with training)" if shared else "")


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
    if cfg.get("train_split", "train") != "train":
        args += ["--train-split", cfg["train_split"]]
    if cfg.get("val_split", "val") != "val":
        args += ["--val-split", cfg["val_split"]]
    if cfg.get("select_groups"):
        args += ["--select-groups", ",".join(cfg["select_groups"])]
    if cfg.get("precision", "fp32") != "fp32":
        args += ["--precision", cfg["precision"]]
    if cfg.get("channels_last"):
        args += ["--channels-last"]
    if cfg.get("ema_decay"):
        args += ["--ema", cfg["ema_decay"]]
    args += ["--out", cfg["out"]]
    return shlex.join(str(a) for a in args)  # shell-quoted: it is printed to be pasted
