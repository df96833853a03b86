"""weights list / publish: the shipped weights (the `edgeseg weights` sub-app)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgeseg.cli import weights_app
from edgeseg.cli.common import _pct, console, user_errors
from edgeseg.commands import weights as weights_cmd


@weights_app.command("list")
@user_errors
def weights_list(
    markdown: bool = typer.Option(False, "--markdown", help="Print the README's markdown table instead."),
):
    """Shipped weights with their recorded val mIoU (and rare-class IoU), training time and hardware."""
    if markdown:
        typer.echo(weights_cmd.shipped_weights_markdown())
        return
    table = Table(title="shipped weights (val mIoU measured on the published fp16 file)")
    for col in ("model", "tag", "val mIoU", *weights_cmd.RARE_CAMVID_CLASSES, "epochs", "train min", "file", "sha256"):
        table.add_column(col)
    for r in weights_cmd.shipped_weights_rows():
        table.add_row(
            r["model"],
            r["tag"],
            _pct(r["val_miou"], 2),
            *(_pct(r["rare_iou"].get(c)) for c in weights_cmd.RARE_CAMVID_CLASSES),
            str(r["epochs"]),
            f"{r['train_minutes']:.0f}",
            r["file"],
            r["sha256"][:12],
        )
    console.print(table)


@weights_app.command("publish")
@user_errors
def weights_publish(
    run: Path = typer.Option(..., "--run", help="A finished training run folder (best.pt, train.json)."),
    tag: str = typer.Option(..., "--tag", help="Registry tag, e.g. camvid."),
    command: str | None = typer.Option(None, "--command", help="The training command to record."),
    hardware: str | None = typer.Option(None, "--hardware", help="Where it was trained, to record."),
):
    """Ship a run's best checkpoint as fp16 weights and record its (re-measured) val mIoU and sha256."""
    record = weights_cmd.publish_weights(run, tag, command, hardware)
    console.print(
        f"published {record['file']}: val mIoU {100 * record['val_miou']:.2f}, sha256 {record['sha256'][:12]}"
    )
