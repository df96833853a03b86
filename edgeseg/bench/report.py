"""The bench report: one schema (``BenchReport``, versioned; a test pins its JSON schema), written as
``bench.json``, ``bench.md`` and a self-contained ``report.html`` (``edgeseg.bench.page``: Pareto plot and example
predictions embedded as PNG data URIs, no external files)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeseg.bench.stats import LatencyStats
from edgeseg.errors import EdgesegError
from edgeseg.estimate.schema import Estimate
from edgeseg.io import atomic_write_bytes
from edgeseg.residency import cell as residency_cell

# 2: DeviceColumn.estimate holds a labelled Estimate (was always null in 1).
# 3: TargetResult.model and .size, so one report can hold several models and input sizes (edgeseg sweep).
# 4: TargetResult.accuracy (mIoU/per-class/Boundary IoU intervals, per-image counts, comparison with the fp32
#    reference), ArtifactInfo.weights_sha256 and .runtime, BenchReport.recommendation and .warnings. Version 3
#    files still read (the new keys are optional). TargetResult.residency (the artifact's accelerator residency).
# 5: ModelInfo.classes and .palette (a user model's class names, --classes). Versions 3 and 4 still read.
SCHEMA_VERSION = 5
READS = (3, 4, 5)


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
    weights_sha256: str | None = None  # the weights it was exported from
    runtime: str | None = None  # the runtime (and version) that ran it for parity
    input: str | None = None  # name, shape and dtype of the input tensor, e.g. "image 1x3x384x480 float32"


class PerImage(_M):
    """Per-image counts (images x classes) the intervals resample; kept so a report can be re-analysed."""

    names: list[str]
    iou_inter: list[list[int]]
    iou_union: list[list[int]]
    boundary_inter: list[list[int]] | None = None
    boundary_union: list[list[int]] | None = None


class ClassIoU(_M):
    iou: float
    ci95: list[float]
    delta: float | None = None  # minus the reference's IoU of the class, same images


class Comparison(_M):
    """This artifact minus the reference artifact, same images (``edgeseg.eval.stats.paired_difference``)."""

    against: str
    images: int
    difference: float
    ci95: list[float]
    verdict: Literal["tie", "better", "worse", "too few images"]
    margin: float
    boundary_difference: float | None = None


class Accuracy(_M):
    images: int
    resamples: int
    miou_ci95: list[float]
    per_class: dict[str, ClassIoU | None]
    boundary_iou: float | None = None
    boundary_iou_ci95: list[float] | None = None
    boundary_dilation: float | None = None  # band half-width as a fraction of the image diagonal
    vs_reference: Comparison | None = None
    per_image: PerImage


class Recommendation(_M):
    """The artifact to ship on the report's device: the fastest within the mIoU budget, ties shown as ties."""

    target: str | None  # row label; None: nothing qualifies (``text`` says why)
    text: str
    ties: list[str] = []  # rows that cannot be told apart from it (latency and mIoU intervals overlap)
    budget_points: float  # mIoU points an artifact may lose against the reference
    reference: str | None = None
    considered: list[str] = []


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
    accuracy: Accuracy | None = None
    residency: list[dict] = []  # the artifact's residency records (edgeseg.residency.Residency as dicts)


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
    classes: list[str] | None = None  # a user model's "custom" class names (--classes), with their colours
    palette: list[list[int]] | None = None


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
    schema_version: Literal[3, 4, 5] = SCHEMA_VERSION
    edgeseg: str
    created: str
    command: str | None
    device: DeviceInfo
    model: ModelInfo | None
    data: DataInfo
    host: dict[str, Any]
    timing: TimingInfo
    results: list[TargetResult]
    recommendation: Recommendation | None = None
    warnings: list[str] = []  # e.g. the machine was under load while timing


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
        f"- mIoU: {display_path(report.data.path)} [{report.data.split}], {report.data.images} images, each artifact "
        "run with its runtime here; [95 % interval] from resampling the images",
        f"- latency: median / p90 / p99 in ms over N timed runs after the warm-up; runs continue until the "
        f"median's 95 % interval is within {100 * report.timing.rel_ci:.0f} % (at most {report.timing.max_runs} "
        f"runs or {report.timing.max_seconds:.0f} s)",
        "- every latency below was measured; nothing is estimated"
        if not any(r.device.estimate for r in report.results)
        else f"- latencies marked 'estimate' on {dev.name} are computed by edgeseg's calibrated roofline, not "
        "measured; every other latency was measured",
        "",
        *[f"- **warning**: {w}" for w in report.warnings],
        *([f"- **recommended**: {report.recommendation.text}"] if report.recommendation else []),
        "",
        "| target | status | size MB | parity (argmax agreement) | mIoU [95 % CI] | here: median / p90 / p99 ms | "
        "mean ± std | N (warm-up) | FPS | on " + dev.name + " | residency: nodes taken, partitions |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
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
                    miou_cell(r),
                    latency_cell(h),
                    mean_std_cell(h),
                    f"{h.stats.n} ({h.stats.warmup})" if h else "-",
                    _f(h.stats.fps) if h else "-",
                    device_cell(r, dev.name).replace("|", "/"),
                    residency_cell(r.residency),
                ]
            )
            + " |"
        )
    acc_head, acc_rows = accuracy_table(report)
    if acc_rows:
        lines += ["", "## Accuracy", "", *_md_table(acc_head, acc_rows)]
        cls_head, cls_rows = class_table(report)
        lines += ["", "Per-class IoU (the reference's IoU; the others: change against it, same images):", ""]
        lines += _md_table(cls_head, cls_rows)
    lines += [f"\n{note}" for note in speed_notes(report)]
    tools = sorted({rec["tool"] for r in report.results for rec in r.residency})
    if tools:
        lines += ["", "Residency (accelerator taken/total nodes, partitions) from: " + "; ".join(tools)]
    commands = [r.device.command for r in report.results if r.device.measured is None and r.device.command]
    if commands:
        lines += ["", f"Would-be commands on {dev.name}:", "", "```", *commands, "```"]
    facts = artifact_facts(report)
    if facts:
        lines += ["", "## Artifacts", ""]
        for label, items in facts:
            lines += [f"- **{label}**: " + "; ".join(f"{k}: {v}" for k, v in items)]
    return "\n".join(lines) + "\n"


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return out + ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]


