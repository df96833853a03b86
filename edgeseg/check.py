"""``edgeseg check``: the regression gate a CI job runs on exported artifacts.

This module holds what does not need the commands: the config schema (``edgeseg.yaml``), the baseline file, the
side-by-side latency ratio (bench's interleaved timer over the current and baseline artifacts), and the renderers
(check.md, JUnit XML). The gates themselves (``Gate``, ``Thresholds`` and every judgement) are the registry's in
``edgeseg.gates``, shared with bench and sweep; they are re-exported here. ``edgeseg.commands.check`` exports,
evaluates and calls in here.

Latency is never compared with a stored time: an absolute time recorded on another machine (or the same machine
under other load) says nothing about this run. The baseline keeps a copy of each baseline artifact instead, and
the current and baseline artifacts are timed here, alternately, in repeated rounds; the judged number is the
median of the per-round ratios, with a noise margin.
"""

from __future__ import annotations

import datetime
import json
import math
import shlex
import shutil
import statistics
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeseg.backends import TargetNames
from edgeseg.bench.stats import interleave
from edgeseg.check_history import flag_text, history_markdown, load_notes, since_text, trend
from edgeseg.errors import EdgesegError
from edgeseg.export_request import ExportOptions
from edgeseg.gates import Evidence, Gate, Thresholds, failures, judge_baseline
from edgeseg.io import atomic_write_bytes, load_yaml_schema, validation_problems

BASELINE_VERSION = 1
LATENCY_NOTE = (
    "latency is judged only as a ratio to the baseline artifact timed side by side in this run; "
    "absolute times from another machine or run are not comparable and are not stored"
)


# --------------------------------------------------------------------------------------------------------------
# Config schema
# --------------------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    # inf / nan would make a gate unable to fail (nan < x is False): refused like any other bad value
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


MAX_ROWS = 256  # models or artifacts in one config: more is a generated file gone wrong, refused before any work


class CheckModel(_Strict):
    name: str
    weights: str
    dataset: str | None = None
    # your own model (name: PATH.py:NAME) only, as --num-classes / --classes: NAME(num_classes=N), class names
    num_classes: int | None = Field(None, ge=1)
    classes: str | list[str] | None = None  # a,b,c, a list, or a .txt / .yaml file (beside the config)
    size: str | None = None  # HxW, default: the dataset's
    targets: TargetNames = Field(min_length=1, max_length=64)
    devices: list[str] = Field(["host"], min_length=1, max_length=64)
    export: ExportOptions = ExportOptions()
    thresholds: dict = {}  # overrides of the config's thresholds for this model's rows


class ArtifactEntry(_Strict):
    """An artifact folder exported elsewhere (its manifest names model, target and size)."""

    path: str
    devices: list[str] = Field(["host"], min_length=1, max_length=64)
    thresholds: dict = {}


class TimingOptions(_Strict):
    warmup: int = Field(5, ge=0, le=10_000)  # untimed runs of each artifact before each round
    runs: int = Field(20, ge=1, le=100_000)  # timed runs of each artifact per round, interleaved one by one
    rounds: int = Field(3, ge=1, le=1_000)  # the judged ratio is the median over rounds


class HistoryOptions(_Strict):
    keep: bool = True  # append each run's figures to <baseline>.history.jsonl beside the baseline
    flag_after: int = Field(3, ge=1)  # flag a row whose accuracy gate failed this many runs in a row
    last: int = Field(5, ge=2)  # runs shown in the trend columns


