"""``edgeseg check``'s run history: each run appends its figures (per row: mIoU, reference, argmax agreement,
latency ratio, size, which gates failed) as one JSON line to ``<baseline>.history.jsonl`` beside the baseline, so
check.md and the JUnit report can show the change since the baseline, the trend over the last runs, and flag a row
whose accuracy gate failed N runs in a row (a path that regressed and stayed regressed)."""

from __future__ import annotations

import datetime
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeseg.check import Baseline, CheckReport, HistoryOptions, RowResult


def finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


HISTORY_VERSION = 1
# the gates whose failure is an accuracy regression (the flag counts runs in a row in which one of them failed)
ACCURACY_GATES = frozenset({"parity", "snr", "miou floor", "miou drop", "miou", "int8 budget"})


def history_path(baseline_path: Path) -> Path:
    """``baseline.json`` -> ``baseline.history.jsonl`` beside it (commit it with the baseline, or keep it as a CI
    cache: each line stands alone)."""
    baseline_path = Path(baseline_path)
    return baseline_path.with_name(baseline_path.stem + ".history.jsonl")


def history_record(report: CheckReport, edgeseg_version: str) -> dict:
    """One run as a history line: per row the figures (mIoU, reference, argmax agreement, latency ratio, bytes,
    sha256), whether it passed and which gates failed."""
    rows = {}
    for r in report.rows:
        failed = [g.name for g in r.failures()]
        rows[r.row_id] = {
            "passed": r.passed,
            "accuracy_failed": any(name in ACCURACY_GATES for name in failed),
            "failed_gates": failed,
            "miou": finite(r.miou),
            "miou_reference": finite(r.miou_reference),
            "argmax_agreement": finite((r.parity or {}).get("argmax_agreement")),
            "latency_ratio": finite((r.latency or {}).get("ratio")),
            "bytes": (r.artifact or {}).get("bytes"),
            "sha256": (r.artifact or {}).get("sha256"),
        }
    return {
        "version": HISTORY_VERSION,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "edgeseg": edgeseg_version,
        "passed": report.passed,
        "updated_baseline": report.updated_baseline,
        "images": report.images,
        "load": report.machine.get("load"),
        "rows": rows,
    }


def append_history(path: Path, record: dict) -> Path:
    """Append ``record`` as one line with a single O_APPEND write (concurrent appenders do not interleave within a
    line), then fsync. A torn last line left by a crash is closed first, so the new record starts on its own."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    line = "\n" + line
        data = line.encode()
        if os.write(fd, data) != len(data):
            raise OSError(f"short write appending to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_history(path: Path) -> tuple[list[dict], int]:
    """(records in file order, lines that did not parse: a torn or hand-edited line is skipped, not fatal)."""
    path = Path(path)
    if not path.is_file():
        return [], 0
    records, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(rec, dict) and rec.get("version") == HISTORY_VERSION and isinstance(rec.get("rows"), dict):
            records.append(rec)
        else:
            bad += 1
    return records, bad


def failing_streak(records: list[dict], row_id: str) -> int:
    """Runs in a row, newest back, in which the row's accuracy gate failed (runs without the row are passed over)."""
    n = 0
    for rec in reversed(records):
        row = rec["rows"].get(row_id)
        if row is None:
            continue
        if not row.get("accuracy_failed"):
            break
        n += 1
    return n


@dataclass
class RowHistory:
    since_baseline: dict  # miou / argmax_agreement points, size percent: this run minus the baseline's figures
    miou: list[float | None]  # the last runs, oldest first, this run last
    latency_ratio: list[float | None]
    runs: int  # how many runs of this row the history holds
    accuracy_failed_in_a_row: int
    flagged: bool


