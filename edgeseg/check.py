"""``edgeseg check``: the regression gate a CI job runs on exported artifacts.

This module holds what does not need the commands: the config schema (``edgeseg.yaml``), the baseline file, the
judging of one row (model x target x device) against thresholds and the baseline, the side-by-side latency
ratio (its own loop: the two artifacts alternate call by call, which bench's one-artifact loop cannot do; the
statistics are bench's), and the renderers (check.md, JUnit XML). ``edgeseg.commands.check`` exports,
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
import shutil
import statistics
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeseg.errors import EdgesegError
from edgeseg.export_request import ExportOptions
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
    model_config = ConfigDict(extra="forbid")


class Thresholds(_Strict):
    """Gates of a row. ``None`` turns a gate off (and the report says "not judged")."""

    miou_floor: float | None = Field(None, ge=0, le=1)  # default: the device profile's floor
    max_miou_drop: float | None = Field(1.0, ge=0)  # mIoU points vs the PyTorch reference on the same images
    min_argmax_agreement: float | None = Field(None, ge=0, le=1)  # default: per precision (fp32 0.999 ...)
    min_snr_db: float | None = None
    max_latency_ratio: float | None = Field(1.10, gt=0)  # current / baseline, side by side
    latency_noise: float = Field(0.05, ge=0)  # ratio margin added to max_latency_ratio (at least the spread seen)
    max_size_growth: float | None = Field(0.05, ge=0)  # fraction of the baseline artifact's bytes
    lint_clean: bool = True


class ModelEntry(_Strict):
    name: str
    weights: str
    dataset: str | None = None
    size: str | None = None  # HxW, default: the dataset's
    targets: list[str] = Field(min_length=1)
    devices: list[str] = ["host"]
    export: ExportOptions = ExportOptions()
    thresholds: dict = {}  # overrides of the config's thresholds for this model's rows

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, value: list[str]) -> list[str]:
        from edgeseg.backends import known_target_names

        return known_target_names(value)


class ArtifactEntry(_Strict):
    """An artifact folder exported elsewhere (its manifest names model, target and size)."""

    path: str
    devices: list[str] = ["host"]
    thresholds: dict = {}


class TimingOptions(_Strict):
    warmup: int = Field(5, ge=0)  # untimed runs of each artifact before each round
    runs: int = Field(20, ge=1)  # timed runs of each artifact per round, interleaved one by one
    rounds: int = Field(3, ge=1)  # the judged ratio is the median over rounds


class CheckConfig(_Strict):
    version: int = 1
    data: str = "sample"  # labelled data (SPLIT/images, SPLIT/labels); "sample": the bundled CamVid sample
    split: str = "val"
    limit: int | None = Field(None, ge=1)  # mIoU on the first N images
    calib_data: str | None = None  # INT8 targets: train/images + train/labels
    parity_images: int = Field(5, ge=1)
    threads: int = Field(2, ge=1)
    out: str = ".edgeseg/artifacts"  # artifact cache
    timing: TimingOptions = TimingOptions()
    thresholds: Thresholds = Thresholds()
    models: list[ModelEntry] = []
    artifacts: list[ArtifactEntry] = []

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


def resolve_path(config_path: Path, value: str) -> Path:
    """Paths in the config are relative to the config file's folder."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(config_path).resolve().parent / p


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

    def artifact_folder(self, row_id: str) -> Path | None:
        entry = self.rows.get(row_id)
        if not entry:
            return None
        folder = self.path.parent / entry["artifact"]["copy"]
        return folder if (folder / "manifest.json").is_file() else None


