"""The bench report: one schema (``BenchReport``, versioned; a test pins its JSON schema), written as
``bench.json``, ``bench.md`` and a self-contained ``report.html`` (Pareto plot and example predictions embedded
as PNG data URIs, no external files)."""

from __future__ import annotations

import base64
import html
import io
import json
import shlex
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeseg.bench.stats import LatencyStats
from edgeseg.estimate.schema import Estimate
from edgeseg.io import atomic_write_bytes

# 2: DeviceColumn.estimate holds a labelled Estimate (was always null in 1).
# 3: TargetResult.model and .size, so one report can hold several models and input sizes (edgeseg sweep).
SCHEMA_VERSION = 3


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Stats(_M):
    n: int
    warmup: int
    median_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float
    std_ms: float | None
    min_ms: float | None
    max_ms: float | None
    median_ci95_ms: list[float] | None
    fps: float

    @classmethod
    def of(cls, s: LatencyStats) -> Stats:
        return cls(**s.as_dict())


class Measurement(_M):
    """A figure that was measured: where, with what, how."""

    kind: Literal["measured"] = "measured"
    machine: str
    runtime: str
    method: str
    stats: Stats
    secondary: dict[str, Stats] = {}  # trtexec: end_to_end next to the GPU compute time in stats
    stop: str | None = None  # why timing stopped (stable / max-runs / max-seconds), where edgeseg timed it
    state: dict[str, Any] = {}  # power mode, clocks, load average
    command: str | None = None


class DeviceColumn(_M):
    device: str
    measured: Measurement | None = None
    note: str | None = None  # why not measured there
    command: str | None = None  # what would measure it
    estimate: Estimate | None = None  # where not measured: the roofline estimate, always labelled "estimate"


class ArtifactInfo(_M):
    folder: str
    file: str
    sha256: str
    bytes: int
    cached: bool
    lint_clean: bool


class ParityInfo(_M):
    images: int
    argmax_agreement: float | None
    max_abs_diff: float | None
    snr_db: float | None
    runtime: str


class TargetResult(_M):
    target: str
    model: str | None = None  # the artifact's model and input size ("HxW"); None where no artifact was built
    size: str | None = None
    status: Literal["passed", "failed_check", "failed", "skipped"]
    reasons: list[str] = []
    artifact: ArtifactInfo | None = None
    parity: ParityInfo | None = None
    miou: float | None = None
    miou_images: int | None = None
    host: Measurement | None = None
    device: DeviceColumn


class DeviceInfo(_M):
    name: str
    title: str
    kind: str
    runtime: str
    reach: str
    budget_ms: float
    miou_floor: float


class ModelInfo(_M):
    name: str
    dataset: str
    weights: dict[str, Any]


class DataInfo(_M):
    path: str
    split: str
    images: int | None


class TimingInfo(_M):
    threads: int
    warmup: int
    min_runs: int
    max_runs: int
    max_seconds: float
    rel_ci: float

    @classmethod
    def of(cls, plan, threads: int) -> TimingInfo:
        """From an ``edgeseg.bench.stats.TimingPlan``."""
        return cls(
            threads=threads,
            warmup=plan.warmup,
            min_runs=plan.min_runs,
            max_runs=plan.max_runs,
            max_seconds=plan.max_seconds,
            rel_ci=plan.rel_ci,
        )


class BenchReport(_M):
    schema_version: Literal[3] = SCHEMA_VERSION
    edgeseg: str
    created: str
    command: str | None
    device: DeviceInfo
    model: ModelInfo | None
    data: DataInfo
    host: dict[str, Any]
    timing: TimingInfo
    results: list[TargetResult]


STATUS_TEXT = {"passed": "passed", "failed_check": "exported, failed check", "failed": "failed", "skipped": "skipped"}


def _profilable(target: str) -> bool:
    """Whether ``edgeseg op-profile`` can profile the target's artifacts here (its backend has a profiler)."""
    from edgeseg.backends import TARGETS, backend_for

    return target in TARGETS and backend_for(TARGETS[target].format).profiles_here


