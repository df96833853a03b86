"""sweep: a models x targets x devices x sizes matrix as cached jobs, shown live while it runs."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from edgeseg.cli import app
from edgeseg.cli.common import console, user_errors
from edgeseg.commands import sweep as sweep_cmd


class _SweepDisplay:
    """The matrix while it runs: one row per artifact job (export -> quantize -> mIoU), a column per device, each
    cell the job's state. On a terminal it is a live table; in a log, one line per job event."""

    def __init__(self):
        self.live, self.rows, self.devices, self.cells = None, [], [], {}

    def _table(self) -> Table:
        table = Table(title="edgeseg sweep", title_justify="left")
        for col in ["artifact", "export + mIoU", *self.devices]:
            table.add_column(col, overflow="fold")
        for label in self.rows:
            table.add_row(label, *(self.cells.get((label, c), "") for c in ["export", *self.devices]))
        return table

    def __call__(self, kind: str, **f) -> None:
        from rich.live import Live

        if kind == "start":
            self.rows, self.devices = f["artifacts"], f["devices"]
            self.cells = {(label, device): "-" for label, device in f["cells"]}
            if console.is_terminal:
                self.live = Live(self._table(), console=console, refresh_per_second=4, transient=True)
                self.live.start()
            return
        if kind != "job":
            return
        column = f.get("device") or "export"
        text = f["status"] + (f" ({f['node']})" if f.get("node") and f["status"] == "done" else "")
        self.cells[(f["label"], column)] = text
        if self.live is not None:
            self.live.update(self._table())
        else:
            reason = f": {f['reason']}" if f.get("reason") else ""
            console.print(f"sweep: {f['label']} [{column}] {text}{reason}", highlight=False, markup=False)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


@app.command()
@user_errors
def sweep(
    matrix: Path = typer.Option(..., "--matrix", help="The sweep matrix YAML (see examples/sweep.yaml)."),
    out: Path = typer.Option(Path("sweep"), "--out", help="Folder for the cache, artifacts and reports."),
    cluster: str | None = typer.Option(
        None,
        "--cluster",
        help="Run on a Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: in this process).",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an unfinished sweep in --out."),
):
    """Run a models x targets x devices x sizes matrix as cached jobs: export, quantize, mIoU, then bench."""
    display = _SweepDisplay()
    try:
        result = sweep_cmd.sweep(
            matrix,
            out,
            cluster=cluster,
            resume=resume,
            command="edgeseg " + " ".join(sys.argv[1:]) if sys.argv[1:] else None,
            progress=display,
        )
    finally:
        display.close()
    from edgeseg.sweep.report import row_cells, table_head

    table = result["table"]
    view = Table(title=f"sweep {matrix}", title_justify="left")
    for col in table_head(table):
        view.add_column(col, overflow="fold")
    for row in table["rows"]:
        view.add_row(*(escape(c) for c in row_cells(table, row)))
    console.print(view)
    jobs = result["jobs"].values()
    cached = sum(j["status"] == "cached" for j in jobs)
    console.print(
        f"{len(result['jobs'])} jobs, {cached} from the cache, {result['failed']} failed. Latency cells are "
        "measured medians; '~N ms estimate' is computed (roofline), not measured.",
        highlight=False,
    )
    for j in jobs:
        if j["status"] == "failed":
            where = f" on {j['device']}" if j.get("device") else ""
            console.print(f"failed: {j['label']}{where}: {j.get('reason')}", highlight=False, markup=False)
    paths = result["paths"]
    console.print(f"wrote {paths['html']}, {paths['md']} and one bench report per device in {out}", highlight=False)
    if result["failed"]:
        raise typer.Exit(1)