def read_baseline(path: Path, update: bool) -> Baseline | None:
    """The baseline, or None when it does not exist and ``update`` asks to create it (never silently otherwise)."""
    path = Path(path)
    if not path.is_file():
        if update:
            return None
        raise EdgesegError(
            f"baseline {path} not found: record one with `edgeseg check --config ... --baseline {path} "
            "--update-baseline` and commit it"
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
    return Baseline(path, rows)


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
    """Time both artifacts here, interleaved run by run (which goes first alternates), so a change in the load of
    a shared machine hits both alike; per round, the ratio of the two medians (bench's statistics)."""
    from edgeseg.backends import load_artifact
    from edgeseg.bench.host import inference_call
    from edgeseg.bench.stats import summarize

    cur_art, base_art = load_artifact(current, threads), load_artifact(baseline, threads)
    calls = (inference_call(cur_art), inference_call(base_art))
    medians: tuple[list[float], list[float]] = ([], [])
    for _ in range(timing.rounds):
        for call in calls:
            for _ in range(timing.warmup):
                call()
        samples: tuple[list[float], list[float]] = ([], [])
        for i in range(timing.runs):
            for k in (0, 1) if i % 2 == 0 else (1, 0):
                t0 = timer()
                calls[k]()
                samples[k].append(1000.0 * (timer() - t0))
        for k in (0, 1):
            medians[k].append(summarize(samples[k], timing.warmup).median_ms)
    rounds = [c / b for c, b in zip(*medians)]
    spread = (max(rounds) - min(rounds)) / 2
    return LatencyRatio(statistics.median(rounds), spread, rounds, medians[0], medians[1], cur_art.runtime)


# --------------------------------------------------------------------------------------------------------------
# Judging a row
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Gate:
    name: str  # lint | parity | snr | miou floor | miou drop | latency | size | baseline | runs here
    status: str  # passed | failed | not judged
    detail: str


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

    @property
    def passed(self) -> bool:
        return all(g.status != "failed" for g in self.gates)

    def failures(self) -> list[Gate]:
        return [g for g in self.gates if g.status == "failed"]

    def cause(self) -> str:
        return "; ".join(f"{g.name}: {g.detail}" for g in self.failures())

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def absolute_gates(
    th: Thresholds,
    lint: dict,
    parity: dict,
    agreement_min: float,
    miou,
    miou_ref,
    floor,
    why_not_run,
    untrained: bool = False,
) -> list[Gate]:
    """Gates that need no baseline: lint, parity vs PyTorch, mIoU floor and drop vs the PyTorch reference (not
    judged for untrained weights: their mIoU means nothing)."""
    gates = []
    if th.lint_clean:
        if lint["clean"]:
            gates.append(Gate("lint", "passed", f"clean ({lint['rules']} rules)"))
        else:
            gates.append(Gate("lint", "failed", f"{lint['errors']} error(s) with the {lint['rules']} rules"))
    if why_not_run:
        gates.append(Gate("runs here", "failed", f"cannot evaluate this artifact here: {why_not_run}"))
        return gates
    agree = parity.get("argmax_agreement")
    if agree is None:
        gates.append(Gate("parity", "failed", f"not measured ({parity.get('runtime')})"))
    elif agree < agreement_min:
        gates.append(Gate("parity", "failed", f"argmax agreement {_pct(agree)} < {_pct(agreement_min)}"))
    else:
        gates.append(Gate("parity", "passed", f"argmax agreement {_pct(agree)} >= {_pct(agreement_min)}"))
    if th.min_snr_db is not None:
        snr = parity.get("snr_db")
        if snr is None:
            gates.append(Gate("snr", "not judged", "the artifact outputs labels (no logits to compare)"))
        elif snr < th.min_snr_db:
            gates.append(Gate("snr", "failed", f"SNR {snr:.1f} dB < {th.min_snr_db:g} dB"))
        else:
            gates.append(Gate("snr", "passed", f"SNR {snr:.1f} dB >= {th.min_snr_db:g} dB"))
    if untrained:
        if floor is not None or th.max_miou_drop is not None:
            gates.append(Gate("miou", "not judged", "untrained weights (--weights random): no mIoU"))
        return gates
    if floor is not None:
        ok = miou >= floor
        sign = ">=" if ok else "<"
        gates.append(Gate("miou floor", "passed" if ok else "failed", f"mIoU {_pct(miou)} {sign} {_pct(floor)}"))
    if th.max_miou_drop is not None:
        drop = 100 * (miou_ref - miou)
        ok = drop <= th.max_miou_drop
        text = f"drop {drop:.2f} points vs PyTorch {_pct(miou_ref)} {'<=' if ok else '>'} {th.max_miou_drop:g}"
        gates.append(Gate("miou drop", "passed" if ok else "failed", text))
    return gates


def baseline_gates(
    th: Thresholds, row_id: str, artifact: dict, baseline: Baseline | None, update: bool, ratio: LatencyRatio | None
) -> list[Gate]:
    """Gates against the baseline: it must have this row; artifact size growth; side-by-side latency ratio.

    With ``update`` these are reported but not failed on: the run is recording the new baseline."""
    entry = baseline.rows.get(row_id) if baseline else None
    soft = "not judged" if update else "failed"
    if entry is None:
        if baseline is None:  # none recorded yet: nothing to compare with, which is not a regression
            return [Gate("baseline", "not judged", "no baseline yet: `--update-baseline` records one")]
        return [
            Gate(
                "baseline",
                "not judged" if update else "failed",
                f"row {row_id} is not in the baseline: run with --update-baseline",
            )
        ]
    gates = []
    base = entry["artifact"]
    if th.max_size_growth is not None:
        growth = artifact["bytes"] / base["bytes"] - 1
        ok = growth <= th.max_size_growth
        text = (
            f"{artifact['bytes'] / 1e6:.2f} MB, {100 * growth:+.1f} % vs baseline "
            f"{'<=' if ok else '>'} +{100 * th.max_size_growth:g} %"
        )
        gates.append(Gate("size", "passed" if ok else soft, text))
    if th.max_latency_ratio is not None:
        if artifact["sha256"] == base["sha256"]:
            gates.append(Gate("latency", "passed", "same artifact as the baseline (sha256): not re-timed"))
        elif ratio is None:
            gates.append(
                Gate(
                    "latency",
                    "not judged",
                    f"baseline artifact copy {base['copy']} not present here, so nothing to time side by side "
                    "(a stored absolute time from another machine is not comparable)",
                )
            )
        else:
            margin = max(th.latency_noise, ratio.spread)
            limit = th.max_latency_ratio + margin
            ok = ratio.ratio <= limit
            text = (
                f"x{ratio.ratio:.2f} vs baseline side by side ({len(ratio.rounds)} rounds, spread "
                f"±{ratio.spread:.2f}) {'<=' if ok else '>'} x{th.max_latency_ratio:g} + noise {margin:.2f}"
            )
            gates.append(Gate("latency", "passed" if ok else soft, text))
    return gates


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

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

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
        if not r.passed:
            failure = ET.SubElement(case, "failure", message=r.cause(), type="edgeseg.check")
            failure.text = "\n".join(f"{g.name}: {g.detail}" for g in r.failures())
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join(f"[{g.status}] {g.name}: {g.detail}" for g in r.gates)
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x