class CheckConfig(_Strict):
    version: int = 1
    data: str = "sample"  # labelled data (SPLIT/images, SPLIT/labels); "sample": the bundled CamVid sample
    split: str = "val"
    limit: int | None = Field(None, ge=1)  # mIoU on the first N images
    calib_data: str | None = None  # INT8 targets: train/images + train/labels
    parity_images: int = Field(5, ge=1, le=100_000)
    threads: int = Field(2, ge=1, le=1024)
    out: str = ".edgeseg/artifacts"  # artifact cache
    timing: TimingOptions = TimingOptions()
    history: HistoryOptions = HistoryOptions()
    thresholds: Thresholds = Thresholds()
    models: list[CheckModel] = Field([], max_length=MAX_ROWS)
    artifacts: list[ArtifactEntry] = Field([], max_length=MAX_ROWS)

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"version {value} is not supported (this edgeseg reads version 1)")
        return value

    @model_validator(mode="after")
    def _rows(self):
        if not self.models and not self.artifacts:
            raise ValueError("lists no models and no artifacts: add a 'models:' entry (name, weights, targets)")
        return self


def thresholds_for(config: CheckConfig, overrides: dict, where: str, path: Path) -> Thresholds:
    try:
        return Thresholds.model_validate({**config.thresholds.model_dump(exclude_unset=True), **overrides})
    except ValidationError as exc:
        problems = validation_problems(exc, field_prefix=f"{where}.thresholds.")
        raise EdgesegError(f"check config {path}: {problems}") from None


def load_config(path: Path) -> CheckConfig:
    """Read and validate ``edgeseg.yaml``; a bad file is one line naming the file and the field."""
    path = Path(path)
    config = load_yaml_schema(
        path, CheckConfig, "check config", "data, thresholds, models, ...", missing_hint="see examples/edgeseg.yaml"
    )
    for i, m in enumerate(config.models):
        thresholds_for(config, m.thresholds, f"models.{i}", path)
    for i, a in enumerate(config.artifacts):
        thresholds_for(config, a.thresholds, f"artifacts.{i}", path)
    return config


# --------------------------------------------------------------------------------------------------------------
# Baseline
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Baseline:
    path: Path
    rows: dict[str, dict]

    @property
    def artifacts_dir(self) -> Path:
        return self.path.with_name(self.path.stem + ".artifacts")

    def copy_path(self, row_id: str) -> Path:
        """Where a row's artifact copy is: its ``copy`` resolved, which must lie inside ``artifacts_dir``."""
        from edgeseg.artifact import inside

        copy = self.rows[row_id]["artifact"]["copy"]
        folder = inside(self.path.parent, copy, f"baseline {self.path}: row {row_id!r} copy", "record it again")
        if not folder.is_relative_to(self.artifacts_dir.resolve()):
            raise EdgesegError(
                f"baseline {self.path}: row {row_id!r} copy {copy!r} is not in {self.artifacts_dir.name}/ "
                "(record the baseline again)"
            )
        return folder

    def artifact_folder(self, row_id: str) -> Path | None:
        """The baseline's copy of a row's artifact, verified: its model file hashes to the sha256 the baseline
        recorded (the copy's own manifest is not enough: it travels with the copy); None when there is no copy."""
        from edgeseg.artifact import model_file_sha256, read_manifest

        entry = self.rows.get(row_id)
        if not entry:
            return None
        folder = self.copy_path(row_id)
        if not (folder / "manifest.json").is_file():
            return None
        folder, manifest = read_manifest(folder)
        got = model_file_sha256(folder / manifest["file"])
        if got != entry["artifact"]["sha256"]:
            raise EdgesegError(
                f"baseline {self.path}: the copy of row {row_id!r} in {folder} has sha256 {got[:12]}, the baseline "
                f"records {str(entry['artifact']['sha256'])[:12]}: record the baseline again"
            )
        return folder


