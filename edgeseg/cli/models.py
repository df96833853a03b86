"""models, eval, predict, train: the registered models, and running one (or an exported artifact) on images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from edgeseg.cli import app
from edgeseg.cli.common import (
    DatasetOpt,
    ModelOpt,
    NoVerifyOpt,
    OptModelOpt,
    SplitOpt,
    WeightsOpt,
    _parse_hw,
    _write_json,
    artifact_checks,
    check_json_out,
    console,
    err_console,
    model_options,
    notice,
    user_errors,
)
from edgeseg.commands import evaluate as evaluate_cmd
from edgeseg.paths import SAMPLE_DATA

FitOpt = Annotated[str, typer.Option("--fit", help="Make H, W multiples of 32: 'pad' (exact, default) or 'resize'.")]
SizeOpt = Annotated[
    str | None, typer.Option("--size", help="Network input HxW (multiples of 32); default: the image rounded up.")
]
ArtifactOpt = Annotated[
    Path | None,
    typer.Option(
        "--artifact",
        "-a",
        help="An artifact folder from `edgeseg export` (instead of --model/--weights), run with its runtime here.",
    ),
]


class _Bar:
    """A rich progress bar driven by command events ("start", "advance"); it appears only once work starts, so
    an input error before that prints its one line and nothing else."""

    def __init__(self, description: str):
        self.description, self.progress, self.task = description, None, None

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, kind: str, **fields) -> None:
        if kind == "start":
            if "fit" in fields:
                err_console.print(f"input: {fields['fit']}")
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err_console,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=fields.get("total"))
        elif kind == "advance" and self.task is not None:
            self.progress.advance(self.task)


@app.command()
@user_errors
def models(
    size: str | None = typer.Option(None, "--size", help="Count MACs at HxW instead of each dataset's default input."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the table as JSON."),
):
    """List registered models: dataset heads, classes, params, GMACs, shipped weights."""
    check_json_out(json_out)
    rows = evaluate_cmd.models_table(size)
    table = Table(title="edgeseg models")
    for col in ("model", "dataset", "classes", "params M", "input", "GMACs", "weights"):
        table.add_column(col, justify="right" if col in ("classes", "params M", "GMACs") else "left", no_wrap=True)
    for r in rows:
        table.add_row(
            r["model"],
            r["dataset"],
            str(r["classes"]),
            f"{r['params_m']:.3f}",
            r["input"],
            f"{r['gmacs']:.2f}",
            r["weights"] or "-",
        )
    console.print(table)
    if json_out:
        _write_json(json_out, {"models": rows})


def _metrics_table(report: dict) -> Table:
    table = Table(
        title=f"{report['model']} ({report.get('target', 'reference')}, {report['runtime']}) on "
        f"{report['data']} [{report['split']}], "
        f"{report['images']} images"
    )
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for name, iou in report["iou"].items():
        table.add_row(name, "-" if iou is None else f"{100 * iou:.2f}")
    table.add_section()
    table.add_row("[bold]mIoU", f"[bold]{100 * report['miou']:.2f}")
    if report.get("miou_ci95"):
        lo, hi = report["miou_ci95"]
        table.add_row(f"mIoU 95 % interval ({report['images']} images)", f"{100 * lo:.2f} - {100 * hi:.2f}")
    table.add_row("pixel accuracy", f"{100 * report['pixel_accuracy']:.2f}")
    return table


@app.command("eval")
@user_errors
@model_options
@artifact_checks
def eval_cmd(
    model: OptModelOpt = None,
    artifact: ArtifactOpt = None,
    dataset: DatasetOpt = None,
    weights: WeightsOpt = None,
    data: Path = typer.Option(
        SAMPLE_DATA,
        "--data",
        help="Folder with SPLIT/images and SPLIT/labels (default: the bundled CamVid sample).",
    ),
    split: SplitOpt = "val",
    fit: FitOpt = "pad",
    size: SizeOpt = None,
    limit: int | None = typer.Option(None, "--limit", help="Only the first N images."),
    groups: str | None = typer.Option(
        None, "--groups", help="Only the images of these groups (CamVid: sequences, e.g. 0001TP), comma-separated."
    ),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON."),
    upsample: str | None = typer.Option(
        None,
        "--upsample",
        help="Evaluate with a deploy head upsampling (matmul | conv | resize | bilinear), not the reference model.",
    ),
    no_verify: NoVerifyOpt = False,
    ignore_invalid_labels: bool = typer.Option(
        False,
        "--ignore-invalid-labels",
        help="Count label values outside the classes and the ignore index as unlabelled (default: an error).",
    ),
):
    """mIoU, pixel accuracy and per-class IoU on a labelled split."""
    check_json_out(json_out)
    with _Bar("eval") as bar:
        report = evaluate_cmd.evaluate(
            model,
            dataset,
            weights,
            data,
            split,
            fit,
            size,
            limit,
            threads,
            progress=bar,
            upsample=upsample,
            artifact=artifact,
            notice=notice,
            groups=[g.strip() for g in groups.split(",") if g.strip()] if groups else None,
            ignore_invalid_labels=ignore_invalid_labels,
        )
    console.print(_metrics_table(report))
    console.print(
        f"mIoU {100 * report['miou']:.2f}  pixel accuracy {100 * report['pixel_accuracy']:.2f}  "
        f"({report['images']} images, {report['seconds']:.1f} s)"
    )
    if json_out:
        _write_json(json_out, report)


@app.command()
@user_errors
@model_options
@artifact_checks
def predict(
    model: OptModelOpt = None,
    artifact: ArtifactOpt = None,
    dataset: DatasetOpt = None,
    weights: WeightsOpt = None,
    images: Path = typer.Option(..., "--images", help="Folder of .jpg/.png images."),
    out: Path = typer.Option(..., "--out", help="Output folder for label PNGs."),
    overlay: bool = typer.Option(False, "--overlay", help="Also write colour overlays to OUT/overlay."),
    fit: FitOpt = "pad",
    size: SizeOpt = None,
    no_verify: NoVerifyOpt = False,
    force: bool = typer.Option(False, "--force", help="Replace files in OUT that predict did not write."),
):
    """Write one 8-bit class-index PNG per image (same stem, same size), optionally colour overlays."""
    with _Bar("predict") as bar:
        written = evaluate_cmd.predict(
            model, dataset, weights, images, out, overlay, fit, size, progress=bar, artifact=artifact, force=force
        )
    console.print(
        f"wrote {len(written)} label map(s) to {out}"
        + (f" and overlays to {out / 'overlay'} (class colours: legend.png there)" if overlay else "")
    )


def _groups_text(groups: dict[str, int]) -> str:
    return ", ".join(f"{g} {n}" for g, n in groups.items()) or "none"


@app.command()
@user_errors
@model_options
def train(
    model: ModelOpt,
    dataset: str = typer.Option("camvid", "--dataset", "-d"),
    data: Path = typer.Option(..., "--data", help="Folder with train/ and val/ (images/ + labels/)."),
    out: Path = typer.Option(..., "--out", help="Run folder: last.pt, best.pt, train.json."),
    epochs: int = typer.Option(150, "--epochs"),
    batch_size: int = typer.Option(8, "--batch-size"),
    crop: str = typer.Option("320x320", "--crop", help="Random crop HxW (multiple of 32)."),
    brightness: float = typer.Option(
        0.25, "--brightness", help="Brightness jitter: factor drawn in 1 +- this (0.6: 0.4x-1.6x, dusk to glare)."
    ),
    gamma: float = typer.Option(0.0, "--gamma", help="Gamma jitter: exponent in [1/(1+g), 1+g], log-uniform; 0: off."),
    lr: float = typer.Option(2e-3, "--lr"),
    weight_decay: float = typer.Option(0.05, "--weight-decay"),
    warmup_epochs: float = typer.Option(3.0, "--warmup-epochs", help="Linear LR warm-up length (short runs: < 1)."),
    loss: str = typer.Option("wce", "--loss", help="ce | wce (class-weighted CE) | ohem"),
    eval_every: int = typer.Option(5, "--eval-every"),
    seed: int = typer.Option(0, "--seed"),
    threads: int | None = typer.Option(None, "--threads"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after N steps (smoke runs)."),
    limit_train: int | None = typer.Option(None, "--limit-train", help="Use only the first N train images."),
    limit_val: int | None = typer.Option(None, "--limit-val", help="Use only the first N val images."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt."),
    train_split: str = typer.Option("train", "--train-split", help="Split(s) to train on, comma-separated."),
    val_split: str = typer.Option("val", "--val-split", help="Selection split; none: a fixed schedule."),
    select_groups: str | None = typer.Option(
        None,
        "--select-groups",
        help="Select on these whole groups (CamVid: sequences, e.g. 0001TP), held out of the pooled splits.",
    ),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | bf16 (autocast; about 1.5x on AVX512-BF16)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="NHWC activations (faster convs on CPU)."),
    ema: float | None = typer.Option(None, "--ema", help="EMA decay of the weights (e.g. 0.999): evaluate/ship it."),
):
    """Train a model (CPU, or CUDA when present); best and last checkpoints and train.json in OUT."""
    from edgeseg.train.trainer import TrainConfig

    cfg = TrainConfig(
        model=model,
        dataset=dataset,
        data=str(data),
        out=str(out),
        epochs=epochs,
        batch_size=batch_size,
        crop=_parse_hw(crop, "--crop"),
        brightness=brightness,
        gamma=gamma,
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        loss=loss,
        eval_every=eval_every,
        seed=seed,
        threads=threads,
        max_steps=max_steps,
        limit_train=limit_train,
        limit_val=limit_val,
        train_split=train_split,
        val_split=val_split,
        select_groups=tuple(g.strip() for g in (select_groups or "").split(",") if g.strip()),
        precision=precision,
        channels_last=channels_last,
        ema_decay=ema,
    )
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "epoch {task.fields[epoch]} loss {task.fields[loss]:.4f} lr {task.fields[lr]:.2e} "
            "{task.fields[ips]:.1f} img/s best mIoU {task.fields[best]}"
        ),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    )
    state = {"task": None}

    def report(kind: str, **f):
        if kind == "start":
            sp = f["split"]
            err_console.print(
                f"training {model} on {f['images']} images ({_groups_text(sp['train_groups'])}), device "
                f"{f['device']}; selecting on {sp['select']} ({_groups_text(sp['select_groups'])})"
            )
            progress.start()  # only now: an input error before this prints just its one line
            state["task"] = progress.add_task(
                "train", total=f["total_steps"], completed=f["done_steps"], epoch=0, loss=0.0, lr=0.0, ips=0.0, best="-"
            )
        elif kind == "step":
            progress.update(
                state["task"], completed=f["step"], epoch=f["epoch"], loss=f["loss"], lr=f["lr"], ips=f["ips"]
            )
        elif kind == "warning":
            (progress.console if state["task"] is not None else err_console).print(f["text"], markup=False)
        elif kind == "eval":
            progress.update(state["task"], best=f"{100 * f['best']:.2f}")
            raw = f"; raw weights {100 * f['raw_miou']:.2f}" if f.get("raw_miou") is not None else ""
            line = f"epoch {f['epoch']}: val mIoU {100 * f['miou']:.2f} (best {100 * f['best']:.2f}{raw})"
            progress.console.print(line)

    try:
        result = evaluate_cmd.train(cfg, progress=report, resume=resume)
    finally:
        if state["task"] is not None:  # started: an input error before that is its one line alone
            progress.stop()
    console.print(
        (
            f"best selection mIoU {100 * result.best_miou:.2f} at epoch {result.best_epoch}"
            if result.best_miou >= 0
            else f"fixed schedule: epoch {result.best_epoch} shipped as best.pt"
        )
        + f"; checkpoints in {result.out}"
    )
