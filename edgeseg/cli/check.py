"""check: the CI regression gate (exit 1 on any failing row); writes check.md, JUnit XML and JSON."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from edgeseg.cli import app
from edgeseg.cli.common import (
    NoVerifyOpt,
    _progress_line,
    _write_json,
    artifact_checks,
    check_json_out,
    console,
    err_console,
    user_errors,
)
from edgeseg.commands import check as check_cmd
from edgeseg.io import atomic_write_bytes


@app.command()
@user_errors
@artifact_checks
def check(
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="The check config (see examples/edgeseg.yaml); default: ./edgeseg.yaml if present, else every artifact "
        "under --artifacts-dir with the absolute gates.",
    ),
    artifacts_dir: Path = typer.Option(
        Path("artifacts"), "--artifacts-dir", help="Without a config: the artifacts to gate (edgeseg export's --out)."
    ),
    baseline: Path | None = typer.Option(
        None, "--baseline", "-b", help="Baseline JSON (default: baseline.json beside the config, or here)."
    ),
    update_baseline: bool = typer.Option(
        False, "--update-baseline", help="Record this run as the baseline (and copy its artifacts beside it)."
    ),
    markdown: Path = typer.Option(Path("check.md"), "--markdown", help="Markdown summary (a pull-request comment)."),
    junit: Path | None = typer.Option(None, "--junit", help="JUnit XML: one test case per row (CI test reports)."),
    json_out: Path | None = typer.Option(None, "--json", help="Full report as JSON."),
    no_verify: NoVerifyOpt = False,
):
    """CI regression gate: export (cached) or take artifacts, evaluate, compare with the baseline; exit 1 on any
    failing row."""
    check_json_out(json_out)
    from edgeseg import check as chk

    with _progress_line("row", "check") as on_event:
        result = check_cmd.check(config, baseline, update_baseline, progress=on_event, artifacts_dir=artifacts_dir)
    r = result["report"]
    table = Table(title=f"edgeseg check {r.config} (baseline {r.baseline})")
    table.add_column("row", no_wrap=True)
    for col in ("status", "parity", "mIoU (PyTorch)", "latency vs baseline", "size", "lint"):
        table.add_column(col, overflow="fold")
    for row in r.rows:
        miou = chk.cell(row.gates, "miou")
        if row.miou is not None:
            miou = f"{100 * row.miou:.2f} ({100 * row.miou_reference:.2f})"
        table.add_row(
            row.row_id,
            "[green]pass[/]" if row.passed else "[bold red]FAIL[/]",
            *(escape(chk.cell(row.gates, g)) for g in ("parity",)),
            miou,
            *(escape(chk.cell(row.gates, g)) for g in ("latency", "size", "lint")),
        )
    console.print(table)
    for row in r.rows:
        if not row.passed:
            console.print(f"[bold red]FAIL[/] {escape(row.row_id)}: {escape(row.cause())}", highlight=False)
    console.print(f"mIoU on {r.data} ({r.images} images). Latency: {chk.LATENCY_NOTE}.", highlight=False)
    atomic_write_bytes(markdown, chk.markdown(r).encode())
    written = [str(markdown)]
    if junit:
        atomic_write_bytes(junit, chk.junit_xml(r))
        written.append(str(junit))
    if json_out:
        _write_json(json_out, r.as_dict())
        written.append(str(json_out))
    if result["baseline_written"]:
        written.append(f"baseline {result['baseline_written']}")
    elif update_baseline:
        err_console.print("baseline not updated: rows fail their absolute gates (fix them, then record again)")
    console.print(f"wrote {', '.join(written)}", highlight=False)
    passed = sum(row.passed for row in r.rows)
    console.print(f"{passed}/{len(r.rows)} rows passed in {r.seconds:.0f} s", highlight=False)
    if not r.passed:
        raise typer.Exit(1)