def display_path(path: str | None) -> str:
    """A path as the reader should see it: relative to the folder bench ran in, ``~/...`` in the user's home, the
    bundled sample by name; never another machine's install path."""
    if not path:
        return "-"
    from edgeseg.paths import PACKAGE_DIR

    p = Path(path)
    try:
        resolved = p.resolve()
    except OSError:
        return str(p)
    for root, name in ((PACKAGE_DIR.resolve(), "edgeseg/"), (Path.cwd().resolve(), ""), (Path.home(), "~/")):
        try:
            rel = resolved.relative_to(root)
        except ValueError:
            continue
        return name + str(rel) if str(rel) != "." else (name.rstrip("/") or ".")
    return str(p)


def signed(points: float, spec: str = "+.2f") -> str:
    """A signed difference in points; one that rounds to zero is "+0.00", never "-0.00"."""
    text = format(points, spec)
    return text.replace("-", "+") if float(text) == 0 else text


def _pts(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(100 * x, spec)


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{_pts(ci[0], '.1f')}, {_pts(ci[1], '.1f')}]"


def miou_cell(r: TargetResult) -> str:
    if r.miou is None:
        return "-"
    return _pts(r.miou) + (_ci(r.accuracy.miou_ci95) if r.accuracy else "")


def accuracy_table(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """Per scored artifact: mIoU and Boundary IoU with intervals, the paired difference with the reference and its
    verdict, and the class that lost most."""
    named = several_models(report)
    head = ["target", "images", "mIoU [95 % CI]", "Boundary IoU [95 % CI]", "vs reference (same images)", "worst class"]
    rows = []
    for r in report.results:
        a = r.accuracy
        if a is None:
            continue
        vs = a.vs_reference
        if vs is None:
            versus = "reference"
        else:
            verdict = "too few images to tell apart" if vs.verdict == "too few images" else vs.verdict
            versus = (
                f"{signed(100 * vs.difference)} [{signed(100 * vs.ci95[0])}, {signed(100 * vs.ci95[1])}] vs "
                f"{vs.against}: {verdict}"
            )
            if vs.boundary_difference is not None:
                versus += f"; boundary {signed(100 * vs.boundary_difference)}"
        deltas = [(c.delta, name) for name, c in a.per_class.items() if c is not None and c.delta is not None]
        worst = min(deltas, default=None)
        worst_text = "-" if worst is None else f"{worst[1]} {signed(100 * worst[0])}"
        rows.append(
            [
                row_label(r, named),
                str(a.images),
                miou_cell(r),
                _pts(a.boundary_iou) + _ci(a.boundary_iou_ci95),
                versus,
                worst_text,
            ]
        )
    return head, rows


def class_table(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    named = several_models(report)
    scored = [r for r in report.results if r.accuracy is not None]
    if not scored:
        return [], []
    ref = next((r for r in scored if r.accuracy.vs_reference is None), scored[0])
    others = [r for r in scored if r is not ref]
    head = ["class", f"{row_label(ref, named)} IoU [95 % CI]"] + [row_label(r, named) for r in others]
    rows = []
    for name, c in ref.accuracy.per_class.items():
        if c is None:
            continue
        row = [name, _pts(c.iou, ".1f") + _ci(c.ci95)]
        for r in others:
            o = r.accuracy.per_class.get(name)
            row.append("-" if o is None or o.delta is None else signed(100 * o.delta))
        rows.append(row)
    return head, rows


def speed_notes(report: BenchReport) -> list[str]:
    from edgeseg.bench.decide import fp16_notes

    return fp16_notes(report)


def _residency(r: TargetResult) -> list[str]:
    """Residency records where the row or its artifact carries them (``edgeseg.residency.Residency``)."""
    from edgeseg.residency import Residency

    records = getattr(r, "residency", None) or getattr(r.artifact, "residency", None) or []
    out = []
    for rec in records:
        try:
            out.append((rec if isinstance(rec, Residency) else Residency.model_validate(rec)).summary())
        except (ValueError, TypeError):
            continue
    return out


def artifact_facts(report: BenchReport) -> list[tuple[str, list[tuple[str, str]]]]:
    """Per artifact what one needs to ship or reproduce it: input, runtime, hashes, path, the profiling command."""
    named = several_models(report)
    out = []
    for r in report.results:
        a = r.artifact
        if a is None:
            continue
        measured = r.host or r.device.measured
        runtime = a.runtime or (measured.runtime if measured else None)  # the parity run's names the version
        folder = display_path(a.folder)
        items = [
            ("input", a.input or (f"{r.size} (HxW)" if r.size else "-")),
            ("runtime", (runtime or "-") + _target_caveat(r.target)),
            ("file", f"{folder}/{a.file}"),
            ("artifact sha256", a.sha256),
            ("weights sha256", a.weights_sha256 or "-"),
            ("size", f"{a.bytes / 1e6:.2f} MB"),
        ]
        items += [("residency", text) for text in _residency(r)]
        if r.host is not None and _profilable(r.target):
            items.append(("where the time goes", shlex.join(["edgeseg", "op-profile", folder])))
        out.append((row_label(r, named), items))
    return out


def _target_caveat(target: str) -> str:
    """The target table's note where it warns about this runtime (e.g. onnx-int8 on x86: slower than fp32)."""
    from edgeseg.backends import TARGETS

    note = TARGETS[target].runtime if target in TARGETS else ""
    return f" (target note: {note.split('; ', 1)[1].rstrip(')')})" if "; " in note and "slower" in note else ""


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both latency (lower) and mIoU (higher), by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


_NUMBER_LIST = re.compile(r"\[(?:\s*-?[0-9][0-9.eE+-]*\s*,)*\s*-?[0-9][0-9.eE+-]*\s*\]")


def compact_json(doc: dict) -> str:
    """Indented JSON with lists of numbers on one line each (the per-image counts would be one number a line)."""
    text = json.dumps(doc, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(0)[1:-1].split(",")) + "]", text)


REPORT_FILES = {"bench.json": b'"schema_version"', "bench.md": b"# edgeseg bench", "report.html": b"edgeseg bench"}


def refuse_foreign_reports(folder: Path) -> None:
    """A report folder may hold an earlier edgeseg report (replaced), never a file of the same name that edgeseg did
    not write: a user's own report.html or bench.md is an input, not an output to overwrite."""
    for name, mark in REPORT_FILES.items():
        path = Path(folder) / name
        if path.is_dir():
            raise EdgesegError(f"--report {folder}: {path} is a folder: pass another --report folder")
        if path.is_file():
            with open(path, "rb") as f:
                head = f.read(4096)
            if mark not in head:
                raise EdgesegError(
                    f"--report {folder} holds {name}, which edgeseg bench did not write: pass another --report "
                    "folder (it is not replaced)"
                )


def write_reports(folder: Path, report: BenchReport, examples: list[dict], examples_note: str) -> dict[str, Path]:
    folder = Path(folder)
    refuse_foreign_reports(folder)
    paths = {"json": folder / "bench.json", "md": folder / "bench.md", "html": folder / "report.html"}
    atomic_write_bytes(paths["json"], (compact_json(report.model_dump(mode="json")) + "\n").encode())
    atomic_write_bytes(paths["md"], markdown(report).encode())
    from edgeseg.bench.page import html_report, pareto_png

    page = html_report(report, pareto_png(report), examples, examples_note)
    atomic_write_bytes(paths["html"], page.encode())
    return paths