def read_baseline(path: Path, update: bool) -> Baseline | None:
    """The baseline, or None when it does not exist and ``update`` asks to create it (never silently otherwise)."""
    path = Path(path)
    if not path.is_file():
        if update:
            return None
        raise EdgesegError(
            f"baseline {path} not found: record one with `edgeseg check --config ... --baseline "
            f"{shlex.quote(str(path))} --update-baseline` and commit it"
        )
    try:
        data = json.loads(path.read_text())
        version, rows = data["version"], data["rows"]
    except (ValueError, KeyError, TypeError) as exc:
        raise EdgesegError(f"baseline {path} is not an edgeseg baseline ({exc}); record it again") from None
    if version != BASELINE_VERSION:
        raise EdgesegError(f"baseline {path} has version {version}; this edgeseg reads {BASELINE_VERSION}")
    if not isinstance(rows, dict):
        raise EdgesegError(f"baseline {path}: 'rows' is not a mapping of row ids; record it again")
    for row_id, row in rows.items():
        art = row.get("artifact") if isinstance(row, dict) else None
        if not isinstance(art, dict) or not {"sha256", "bytes", "copy"} <= set(art):
            raise EdgesegError(
                f"baseline {path}: row {row_id!r} has no artifact sha256/bytes/copy; record the baseline again"
            )
        if not isinstance(art["sha256"], str) or not isinstance(art["bytes"], int) or isinstance(art["bytes"], bool):
            raise EdgesegError(f"baseline {path}: row {row_id!r}: artifact sha256/bytes have the wrong types")
    baseline = Baseline(path, rows)
    for row_id in rows:
        baseline.copy_path(row_id)  # a copy outside the baseline's folder is refused before anything runs
    return baseline


def write_baseline(path: Path, results: list[RowResult], edgeseg_version: str, config_path: Path) -> Path:
    """Write the baseline (atomic) and copy each row's artifact beside it, so later runs time against it."""
    path = Path(path)
    artifacts_dir = Baseline(path, {}).artifacts_dir
    rows = {}
    for r in results:
        copy = artifacts_dir / Path(r.artifact["folder"]).name
        if Path(r.artifact["folder"]).resolve() != copy.resolve():
            tmp = copy.with_name(copy.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(r.artifact["folder"], tmp)
            shutil.rmtree(copy, ignore_errors=True)
            tmp.rename(copy)
        rows[r.row_id] = {
            "model": r.model,
            "target": r.target,
            "device": r.device,
            "artifact": {
                "sha256": r.artifact["sha256"],
                "bytes": r.artifact["bytes"],
                "copy": str(copy.relative_to(path.parent)),
            },
            "miou": r.miou,
            "miou_reference": r.miou_reference,
            "parity": r.parity,
        }
    kept = {Path(row["artifact"]["copy"]).name for row in rows.values()}
    if artifacts_dir.is_dir():
        for old in artifacts_dir.iterdir():  # copies of rows no longer in the baseline
            if old.is_dir() and old.name not in kept:
                shutil.rmtree(old)
    data = {
        "version": BASELINE_VERSION,
        "edgeseg": edgeseg_version,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": str(config_path),
        "latency": LATENCY_NOTE,
        "rows": rows,
    }
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())
    return path


# --------------------------------------------------------------------------------------------------------------
# Side-by-side latency
# --------------------------------------------------------------------------------------------------------------


@dataclass
class LatencyRatio:
    ratio: float  # median over rounds of (current median / baseline median)
    spread: float  # half the range of the per-round ratios
    rounds: list[float]
    current_ms: list[float]  # per-round medians, this run only (not stored in the baseline)
    baseline_ms: list[float]
    runtime: str


def latency_ratio(
    current: Path, baseline: Path, threads: int, timing: TimingOptions, timer: Callable[[], float] = time.perf_counter
) -> LatencyRatio:
    """Time both artifacts here with bench's interleaved timer (run by run, which goes first alternating; warm-up
    each round), so a change in the load of a shared machine hits both alike; per round, the ratio of the two
    medians."""
    from edgeseg.backends import load_artifact
    from edgeseg.bench.host import inference_call

    cur_art, base_art = load_artifact(current, threads), load_artifact(baseline, threads)
    calls = (inference_call(cur_art), inference_call(base_art))
    return ratio_of_rounds(interleave(calls, timing.runs, timing.warmup, timing.rounds, timer), cur_art.runtime)


