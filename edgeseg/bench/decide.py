"""What a bench report concludes, from its own figures: accuracy with intervals (per-image counts resampled by
``edgeseg.eval.stats``), each artifact against the fp32 reference on the same images, warnings about the machine's
load while timing, why an fp16 artifact is slow on a CPU runtime, and the artifact to ship.

``recommend`` reads only the report (bench.json), so a report can be re-judged later with another budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeseg.bench.report import (
    Accuracy,
    BenchReport,
    ClassIoU,
    Comparison,
    Measurement,
    PerImage,
    Recommendation,
    TargetResult,
    row_label,
    several_models,
)
from edgeseg.eval.stats import (
    BOUNDARY_DILATION,
    MIN_IMAGES,
    RESAMPLES,
    ImageScores,
    bootstrap_iou,
    load_warning,
    paired_difference,
)

DEFAULT_BUDGET_POINTS = 1.0  # mIoU points an artifact may lose against the fp32 reference (check's max_miou_drop)


def _precision(target: str) -> str | None:
    from edgeseg.backends import TARGETS

    return TARGETS[target].precision if target in TARGETS else None


def _format(target: str) -> str | None:
    from edgeseg.backends import TARGETS

    return TARGETS[target].format if target in TARGETS else None


# ------------------------------------------------------------------------------------------------- accuracy


def accuracy(scores: ImageScores, classes: Sequence[str], resamples: int = RESAMPLES) -> Accuracy:
    """Intervals of one artifact's mIoU, per-class IoU and Boundary IoU from its per-image counts."""
    inter, union = scores.iou_counts()
    region = bootstrap_iou(inter, union, resamples)
    per_class = {
        name: None if v is None else ClassIoU(iou=v, ci95=list(ci))
        for name, v, ci in zip(classes, region.per_class, region.per_class_ci95)
    }
    b = scores.boundary_iou_counts()
    boundary = bootstrap_iou(*b, resamples) if b is not None else None
    return Accuracy(
        images=len(scores),
        resamples=resamples,
        miou_ci95=list(region.mean_ci95),
        per_class=per_class,
        boundary_iou=None if boundary is None else boundary.mean,
        boundary_iou_ci95=None if boundary is None else list(boundary.mean_ci95),
        boundary_dilation=None if boundary is None else BOUNDARY_DILATION,
        per_image=PerImage(
            names=list(scores.names),
            iou_inter=inter.tolist(),
            iou_union=union.tolist(),
            boundary_inter=None if b is None else b[0].tolist(),
            boundary_union=None if b is None else b[1].tolist(),
        ),
    )