def row_history(
    records: list[dict], row: RowResult, baseline_row: dict | None, flag_after: int, last: int
) -> RowHistory:
    """The row's change since the baseline, its figures over the ``last`` runs and the accuracy-failure streak
    (``records`` already holding this run)."""
    mine = [rec["rows"][row.row_id] for rec in records if row.row_id in rec["rows"]]
    since: dict = {}
    if baseline_row:
        if row.miou is not None and baseline_row.get("miou") is not None:
            since["miou_points"] = 100 * (row.miou - baseline_row["miou"])
        cur_agree = (row.parity or {}).get("argmax_agreement")
        base_agree = (baseline_row.get("parity") or {}).get("argmax_agreement")
        if cur_agree is not None and base_agree is not None:
            since["argmax_agreement_points"] = 100 * (cur_agree - base_agree)
        base_bytes = (baseline_row.get("artifact") or {}).get("bytes")
        if row.artifact.get("bytes") and base_bytes:
            since["size_percent"] = 100 * (row.artifact["bytes"] / base_bytes - 1)
        if row.latency is not None:
            since["latency_ratio"] = row.latency["ratio"]
    streak = failing_streak(records, row.row_id)
    return RowHistory(
        since_baseline=since,
        miou=[m.get("miou") for m in mine[-last:]],
        latency_ratio=[m.get("latency_ratio") for m in mine[-last:]],
        runs=len(mine),
        accuracy_failed_in_a_row=streak,
        flagged=streak >= flag_after,
    )


def trend(values: list[float | None], scale: float, spec: str) -> str:
    shown = ["-" if v is None else format(scale * v, spec) for v in values]
    return " → ".join(shown) if any(v is not None for v in values) else "-"


def since_text(h: RowHistory) -> str:
    s = h.since_baseline
    parts = []
    if "miou_points" in s:
        parts.append(f"mIoU {s['miou_points']:+.2f}")
    if "argmax_agreement_points" in s:
        parts.append(f"agreement {s['argmax_agreement_points']:+.3f}")
    if "size_percent" in s:
        parts.append(f"size {s['size_percent']:+.1f} %")
    if "latency_ratio" in s:
        parts.append(f"latency x{s['latency_ratio']:.2f}")
    return ", ".join(parts) or "-"


def flag_text(h: RowHistory, flag_after: int) -> str:
    if h.flagged:
        return f"FLAGGED: accuracy gate failed {h.accuracy_failed_in_a_row} runs in a row (>= {flag_after})"
    if h.accuracy_failed_in_a_row:
        return f"accuracy gate failed {h.accuracy_failed_in_a_row} run(s) in a row"
    return "ok"


def attach_history(
    report: CheckReport, baseline: Baseline | None, path: Path, options: HistoryOptions, edgeseg_version: str
) -> Path:
    """Append this run to the history at ``path``, read it back and attach each row's change since the baseline,
    trend and accuracy-failure streak to ``report.history``."""
    append_history(path, history_record(report, edgeseg_version))
    records, bad = read_history(path)
    base_rows = baseline.rows if baseline else {}
    report.history = {
        "path": str(path),
        "runs": len(records),
        "last": options.last,
        "flag_after": options.flag_after,
        "unreadable": bad,
        "rows": {
            r.row_id: row_history(records, r, base_rows.get(r.row_id), options.flag_after, options.last)
            for r in report.rows
        },
    }
    return path


def load_notes(report: CheckReport) -> list[str]:
    """A warning per row whose side-by-side timing ran with the load above the cores."""
    from edgeseg.eval.stats import load_warning

    notes = []
    for r in report.rows:
        load = (r.latency or {}).get("load") or {}
        text = load_warning(load.get("loadavg_1min"), load.get("cores"))
        if text:
            notes.append(f"`{r.row_id}`: {text} (the ratio is judged side by side, so both artifacts saw it)")
    return notes


def history_markdown(report: CheckReport) -> list[str]:
    h = report.history
    if not h:
        return []
    lines = [
        "",
        f"### History (`{h['path']}`, {h['runs']} runs; last {h['last']} shown, oldest first)",
        "",
        "| row | since baseline | mIoU, last runs | latency vs baseline, last runs | accuracy |",
        "|---|---|---|---|---|",
    ]
    for r in report.rows:
        rh = h["rows"].get(r.row_id)
        if rh is None:
            continue
        cells = [
            f"`{r.row_id}`",
            since_text(rh),
            trend(rh.miou, 100, ".2f"),
            trend(rh.latency_ratio, 1, ".2f"),
            ("**" + flag_text(rh, h["flag_after"]) + "**") if rh.flagged else flag_text(rh, h["flag_after"]),
        ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    if h.get("unreadable"):
        lines += ["", f"_{h['unreadable']} history line(s) could not be read and were skipped._"]
    return lines