def ratio_of_rounds(samples: list[list[list[float]]], runtime: str) -> LatencyRatio:
    """``LatencyRatio`` of ``interleave``'s samples of (current, baseline): per round the ratio of the medians,
    judged as their median, with half their range as the spread."""
    medians = [[statistics.median(r[k]) for r in samples] for k in (0, 1)]
    rounds = [c / b for c, b in zip(*medians)]
    spread = (max(rounds) - min(rounds)) / 2
    return LatencyRatio(statistics.median(rounds), spread, rounds, medians[0], medians[1], runtime)


# --------------------------------------------------------------------------------------------------------------
# Judging a row
# --------------------------------------------------------------------------------------------------------------


@dataclass
class RowResult:
    row_id: str  # model/target/size/device (the baseline's key)
    model: str
    target: str
    device: str
    artifact: dict  # folder, file, sha256, bytes, cached
    runtime: str | None
    miou: float | None
    miou_reference: float | None
    images: int | None
    parity: dict  # argmax_agreement, snr_db, images, runtime
    gates: list[Gate] = field(default_factory=list)
    seconds: float = 0.0
    latency: dict | None = None
    # mIoU minus the PyTorch reference's on the same images, with its paired bootstrap interval and verdict
    # (``edgeseg.eval.stats.paired_difference``): difference, ci95, verdict, images, text
    miou_vs_reference: dict | None = None

    @property
    def passed(self) -> bool:
        return all(g.status != "failed" for g in self.gates)

    def failures(self) -> list[Gate]:
        return failures(self.gates)

    def cause(self) -> str:
        return "; ".join(g.reason() for g in self.failures())

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def baseline_gates(
    th: Thresholds,
    row_id: str,
    artifact: dict,
    baseline: Baseline | None,
    update: bool,
    ratio: LatencyRatio | None,
    device: str | None = None,
    why_not_run: str | None = None,
) -> list[Gate]:
    """The registry's baseline gates (``edgeseg.gates``) for one row: it must be in the baseline; artifact size
    growth; side-by-side latency ratio. ``device``: the row's device where that is not this machine (the ratio
    says it was timed here). With ``update`` these are reported but not failed on: the run is recording the new
    baseline."""
    return judge_baseline(
        Evidence(
            precision="fp32",  # not judged by a baseline gate
            thresholds=th,
            row_id=row_id,
            artifact=artifact,
            baseline_rows=baseline.rows if baseline else None,
            updating_baseline=update,
            latency_ratio=ratio,
            ratio_timed_elsewhere=device,
            why_not_run=why_not_run,
        )
    )


# --------------------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------------------


@dataclass
class CheckReport:
    config: str
    baseline: str
    updated_baseline: bool
    data: str
    images: int | None
    rows: list[RowResult]
    seconds: float
    machine: dict
    # path, runs, last, flag_after, unreadable, rows: row id -> RowHistory (``attach_history``); None: not kept
    history: dict | None = None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def flagged(self) -> list[str]:
        """Rows whose accuracy gate failed ``flag_after`` runs in a row."""
        rows = (self.history or {}).get("rows", {})
        return [row_id for row_id, h in rows.items() if h.flagged]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["rows"] = [r.as_dict() for r in self.rows]
        d["passed"] = self.passed
        d["latency"] = LATENCY_NOTE
        return d


# a column's gate, or the gate that stands in for it when it could not run (no baseline: latency and size; untrained
# weights: the mIoU gates)
_STANDS_IN = {"latency": "baseline", "size": "baseline", "miou": "miou"}


def cell(gates: list[Gate], name: str) -> str:
    g = next((g for g in gates if g.name == name), None)
    if g is None and name in _STANDS_IN:
        g = next((g for g in gates if g.name == _STANDS_IN[name] and g.status == "not judged"), None)
    if g is None:
        return "-"
    mark = {"passed": "", "failed": "FAIL ", "not judged": "n/j "}[g.status]
    return mark + g.detail


