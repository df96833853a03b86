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
    """Shipped weights: held-out and val mIoU (val marked where it shares sequences with training), rare-class IoU,
    training time, file, and the command that reproduces each."""
    if markdown:
        typer.echo(weights_cmd.shipped_weights_markdown())
        return
    table = Table(title="shipped weights (mIoU measured on the published fp16 file)")
    cols = ("model", "tag", "held-out mIoU", "val mIoU", *weights_cmd.RARE_CAMVID_CLASSES, "epochs", "train min")
    for col in (*cols, "file", "sha256"):
        table.add_column(col)
    rows = weights_cmd.shipped_weights_rows()
    for r in rows:
        table.add_row(
            r["model"],
            r["tag"],
            weights_cmd.held_out_text(r),
            weights_cmd.val_text(r),
            *(_pct(r["rare_iou"].get(c)) for c in weights_cmd.RARE_CAMVID_CLASSES),
            str(r["epochs"]),
            f"{r['train_minutes']:.0f}",
            r["file"],
            r["sha256"][:12],
        )
    console.print(table)
    for r in rows:
        if r["command"]:
            console.print(f"{r['model']} {r['tag']}: {r['command']}", soft_wrap=True, highlight=False)


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