def _f(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def latency_cell(m: Measurement | None) -> str:
    if m is None:
        return "-"
    s = m.stats
    head = _f(s.median_ms) if s.median_ms is not None else f"mean {_f(s.mean_ms)}"
    return f"{head} / {_f(s.p90_ms)} / {_f(s.p99_ms)}"


def mean_std_cell(m: Measurement | None) -> str:
    if m is None:
        return "-"
    return f"{_f(m.stats.mean_ms)} ± {_f(m.stats.std_ms)}"


def device_cell(r: TargetResult, device: str) -> str:
    d = r.device
    if d.measured is not None and d.measured == r.host:
        return "measured here (this machine is the device)"
    if d.measured is not None:
        s = d.measured.stats
        text = f"measured: {_f(s.median_ms if s.median_ms is not None else s.mean_ms)} ms ({d.measured.method})"
        if "end_to_end" in d.measured.secondary:
            text += f", end-to-end {_f(d.measured.secondary['end_to_end'].median_ms)} ms"
        return text
    text = d.note or f"not measured on {device}"
    return f"{text}; {d.estimate.text}" if d.estimate is not None else text


def several_models(report: BenchReport) -> bool:
    """Whether rows must name their model and size (a sweep's report mixes them; bench's has one of each)."""
    return len({(r.model, r.size) for r in report.results if r.model}) > 1


def report_subject(report: BenchReport) -> str:
    if several_models(report):
        return ", ".join(sorted({r.model for r in report.results if r.model}))
    return report.model.name if report.model else "artifacts"


def row_label(r: TargetResult, named: bool) -> str:
    return " ".join(x for x in (r.model, r.size, r.target) if x) if named else r.target


def markdown(report: BenchReport) -> str:
    dev = report.device
    lines = [
        f"# edgeseg bench: {report_subject(report)} on {dev.name}",
        "",
        f"- device: {dev.title} ({dev.runtime}); budget {dev.budget_ms} ms, mIoU floor {100 * dev.miou_floor:.1f}",
        f"- host: {report.host.get('cpu')}, {report.timing.threads} threads, {report.host.get('platform')}",
        f"- mIoU: {report.data.path} [{report.data.split}], {report.data.images} images, each artifact run with its "
        "runtime here",
        f"- latency: median / p90 / p99 in ms over N timed runs after the warm-up; runs continue until the "
        f"median's 95 % interval is within {100 * report.timing.rel_ci:.0f} % (at most {report.timing.max_runs} "
        f"runs or {report.timing.max_seconds:.0f} s)",
        "- every latency below was measured; nothing is estimated"
        if not any(r.device.estimate for r in report.results)
        else f"- latencies marked 'estimate' on {dev.name} are computed by edgeseg's calibrated roofline, not "
        "measured; every other latency was measured",
        "",
        "| target | status | size MB | parity (argmax agreement) | mIoU | here: median / p90 / p99 ms | "
        "mean ± std | N (warm-up) | FPS | on " + dev.name + " |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    named = several_models(report)
    for r in report.results:
        status = STATUS_TEXT[r.status] + (f": {'; '.join(r.reasons)}" if r.reasons else "")
        h = r.host
        lines.append(
            "| "
            + " | ".join(
                [
                    row_label(r, named),
                    status.replace("|", "/"),
                    _f(r.artifact.bytes / 1e6, ".2f") if r.artifact else "-",
                    _f(100 * r.parity.argmax_agreement, ".3f") + " %"
                    if r.parity and r.parity.argmax_agreement is not None
                    else "-",
                    _f(100 * r.miou, ".2f") if r.miou is not None else "-",
                    latency_cell(h),
                    mean_std_cell(h),
                    f"{h.stats.n} ({h.stats.warmup})" if h else "-",
                    _f(h.stats.fps) if h else "-",
                    device_cell(r, dev.name).replace("|", "/"),
                ]
            )
            + " |"
        )
    commands = [r.device.command for r in report.results if r.device.measured is None and r.device.command]
    if commands:
        lines += ["", f"Would-be commands on {dev.name}:", "", "```", *commands, "```"]
    measured_here = [r for r in report.results if r.host is not None]
    if measured_here:
        h = measured_here[0].host
        lines += ["", f"Measured here: {h.machine}, {h.method}; runtimes:", ""]
        lines += [f"- {row_label(r, named)}: {r.host.runtime}" for r in measured_here]
        profilable = [r for r in measured_here if r.artifact and _profilable(r.target)]
        if profilable:
            lines += ["", "Where the time goes (kernels, op types, what falls off the fast path):", "", "```"]
            lines += [shlex.join(["edgeseg", "op-profile", r.artifact.folder]) for r in profilable]
            lines += ["```"]
    return "\n".join(lines) + "\n"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both latency (lower) and mIoU (higher), by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def pareto_png(report: BenchReport) -> str | None:
    """Latency vs mIoU on the report's device: measured points (here or on the device) and, where the device was
    not reached, the labelled roofline estimate as its own marker. The Pareto front uses measured points only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = several_models(report)
    rows = []
    for r in report.results:
        if r.miou is None:
            continue
        m = r.device.measured or r.host
        if m is not None:
            s = m.stats
            lat = s.median_ms if s.median_ms is not None else s.mean_ms
            where = "on device" if r.device.measured is not None and report.device.kind != "host" else "here (host)"
        elif r.device.estimate is not None:
            lat, where = r.device.estimate.latency_ms, "estimate"
        else:
            continue
        rows.append((row_label(r, named), lat, 100 * r.miou, where))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4 if not named else 7.6, 4.2))
    styles = (
        ("here (host)", "o", "measured here (host)"),
        ("on device", "s", f"measured on {report.device.name}"),
        ("estimate", "x", f"estimate for {report.device.name} (roofline, not measured)"),
    )
    for where, marker, label in styles:
        pts = [(lat, miou) for _, lat, miou, w in rows if w == where]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, s=46, label=label, zorder=3)
    measured = [(lat, miou) for _, lat, miou, w in rows if w != "estimate"]
    if measured:
        front = pareto_front(measured)
        ax.plot(
            [measured[i][0] for i in front],
            [measured[i][1] for i in front],
            "--",
            color="grey",
            zorder=2,
            label="Pareto front (measured)",
        )
    # neighbours in latency alternate above/below their point so close targets' names stay readable
    for k, (name, lat, miou, _) in enumerate(sorted(rows, key=lambda r: r[1])):
        ax.annotate(name, (lat, miou), textcoords="offset points", xytext=(5, 4 if k % 2 == 0 else -11), fontsize=7)
    ax.axhline(100 * report.device.miou_floor, color="tab:red", lw=0.8, ls=":", label="mIoU floor")
    ax.axvline(report.device.budget_ms, color="tab:orange", lw=0.8, ls=":", label="latency budget")
    ax.set_xlabel("median latency, ms")
    ax.set_ylabel(f"mIoU, % ({report.data.split}, {report.data.images} images)")
    ax.set_title(f"{report_subject(report)} on {report.device.name}: latency vs mIoU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    try:
        return _png(fig)
    finally:
        plt.close(fig)


def examples_png(examples: list[dict], title: str) -> str | None:
    """``examples``: dicts with name, image (H,W,3 uint8), label and prediction (H,W,3 colour uint8)."""
    if not examples:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(examples), 3, figsize=(10, 2.6 * len(examples)), squeeze=False)
    for row, ex in zip(axes, examples):
        for ax, key in zip(row, ("image", "label", "prediction")):
            ax.imshow(ex[key])
            ax.set_axis_off()
            ax.set_title(f"{ex['name']}: {key}" if key == "image" else key, fontsize=8)
    fig.suptitle(title, fontsize=9)
    try:
        return _png(fig)
    finally:
        plt.close(fig)


def html_report(report: BenchReport, pareto: str | None, examples: str | None, examples_note: str) -> str:
    md_rows = markdown(report).split("\n")
    table = [line for line in md_rows if line.startswith("|")]
    head, body = table[0], [r for r in table[2:]]

    def cells(line: str) -> list[str]:
        return [html.escape(c.strip()) for c in line.strip().strip("|").split(" | ")]

    thead = "".join(f"<th>{c}</th>" for c in cells(head))
    tbody = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in cells(r)) + "</tr>" for r in body)
    first_table_line = next(i for i, line in enumerate(md_rows) if line.startswith("|"))
    notes = "".join(f"<li>{html.escape(x[2:])}</li>" for x in md_rows[:first_table_line] if x.startswith("- "))
    runtimes = "".join(f"<li>{html.escape(x[2:])}</li>" for x in md_rows[first_table_line:] if x.startswith("- "))
    commands = [r.device.command for r in report.results if r.device.measured is None and r.device.command]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>edgeseg bench {html.escape(report.device.name)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "th{background:#f3f3f3}pre{background:#f6f6f6;padding:8px;overflow-x:auto}img{max-width:100%}</style>",
        "</head><body>",
        f"<h1>{html.escape(md_rows[0].lstrip('# '))}</h1>",
        f"<ul>{notes}</ul>",
        f"<table><thead><tr>{thead}</tr></thead><tbody>{tbody}</tbody></table>",
    ]
    if runtimes:
        parts.append(f"<p>Runtimes of the measurements here:</p><ul>{runtimes}</ul>")
    if commands:
        parts.append(f"<h2>Would-be commands on {html.escape(report.device.name)}</h2>")
        parts.append("<pre>" + html.escape("\n".join(commands)) + "</pre>")
    if pareto:
        parts.append("<h2>Latency vs mIoU</h2>")
        parts.append(f"<img alt='latency vs mIoU Pareto plot' src='data:image/png;base64,{pareto}'>")
    if examples:
        parts.append("<h2>Example predictions</h2>")
        parts.append(f"<p>{html.escape(examples_note)}</p>")
        parts.append(f"<img alt='image, label, prediction' src='data:image/png;base64,{examples}'>")
    parts.append(
        f"<p><small>edgeseg {html.escape(report.edgeseg)}, {html.escape(report.created)}, schema "
        f"v{report.schema_version}; machine-readable: bench.json</small></p></body></html>"
    )
    return "\n".join(parts) + "\n"


def write_reports(folder: Path, report: BenchReport, examples: list[dict], examples_note: str) -> dict[str, Path]:
    folder = Path(folder)
    paths = {"json": folder / "bench.json", "md": folder / "bench.md", "html": folder / "report.html"}
    atomic_write_bytes(paths["json"], (json.dumps(report.model_dump(mode="json"), indent=2) + "\n").encode())
    atomic_write_bytes(paths["md"], markdown(report).encode())
    page = html_report(report, pareto_png(report), examples_png(examples, examples_note), examples_note)
    atomic_write_bytes(paths["html"], page.encode())
    return paths