def _counts(acc: Accuracy, boundary: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    p = acc.per_image
    if boundary:
        if p.boundary_inter is None or p.boundary_union is None:
            return None
        return np.asarray(p.boundary_inter), np.asarray(p.boundary_union)
    return np.asarray(p.iou_inter), np.asarray(p.iou_union)


def comparable(a: Accuracy, b: Accuracy) -> bool:
    """Whether two artifacts were scored on the same images (a paired comparison needs that)."""
    return a.per_image.names == b.per_image.names and len(a.per_image.iou_inter) == len(b.per_image.iou_inter)


def reference_row(results: Sequence[TargetResult]) -> TargetResult | None:
    """The reference the others are compared with: the first fp32 artifact with per-image counts, else the one with
    the highest mIoU."""
    scored = [r for r in results if r.accuracy is not None]
    fp32 = [r for r in scored if _precision(r.target) == "fp32"]
    if fp32:
        return fp32[0]
    return max(scored, key=lambda r: r.miou or 0.0, default=None)


def compare_with_reference(results: list[TargetResult], named: bool = False) -> str | None:
    """Fill each scored row's ``accuracy.vs_reference`` and per-class deltas against the reference row (same model,
    size and images); returns the reference's label."""
    ref = reference_row(results)
    if ref is None:
        return None
    label = row_label(ref, named)
    for r in results:
        acc = r.accuracy
        if acc is None or r is ref or (r.model, r.size) != (ref.model, ref.size) or not comparable(acc, ref.accuracy):
            continue
        d = paired_difference(_counts(ref.accuracy), _counts(acc), resamples=acc.resamples)
        boundary = None
        if acc.boundary_iou is not None and ref.accuracy.boundary_iou is not None:
            boundary = acc.boundary_iou - ref.accuracy.boundary_iou
        acc.vs_reference = Comparison(
            against=label,
            images=d.images,
            difference=d.difference,
            ci95=list(d.ci95),
            verdict=d.verdict,
            margin=d.margin,
            boundary_difference=boundary,
        )
        for name, c in acc.per_class.items():
            rc = ref.accuracy.per_class.get(name)
            if c is not None and rc is not None:
                c.delta = c.iou - rc.iou
    return label


# ------------------------------------------------------------------------------------------------ latency, load


def device_latency(r: TargetResult) -> Measurement | None:
    """The measured latency on the report's device (never an estimate)."""
    return r.device.measured


def _median(m: Measurement) -> float:
    s = m.stats
    return s.median_ms if s.median_ms is not None else s.mean_ms


def _interval(m: Measurement) -> tuple[float, float]:
    s = m.stats
    if s.median_ci95_ms:
        return s.median_ci95_ms[0], s.median_ci95_ms[1]
    return _median(m), _median(m)


def load_warnings(report: BenchReport) -> list[str]:
    """One warning when any timing ran with the 1-minute load above the cores this process could use."""
    worst, cores, where = None, None, []
    for r in report.results:
        for m in (r.host, r.device.measured):
            if m is None:
                continue
            st = m.state
            load = max(
                (x for x in (st.get("loadavg_1min_before"), st.get("loadavg_1min_after")) if x is not None),
                default=None,
            )
            c = st.get("cores") or report.host.get("cpus_usable")
            if load_warning(load, c) is None:
                continue
            if r.target not in where:
                where.append(r.target)
            if worst is None or load > worst:
                worst, cores = load, c
    if worst is None:
        return []
    return [f"{load_warning(worst, cores)} (timings of {', '.join(where)})"]


def fp16_notes(report: BenchReport) -> list[str]:
    """Why an fp16 artifact timed on a CPU runtime is no faster (or slower) than the fp32 one of its format."""
    if report.device.kind != "host":
        return []
    timed = {r.target: r.device.measured for r in report.results if r.device.measured is not None}
    notes = []
    for target, m in timed.items():
        if _precision(target) != "fp16":
            continue
        fp32 = next((t for t in timed if _format(t) == _format(target) and _precision(t) == "fp32"), None)
        if fp32 is None or _median(m) < 0.95 * _median(timed[fp32]):
            continue
        notes.append(
            f"{target} takes {_median(m) / _median(timed[fp32]):.1f}x the time of {fp32} here: CPU runtimes have no "
            "fast fp16 arithmetic on most CPUs (ONNX Runtime's CPU provider runs ops without fp16 kernels through "
            "Cast nodes to fp32; XNNPACK converts fp16 weights to fp32 unless the CPU has ARMv8.2 fp16 arithmetic). "
            "fp16 halves the file and is an accelerator choice (GPU, NPU, Neural Engine); on this CPU, fp32 or INT8."
        )
    return notes


# ------------------------------------------------------------------------------------------------- recommend


def _miou_of(r: TargetResult) -> str:
    text = f"mIoU {100 * r.miou:.2f}"
    if r.accuracy is not None:
        lo, hi = r.accuracy.miou_ci95
        text += f" [{100 * lo:.2f}, {100 * hi:.2f}]"
    return text


def _latency_of(m: Measurement) -> str:
    lo, hi = _interval(m)
    return f"{_median(m):.1f} ms [{lo:.1f}, {hi:.1f}]"


def _verdict(a: TargetResult, b: TargetResult) -> str:
    """b against a on the same images: better / worse / tie / too few images (tie where they cannot be paired)."""
    if a.accuracy is None or b.accuracy is None or not comparable(a.accuracy, b.accuracy):
        return "tie"
    return paired_difference(_counts(a.accuracy), _counts(b.accuracy), resamples=b.accuracy.resamples).verdict


def recommend(report: BenchReport, budget_points: float = DEFAULT_BUDGET_POINTS) -> Recommendation:
    """The fastest artifact (median latency measured on the report's device) among those that passed every gate and
    lose at most ``budget_points`` mIoU points against the reference (the fp32 artifact, same images). Artifacts
    whose latency intervals overlap it are a latency tie: one that is really more accurate (paired comparison)
    wins the tie; the others are listed as ties."""
    named = several_models(report)
    scored = [r for r in report.results if r.accuracy is not None]
    ref = reference_row(report.results)
    best_miou = max((r.miou for r in report.results if r.miou is not None), default=None)
    considered, why_not = [], []
    for r in report.results:
        label = row_label(r, named)
        if r.status != "passed":
            why_not.append(f"{label}: {r.status.replace('_', ' ')}")
            continue
        if r.miou is None:
            why_not.append(f"{label}: no mIoU")
            continue
        if device_latency(r) is None:
            why_not.append(f"{label}: not measured on {report.device.name}")
            continue
        vs = r.accuracy.vs_reference if r.accuracy is not None else None
        drop = -vs.difference if vs is not None else (best_miou - r.miou if ref is None and best_miou else 0.0)
        if 100 * drop > budget_points:
            why_not.append(f"{label}: {100 * drop:.2f} mIoU points below the reference")
            continue
        considered.append(r)
    ref_label = row_label(ref, named) if ref is not None else None
    base = dict(budget_points=budget_points, reference=ref_label, considered=[row_label(r, named) for r in considered])
    if not considered:
        why = "; ".join(why_not) or "no artifacts"
        return Recommendation(target=None, text=f"no artifact qualifies on {report.device.name}: {why}", **base)
    considered.sort(key=lambda r: _median(device_latency(r)))
    pick = considered[0]
    lo, hi = _interval(device_latency(pick))
    tied = [r for r in considered[1:] if _interval(device_latency(r))[0] <= hi]
    # a latency tie goes to an artifact that is really more accurate; the rest that are no less accurate are ties
    verdicts = {id(r): _verdict(pick, r) for r in tied}
    better = [r for r in tied if verdicts[id(r)] == "better"]
    if better:
        pick = max(better, key=lambda r: r.miou)
        group = [considered[0], *tied]
        verdicts = {id(r): _verdict(pick, r) for r in group if r is not pick}
    ties = [row_label(r, named) for r in [considered[0], *tied] if r is not pick and verdicts.get(id(r)) != "worse"]
    if ref_label:
        budget = f"within {budget_points:.1f} mIoU points of {ref_label}"
    else:
        budget = f"within {budget_points:.1f} mIoU points of the best mIoU here ({100 * best_miou:.2f})"
    text = (
        f"{row_label(pick, named)}: the fastest on {report.device.name} {budget} "
        f"({_latency_of(device_latency(pick))}, {_miou_of(pick)})"
    )
    if pick is not considered[0]:
        text += f"; as fast as {row_label(considered[0], named)} (latency intervals overlap) and more accurate"
    if ties:
        text += (
            f"; a tie with {', '.join(ties)}: latency intervals overlap and the mIoU difference is not real on these "
            "images"
        )
    images = min((len(r.accuracy.per_image.names) for r in scored), default=report.data.images or 0)
    if images and images < MIN_IMAGES:
        text += (
            f". mIoU from {images} images: too few images to tell artifacts apart; bench with --data on a larger "
            "labelled split"
        )
    return Recommendation(target=row_label(pick, named), text=text, ties=ties, **base)
