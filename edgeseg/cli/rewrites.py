"""rewrites: the rewrite catalogue, and the graph-pass patterns a model matches."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from edgeseg.cli import app
from edgeseg.cli.common import DatasetOpt, OptModelOpt, WeightsOpt, _write_json, console, model_options, user_errors


@app.command()
@user_errors
@model_options
def rewrites(
    model: OptModelOpt = None,
    dataset: DatasetOpt = None,
    weights: WeightsOpt = None,
    size: str | None = typer.Option(None, "--size", help="Capture input HxW (default: the model's export size)."),
    target: str = typer.Option("onnx-fp32", "--target", "-t", help="The target the report is for."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the report as JSON."),
):
    """Every rewrite (module swaps of edgeseg's families, graph passes for any model); with --model, the patterns
    each graph pass matched in that model, whether it stayed exact, and ranks / hostile ops before and after."""
    from edgeseg.commands import rewrites as rewrites_cmd

    report = rewrites_cmd.rewrites(model, dataset, weights, size, target)
    if json_out is not None:
        _write_json(json_out, report)
    if model is None:
        table = Table(title="module rewrites (edgeseg's families)")
        for col in ("name", "replaces", "families", "formats", "summary"):
            table.add_column(col)
        for r in report["module_rewrites"]:
            table.add_row(r["name"], r["pattern"], ", ".join(r["families"]), ", ".join(r["formats"]), r["summary"])
        console.print(table)
    table = Table(
        title="graph passes" + (f": {report['model']} at {report['input'][2]}x{report['input'][3]}" if model else "")
    )
    cols = ("pass", "summary") if model is None else ("pass", "applied", "max rel diff", "matches")
    for col in cols:
        table.add_column(col, overflow="fold")
    for p in report["graph_passes"] if model is None else report["graph"]["passes"]:
        if model is None:
            table.add_row(p["name"], escape(p["summary"]))
        else:
            status = "yes" if p["applied"] else ("no: " + p["refused"] if p.get("refused") else p.get("skipped", "-"))
            diff = "-" if p["max_rel_diff"] is None else f"{p['max_rel_diff']:.2g}"
            table.add_row(p["name"], escape(status), diff, escape("\n".join(p["matches"]) or "no match"))
    console.print(table)
    if model is not None:
        g = report["graph"]
        for when in ("before", "after"):
            c = g[when]
            ops = ", ".join(f"{k} x{v}" for k, v in c["hostile_ops"].items()) or "none"
            console.print(
                f"{when}: max rank {c['max_rank']}, rank > 4 nodes {len(c['rank_over_4'])}, hostile ops: {escape(ops)}"
            )
        console.print(f"export of {report['model']} applies: {report['export_applies']}", highlight=False)
