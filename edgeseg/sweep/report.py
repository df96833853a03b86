"""The sweep's summary: one table (rows: model, size, target; a column per device) and an index page with each
device's table and Pareto plot. Per-device bench.json / bench.md / report.html are ``edgeseg.bench.report``'s."""

from __future__ import annotations

import html
import json
from pathlib import Path

from edgeseg.bench.page import pareto_png
from edgeseg.bench.report import BenchReport, TargetResult, markdown
from edgeseg.io import atomic_write_bytes
from edgeseg.residency import cell as residency_cell


def device_cell_short(r: TargetResult) -> str:
    """Latency on the device as a short cell: measured ms, an estimate labelled so, or why there is none."""
    if r.status in ("failed", "skipped"):
        return r.status
    d = r.device
    verdict = "pass" if r.status == "passed" else "FAIL"
    if d.measured is not None:
        s = d.measured.stats
        return f"{s.median_ms if s.median_ms is not None else s.mean_ms:.1f} ms {verdict}"
    if d.estimate is not None:
        return f"~{d.estimate.latency_ms:.1f} ms estimate {verdict}"
    return f"not measured, checks {verdict}"


def sweep_table(reports: dict[str, BenchReport]) -> dict:
    """``{"devices": [...], "rows": [{model, size, target, mb, parity, miou, cells: {device: text}, reasons}]}``,
    rows in matrix order; a device that does not run a row's target has no cell for it."""
    rows: dict[tuple, dict] = {}
    for device, report in reports.items():
        for r in report.results:
            key = (r.model, r.size, r.target)
            row = rows.setdefault(
                key,
                {"model": r.model, "size": r.size, "target": r.target, "mb": None, "parity": None, "miou": None}
                | {"cells": {}, "reasons": {}, "residency": "-"},
            )
            if r.artifact is not None:
                row["mb"] = round(r.artifact.bytes / 1e6, 2)
            if r.parity is not None and r.parity.argmax_agreement is not None:
                row["parity"] = round(100 * r.parity.argmax_agreement, 3)
            if r.miou is not None:
                row["miou"] = round(100 * r.miou, 2)
            if r.residency:
                row["residency"] = residency_cell(r.residency)
            row["cells"][device] = device_cell_short(r)
            if r.reasons:
                row["reasons"][device] = r.reasons
    return {"devices": list(reports), "rows": list(rows.values())}


def table_head(table: dict) -> list[str]:
    return ["model", "size", "target", "MB", "parity %", "mIoU", "residency", *table["devices"]]


def row_cells(table: dict, row: dict) -> list[str]:
    """A sweep-table row as text cells, in ``table_head`` order (the CLI table and sweep.md show the same)."""

    def num(x):
        return "-" if x is None else f"{x:.2f}"

    names = [row["model"] or "-", row["size"] or "-", row["target"]]
    figures = [num(row["mb"]), num(row["parity"]), num(row["miou"]), row.get("residency", "-")]
    return names + figures + [row["cells"].get(d, "") for d in table["devices"]]


def table_markdown(table: dict) -> list[str]:
    head = table_head(table)
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in table["rows"]:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row_cells(table, row)) + " |")
    reasons = [
        f"- {row['model']} {row['size']} {row['target']} on {d}: {'; '.join(rs)}"
        for row in table["rows"]
        for d, rs in row["reasons"].items()
    ]
    return lines + (["", "Why a cell failed:", "", *reasons] if reasons else [])


def sweep_markdown(table: dict, state: dict) -> str:
    failed = [j for j in state["jobs"].values() if j["status"] == "failed"]
    lines = [
        f"# edgeseg sweep: {state['matrix']}",
        "",
        f"- ran on: {state.get('executor', 'the cache only (every job was cached)')}",
        "- cells: median latency on the device (measured), or '~N ms estimate' where edgeseg could not reach the "
        "device (a calibrated roofline, not measured); pass / FAIL: the device profile's budget, mIoU floor, "
        "parity and lint",
        f"- jobs: {len(state['jobs'])}, cached {sum(j['status'] == 'cached' for j in state['jobs'].values())}, "
        f"failed {len(failed)}",
        "",
        *table_markdown(table),
    ]
    if failed:
        lines += ["", "Failed jobs:", ""]
        lines += [f"- {j['label']}{' on ' + j['device'] if j.get('device') else ''}: {j.get('reason')}" for j in failed]
    return "\n".join(lines) + "\n"


def write_index(out: Path, reports: dict[str, BenchReport], table: dict, state: dict) -> dict[str, Path]:
    out = Path(out)
    md = sweep_markdown(table, state)
    paths = {"md": out / "sweep.md", "html": out / "report.html", "table": out / "sweep-table.json"}
    atomic_write_bytes(paths["md"], md.encode())
    atomic_write_bytes(paths["table"], (json.dumps(table, indent=2) + "\n").encode())
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>edgeseg sweep</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}img{max-width:100%}</style></head><body>",
        f"<h1>edgeseg sweep: {html.escape(state['matrix'])}</h1>",
        f"<pre>{html.escape(md)}</pre>",
    ]
    for device, report in reports.items():
        parts.append(f"<h2>{html.escape(device)}: {html.escape(report.device.title)}</h2>")
        parts.append(f"<p><a href='{html.escape(device)}/report.html'>{html.escape(device)}/report.html</a></p>")
        png = pareto_png(report)
        if png:
            parts.append(f"<img alt='latency vs mIoU on {html.escape(device)}' src='data:image/png;base64,{png}'>")
        else:
            parts.append("<p>No point to plot (no mIoU or no latency, measured or estimated).</p>")
        parts.append(f"<pre>{html.escape(markdown(report))}</pre>")
    parts.append("</body></html>")
    atomic_write_bytes(paths["html"], ("\n".join(parts) + "\n").encode())
    return paths