def markdown(report: CheckReport) -> str:
    """check.md: a summary line, one table row per check row, failures spelled out (a pull-request comment)."""
    failed = [r for r in report.rows if not r.passed]
    head = (
        f"## edgeseg check: {'passed' if report.passed else 'FAILED'} "
        f"({len(report.rows) - len(failed)}/{len(report.rows)} rows passed)"
    )
    lines = [
        head,
        "",
        f"Config `{report.config}`, baseline `{report.baseline}`"
        + (" (updated by this run)" if report.updated_baseline else "")
        + f"; mIoU on `{report.data}` ({report.images} images).",
        "",
        "| row | status | parity | mIoU (PyTorch) | latency vs baseline | size | lint |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        miou = cell(r.gates, "miou") if r.miou is None else f"{100 * r.miou:.2f} ({100 * r.miou_reference:.2f})"
        if r.miou is not None and r.miou_vs_reference:
            v = r.miou_vs_reference
            verdict = "too few images to tell apart" if v["verdict"] == "too few images" else v["verdict"]
            miou += f"; {100 * v['difference']:+.2f} [{100 * v['ci95'][0]:+.2f}, {100 * v['ci95'][1]:+.2f}]: {verdict}"
        cells = [
            f"`{r.row_id}`",
            "pass" if r.passed else "**FAIL**",
            cell(r.gates, "parity"),
            miou,
            cell(r.gates, "latency"),
            cell(r.gates, "size"),
            cell(r.gates, "lint"),
        ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    if failed:
        lines += ["", "### Failures", ""]
        lines += [f"- `{r.row_id}`: {r.cause()}" for r in failed]
    lines += history_markdown(report)
    flagged = report.flagged()
    if flagged:
        after = report.history["flag_after"]
        lines += ["", f"**Flagged** (accuracy gate failed {after} or more runs in a row): "]
        lines[-1] += ", ".join(f"`{row_id}`" for row_id in flagged)
    lines += [f"\n_Warning: {note}_" for note in load_notes(report)]
    lines += ["", f"_Latency: {LATENCY_NOTE}._", ""]
    return "\n".join(lines)


def junit_xml(report: CheckReport) -> bytes:
    """JUnit XML: one testsuite, one testcase per row; a failing row's <failure> message names the cause."""
    failures = sum(not r.passed for r in report.rows)
    suites = ET.Element(
        "testsuites",
        name="edgeseg check",
        tests=str(len(report.rows)),
        failures=str(failures),
        errors="0",
        time=f"{report.seconds:.3f}",
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="edgeseg check",
        tests=str(len(report.rows)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{report.seconds:.3f}",
        timestamp=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    for r in report.rows:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"edgeseg.check.{r.model}",
            name=f"{r.target} on {r.device}",
            time=f"{r.seconds:.3f}",
        )
        rh = (report.history or {}).get("rows", {}).get(r.row_id)
        if not r.passed:
            message = r.cause()
            if rh is not None and rh.flagged:
                message += f" ({flag_text(rh, report.history['flag_after'])})"
            failure = ET.SubElement(case, "failure", message=message, type="edgeseg.check")
            failure.text = "\n".join(f"{g.name}: {g.detail}" for g in r.failures())
        out = ET.SubElement(case, "system-out")
        lines = [f"[{g.status}] {g.name}: {g.detail}" for g in r.gates]
        if r.miou_vs_reference:
            lines.append(f"vs PyTorch reference: {r.miou_vs_reference['text']}")
        if rh is not None:
            lines += [
                f"since baseline: {since_text(rh)}",
                f"mIoU, last runs: {trend(rh.miou, 100, '.2f')}",
                f"latency vs baseline, last runs: {trend(rh.latency_ratio, 1, '.2f')}",
                f"history: {flag_text(rh, report.history['flag_after'])}",
            ]
        out.text = "\n".join(lines)
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x
