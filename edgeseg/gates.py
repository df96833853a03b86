"""The gates: every pass/fail judgement edgeseg makes of an artifact, in one registry.

``edgeseg check`` (``edgeseg.check``), ``edgeseg bench`` and ``edgeseg sweep`` (``bench_artifact``) judge an
artifact the same way: they gather what they measured into an ``Evidence`` record and ask the registry, which runs
every registered ``GateRule`` over it. A rule returns a ``Gate`` (passed, failed or "not judged", with a one-line
detail), or None where the evidence it judges was not gathered (bench measures no PyTorch reference mIoU, check no
latency on the device): a gate is never invented from missing numbers.

Two kinds of gates:

- absolute gates need only the artifact and its measurements (lint, parity, SNR, mIoU floor, mIoU drop, latency
  budget on the device): ``judge_absolute``;
- baseline gates compare with the committed baseline of ``edgeseg check`` (the row is in it, size growth, latency
  ratio timed side by side): ``judge_baseline``.

Adding a gate is one class here: subclass ``GateRule``, give it a ``name`` and a ``judge`` (and a docstring saying
what it judges), and decorate it with ``@register_gate``; rules run in the order they are registered. A threshold
the user sets goes in ``Thresholds`` below (check's config reads it from there). Every caller, its reports (the
terminal, check.md, JUnit, JSON, bench.md) and its pass/fail then pick the gate up.

This module is low in the layers: it imports nothing from ``edgeseg.commands`` or ``edgeseg.cli``.
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeseg.residency import ResidencyLimit, from_dicts

# Parity gate per precision: argmax agreement with the fp32 PyTorch reference on the parity images.
PARITY_MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.99, "bf16": 0.99, "int8": 0.95}

UNTRAINED_NOTE = "untrained weights (--weights random): no mIoU"


@dataclass
class Gate:
    """One judgement of one artifact (a row of ``edgeseg check``, a target of ``edgeseg bench``)."""

    name: str  # lint | runs here | parity | snr | miou floor | miou drop | miou | budget | baseline | size | latency
    status: str  # passed | failed | not judged
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def reason(self) -> str:
        """The gate as one line, ``name: detail`` (bench's reasons, check's failure cause)."""
        return f"{self.name}: {self.detail}"


class Thresholds(BaseModel):
    """The limits the gates judge against (``thresholds:`` of check's config, overridable per model). ``None``
    turns a gate off (check's report then says "not judged" or leaves it out)."""

    # finite only: a nan or inf limit makes its gate unable to fail (every comparison with nan is False)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    miou_floor: float | None = Field(None, ge=0, le=1)  # default: the device profile's floor
    max_miou_drop: float | None = Field(1.0, ge=0, le=100)  # mIoU points vs the PyTorch reference on the same images
    min_argmax_agreement: float | None = Field(None, ge=0, le=1)  # default: per precision (PARITY_MIN_AGREEMENT)
    min_snr_db: float | None = Field(None, ge=-200, le=200)
    max_latency_ratio: float | None = Field(1.10, gt=0, le=1000)  # current / baseline, side by side
    latency_noise: float = Field(0.05, ge=0, le=10)  # margin added to max_latency_ratio (at least the spread seen)
    max_size_growth: float | None = Field(0.05, ge=0, le=1000)  # fraction of the baseline artifact's bytes
    lint_clean: bool = True
    # per accelerator (nnapi, coreml-mlprogram, tflite-gpu, ...): overrides / extends the device profile's
    residency: dict[str, ResidencyLimit] = {}


@dataclass
class Evidence:
    """What is known of one artifact on one device, for the gates to judge. A field left None was not measured
    (or does not apply), and the gates that judge it are not run."""

    precision: str  # fp32 | fp16 | int8: the parity gate's default minimum
    thresholds: Thresholds = field(default_factory=Thresholds)
    folder: str | None = None  # the artifact folder (named in the lint gate's hint)
    lint: Mapping[str, Any] | None = None  # clean, errors, rules (a lint report or the manifest's "lint")
    parity: Mapping[str, Any] | None = None  # argmax_agreement, snr_db, runtime (the manifest's "parity")
    # A parity the manifest does not have fails (check: the artifact runs here, so it could have been measured);
    # False: it is not judged (bench shows artifacts whose runtime is elsewhere, Core ML off macOS).
    parity_required: bool = True
    why_not_run: str | None = None  # why the artifact cannot run here (check): the gates that need a run are not run
    untrained: bool = False  # untrained weights: the mIoU gates are "not judged"
    miou: float | None = None  # mIoU of the artifact run here
    miou_reference: float | None = None  # mIoU of the PyTorch model on the same images and input size
    profile_miou_floor: float | None = None  # the device profile's floor (``thresholds.miou_floor`` overrides it)
    # INT8 artifacts: the export's held-out check against --max-miou-drop (the manifest's
    # quantization.mixed_precision); None: not an INT8 artifact, or exported without a budget
    int8_budget: Mapping[str, Any] | None = None
    latency_ms: float | None = None  # median latency measured on the device (not an estimate)
    budget_ms: float | None = None  # the device profile's latency budget
    latency_device: str | None = None  # where ``latency_ms`` was measured; None: this machine
    # baseline (edgeseg check)
    row_id: str | None = None  # model/target/HxW/device, the baseline's key
    artifact: Mapping[str, Any] | None = None  # sha256, bytes of the artifact file
    baseline_rows: Mapping[str, dict] | None = None  # the baseline's rows; None: no baseline recorded yet
    updating_baseline: bool = False  # recording a new baseline: baseline gates are reported, never failed
    latency_ratio: Any = None  # check.LatencyRatio (ratio, spread, rounds) timed side by side here
    ratio_timed_elsewhere: str | None = None  # the row's device when the ratio was timed on this machine instead
    # residency records of the artifact (the manifest's "residency") and the device profile's accelerator limits
    residency: list | None = None
    profile_residency: Mapping[str, ResidencyLimit] | None = None

    def residency_limits(self) -> dict[str, ResidencyLimit]:
        """The device profile's limits per accelerator, each field overridden by the config's thresholds."""
        limits = {a: lim.model_copy() for a, lim in (self.profile_residency or {}).items()}
        for acc, lim in self.thresholds.residency.items():
            base = limits.get(acc, ResidencyLimit())
            limits[acc] = base.model_copy(update=lim.model_dump(exclude_unset=True))
        return limits

    @property
    def baseline_entry(self) -> dict | None:
        return self.baseline_rows.get(self.row_id) if self.baseline_rows is not None else None


class GateRule(ABC):
    """One gate: ``judge(evidence)`` returns its ``Gate``, or None where the evidence it needs is absent."""

    name: ClassVar[str] = ""
    baseline: ClassVar[bool] = False  # judged against check's baseline (``judge_baseline``), not alone
    needs_run: ClassVar[bool] = False  # judges the artifact run here: not judged where it cannot run here
    needs_trained_weights: ClassVar[bool] = False  # judges an mIoU: "not judged" for untrained weights

    def enabled(self, ev: Evidence) -> bool:
        """Whether the gate is on (its threshold is set)."""
        return True

    def needs_trained(self, ev: Evidence) -> bool:
        """Whether this verdict needs trained weights (``needs_trained_weights`` unless the evidence says not)."""
        return self.needs_trained_weights

    @abstractmethod
    def judge(self, ev: Evidence) -> Gate | None:
        """The gate's verdict on ``ev``; None where the evidence it needs was not measured."""


GATES: dict[str, GateRule] = {}


def register_gate(cls: type[GateRule]) -> type[GateRule]:
    """Class decorator: add one instance of the rule to ``GATES`` (rules run in registration order)."""
    if not cls.name:
        raise ValueError(f"gate rule {cls.__name__} has no name")
    if cls.name in GATES:
        raise ValueError(f"a gate named {cls.name!r} is already registered ({type(GATES[cls.name]).__name__})")
    GATES[cls.name] = cls()
    return cls


def _judge(ev: Evidence, baseline: bool) -> list[Gate]:
    gates: list[Gate] = []
    untrained_noted = False
    for rule in GATES.values():
        if rule.baseline != baseline or not rule.enabled(ev):
            continue
        if rule.needs_run and ev.why_not_run:
            continue
        if ev.untrained and rule.needs_trained(ev):
            if not untrained_noted:  # one note for all the mIoU gates
                gates.append(Gate("miou", "not judged", UNTRAINED_NOTE))
                untrained_noted = True
            continue
        gate = rule.judge(ev)
        if gate is not None:
            gates.append(gate)
    return gates


def judge_absolute(ev: Evidence) -> list[Gate]:
    """The gates that need no baseline, in registration order."""
    return _judge(ev, baseline=False)


def judge_baseline(ev: Evidence) -> list[Gate]:
    """The gates against check's baseline. With ``ev.updating_baseline`` they are reported but not failed on: the
    run is recording the new baseline."""
    return _judge(ev, baseline=True)


def failures(gates: list[Gate]) -> list[Gate]:
    return [g for g in gates if g.failed]


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _verdict(ok: bool) -> str:
    return "passed" if ok else "failed"


# --------------------------------------------------------------------------------------------------------------
# Absolute gates
# --------------------------------------------------------------------------------------------------------------


@register_gate
class LintClean(GateRule):
    """The artifact passes its target's conformance rules (``edgeseg lint``): no errors. Off with
    ``lint_clean: false``."""

    name = "lint"

    def enabled(self, ev: Evidence) -> bool:
        return ev.thresholds.lint_clean

    def judge(self, ev: Evidence) -> Gate | None:
        lint = ev.lint
        if lint is None:
            return None
        if lint["clean"]:
            return Gate(self.name, "passed", f"clean ({lint['rules']} rules)")
        hint = f" ({shlex.join(['edgeseg', 'lint', ev.folder])})" if ev.folder else ""
        return Gate(self.name, "failed", f"{lint['errors']} error(s) with the {lint['rules']} rules{hint}")


@register_gate
class RunsHere(GateRule):
    """The artifact can be run on this machine, so that its parity and mIoU can be judged (check only: bench and
    sweep report an artifact whose runtime is elsewhere on its device)."""

    name = "runs here"

    def judge(self, ev: Evidence) -> Gate | None:
        if not ev.why_not_run:
            return None
        return Gate(self.name, "failed", f"cannot evaluate this artifact here: {ev.why_not_run}")


@register_gate
class ParityAgreement(GateRule):
    """Argmax agreement of the artifact with the fp32 PyTorch model on the parity images is at least
    ``min_argmax_agreement`` (default per precision: ``PARITY_MIN_AGREEMENT``)."""

    name = "parity"
    needs_run = True

    def judge(self, ev: Evidence) -> Gate | None:
        if ev.parity is None:
            return None
        minimum = ev.thresholds.min_argmax_agreement
        if minimum is None:
            minimum = PARITY_MIN_AGREEMENT[ev.precision]
        agree = ev.parity.get("argmax_agreement")
        if agree is None:
            status = "failed" if ev.parity_required else "not judged"
            return Gate(self.name, status, f"not measured ({ev.parity.get('runtime')})")
        if agree < minimum:
            return Gate(self.name, "failed", f"argmax agreement {_pct(agree)} < {_pct(minimum)}")
        return Gate(self.name, "passed", f"argmax agreement {_pct(agree)} >= {_pct(minimum)}")


@register_gate
class Snr(GateRule):
    """SNR of the artifact's logits against the fp32 PyTorch logits is at least ``min_snr_db`` (off by default;
    "not judged" for an artifact that outputs labels)."""

    name = "snr"
    needs_run = True

    def enabled(self, ev: Evidence) -> bool:
        return ev.thresholds.min_snr_db is not None

    def judge(self, ev: Evidence) -> Gate | None:
        if ev.parity is None:
            return None
        snr, minimum = ev.parity.get("snr_db"), ev.thresholds.min_snr_db
        if snr is None:
            return Gate(self.name, "not judged", "the artifact outputs labels (no logits to compare)")
        if snr < minimum:
            return Gate(self.name, "failed", f"SNR {snr:.1f} dB < {minimum:g} dB")
        return Gate(self.name, "passed", f"SNR {snr:.1f} dB >= {minimum:g} dB")


@register_gate
class MiouFloor(GateRule):
    """mIoU of the artifact run here is at least the floor: ``miou_floor``, else the device profile's."""

    name = "miou floor"
    needs_run = True
    needs_trained_weights = True

    @staticmethod
    def floor(ev: Evidence) -> float | None:
        th = ev.thresholds.miou_floor
        return th if th is not None else ev.profile_miou_floor

    def enabled(self, ev: Evidence) -> bool:
        return self.floor(ev) is not None

    def judge(self, ev: Evidence) -> Gate | None:
        if ev.miou is None:
            return None
        floor = self.floor(ev)
        ok = ev.miou >= floor
        return Gate(self.name, _verdict(ok), f"mIoU {_pct(ev.miou)} {'>=' if ok else '<'} {_pct(floor)}")


@register_gate
class MiouDrop(GateRule):
    """The artifact's mIoU is at most ``max_miou_drop`` points below the PyTorch model's on the same images and
    input size."""

    name = "miou drop"
    needs_run = True
    needs_trained_weights = True

    def enabled(self, ev: Evidence) -> bool:
        return ev.thresholds.max_miou_drop is not None

    def judge(self, ev: Evidence) -> Gate | None:
        if ev.miou is None or ev.miou_reference is None:
            return None
        limit = ev.thresholds.max_miou_drop
        drop = 100 * (ev.miou_reference - ev.miou)
        ok = drop <= limit
        text = f"drop {drop:.2f} points vs PyTorch {_pct(ev.miou_reference)} {'<=' if ok else '>'} {limit:g}"
        return Gate(self.name, _verdict(ok), text)


@register_gate
class Int8Budget(GateRule):
    """An INT8 artifact stayed within the mIoU budget it was exported with (``--max-miou-drop``), as the export
    measured on held-out train images the calibration did not use."""

    name = "int8 budget"
    needs_trained_weights = True

    def enabled(self, ev: Evidence) -> bool:
        mp = ev.int8_budget  # absent: not an INT8 artifact, or exported without a budget
        return bool(mp) and mp.get("budget") is not None and mp.get("drop_final") is not None

    def needs_trained(self, ev: Evidence) -> bool:
        # an argmax-agreement budget compares int8 with fp32, not with labels: untrained weights are judged too
        return (ev.int8_budget or {}).get("objective") != "agreement"

    def judge(self, ev: Evidence) -> Gate | None:
        mp = ev.int8_budget
        ok = bool(mp.get("within_budget", mp["drop_final"] <= mp["budget"]))
        what = {"worst-class": "worst-class IoU drop", "agreement": "argmax disagreement"}.get(
            mp.get("objective", "mean"), "drop"
        )
        text = (
            f"held-out {what} {mp['drop_final']:.2f} points {'<=' if ok else '>'} budget {mp['budget']:g} "
            f"({mp.get('holdout_images', '?')} images)"
        )
        return Gate(self.name, _verdict(ok), text)


@register_gate
class LatencyBudget(GateRule):
    """The median latency measured on the device (never an estimate) is within the device profile's budget."""

    name = "budget"

    def judge(self, ev: Evidence) -> Gate | None:
        if ev.latency_ms is None or ev.budget_ms is None:
            return None
        where = f" on {ev.latency_device}" if ev.latency_device else ""
        ok = ev.latency_ms <= ev.budget_ms
        text = f"median {ev.latency_ms:.1f} ms{where} {'within' if ok else 'over'} the {ev.budget_ms} ms budget"
        return Gate(self.name, _verdict(ok), text)


class _ResidencyRule(GateRule):
    """Shared by the residency gates: judge each accelerator that has a limit and a record of this artifact.
    Accelerators another format reaches (a profile naming nnapi, a TFLite artifact) are not this artifact's: no
    gate. One failing accelerator fails the gate, its line naming the accelerator and the ops left out."""

    field: ClassVar[str] = ""

    def judge(self, ev: Evidence) -> Gate | None:
        if not ev.residency:
            return None
        limits = {a: getattr(lim, self.field) for a, lim in ev.residency_limits().items()}
        limits = {a: v for a, v in limits.items() if v is not None}
        records = {r.accelerator: r for r in from_dicts(ev.residency) if r.accelerator in limits}
        if not records:
            return None
        bad, good = [], []
        for acc, r in records.items():
            verdict = self.check(r, limits[acc])
            (good if verdict is None else bad).append(verdict or f"{acc} {self.value(r)}")
        if bad:
            return Gate(self.name, "failed", "; ".join(bad))
        return Gate(self.name, "passed", ", ".join(good))

    @staticmethod
    def left(r) -> str:
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(r.unsupported_ops.items()))
        return f" (not taken: {ops}; {r.tool})" if ops else f" ({r.tool})"


@register_gate
class ResidencyPartitions(_ResidencyRule):
    """Each accelerator with a ``max_partitions`` limit (device profile ``accelerators:``, check's
    ``thresholds.residency``) takes the artifact in at most that many subgraphs (every extra one is a copy between
    the accelerator and the CPU fallback). Unknown partition counts (the tool cannot tell) are "not judged"."""

    name = "partitions"
    field = "max_partitions"

    def value(self, r) -> str:
        return f"{r.partitions} partition(s)"

    def check(self, r, limit: int) -> str | None:
        if r.partitions is None:
            return None
        if r.partitions <= limit:
            return None
        return f"{r.accelerator}: {r.partitions} partitions > {limit}" + self.left(r)


@register_gate
class ResidencyDelegated(_ResidencyRule):
    """Each accelerator with a ``min_delegated_fraction`` limit takes at least that share of the artifact's nodes
    (the rest runs on the CPU fallback)."""

    name = "delegated"
    field = "min_delegated_fraction"

    def value(self, r) -> str:
        return f"{r.nodes_supported}/{r.nodes_total}"

    def check(self, r, limit: float) -> str | None:
        if r.fraction >= limit:
            return None
        return (
            f"{r.accelerator}: {r.nodes_supported}/{r.nodes_total} nodes ({_pct(r.fraction)}) < {_pct(limit)}"
            + self.left(r)
        )


# --------------------------------------------------------------------------------------------------------------
# Baseline gates (edgeseg check)
# --------------------------------------------------------------------------------------------------------------


@register_gate
class InBaseline(GateRule):
    """The row is in the baseline (the other baseline gates need it). No baseline recorded at all is "not
    judged": nothing to compare with is not a regression."""

    name = "baseline"
    baseline = True

    def judge(self, ev: Evidence) -> Gate | None:
        if ev.baseline_entry is not None:
            return None
        if ev.baseline_rows is None:
            return Gate(self.name, "not judged", "no baseline yet: `--update-baseline` records one")
        status = "not judged" if ev.updating_baseline else "failed"
        return Gate(self.name, status, f"row {ev.row_id} is not in the baseline: run with --update-baseline")


@register_gate
class SizeGrowth(GateRule):
    """The artifact file grew by at most ``max_size_growth`` (a fraction) over the baseline artifact's bytes."""

    name = "size"
    baseline = True

    def enabled(self, ev: Evidence) -> bool:
        return ev.thresholds.max_size_growth is not None

    def judge(self, ev: Evidence) -> Gate | None:
        entry = ev.baseline_entry
        if entry is None or ev.artifact is None:
            return None
        limit, size, base = ev.thresholds.max_size_growth, ev.artifact["bytes"], entry["artifact"]["bytes"]
        growth = size / base - 1
        ok = growth <= limit
        text = f"{size / 1e6:.2f} MB, {100 * growth:+.1f} % vs baseline {'<=' if ok else '>'} +{100 * limit:g} %"
        return Gate(self.name, "passed" if ok else _soft(ev), text)


@register_gate
class LatencyRatio(GateRule):
    """current / baseline latency, both timed here side by side (median of per-round ratios), is at most
    ``max_latency_ratio`` plus a noise margin (``latency_noise``, or the spread between rounds if larger). An
    artifact identical to the baseline's passes untimed; a stored absolute time is never used."""

    name = "latency"
    baseline = True

    def enabled(self, ev: Evidence) -> bool:
        return ev.thresholds.max_latency_ratio is not None

    def judge(self, ev: Evidence) -> Gate | None:
        entry = ev.baseline_entry
        if entry is None or ev.artifact is None:
            return None
        base = entry["artifact"]
        if ev.artifact["sha256"] == base["sha256"]:
            return Gate(self.name, "passed", "same artifact as the baseline (sha256): not re-timed")
        ratio = ev.latency_ratio
        if ratio is None and ev.why_not_run:
            return Gate(self.name, "not judged", f"not timed: {ev.why_not_run}")
        if ratio is None:
            return Gate(
                self.name,
                "not judged",
                f"baseline artifact copy {base['copy']} not present here, so nothing to time side by side "
                "(a stored absolute time from another machine is not comparable)",
            )
        th = ev.thresholds
        margin = max(th.latency_noise, ratio.spread)
        ok = ratio.ratio <= th.max_latency_ratio + margin
        text = (
            f"x{ratio.ratio:.2f} vs baseline side by side ({len(ratio.rounds)} rounds, spread "
            f"±{ratio.spread:.2f}) {'<=' if ok else '>'} x{th.max_latency_ratio:g} + noise {margin:.2f}"
        )
        if ev.ratio_timed_elsewhere:
            text += f" (timed on this machine, not on {ev.ratio_timed_elsewhere})"
        return Gate(self.name, "passed" if ok else _soft(ev), text)


def _soft(ev: Evidence) -> Literal["failed", "not judged"]:
    """A baseline gate's failure while recording a new baseline is reported, not failed on."""
    return "not judged" if ev.updating_baseline else "failed"
