"""Fit a device's efficiency factors to measured latencies, and validate the fit by leave-one-out.

Least squares in log space (a 10 % error counts the same at 5 ms and at 5 s) with scipy's bounded trust-region
solver. The per-class efficiencies are shrunk toward their common (geometric) mean, so a class the measurements
say little about stays near the others instead of running off: with a handful of points the fit is mostly one
device scale, a memory efficiency, and a per-kernel / per-inference overhead.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np

from edgeseg.estimate.graph import OP_CLASSES, GraphCost
from edgeseg.estimate.roofline import CostArrays, efficiency_vector, predict_ms
from edgeseg.estimate.schema import Calibration, EstimatorData, Validation

SHRINK = 0.3  # weight of (log eff_class - mean log eff) residuals, against log-latency residuals of weight 1
OVERHEAD_PENALTY = 0.05  # keeps launch/overhead from absorbing what the roofline terms explain
EFF_BOUNDS = (1e-4, 1.0)
MEM_EFF_MAX = 4.0  # above 1: caches serve tensors faster than the DRAM bandwidth (CPUs with small tensors)


@dataclass
class Point:
    """One measured latency of one graph on the device."""

    label: str  # e.g. "efficientvit-b1 1024x2048 trt-fp16"
    cost: GraphCost  # kernels at the precision that was measured
    measured_ms: float


@dataclass
class Fit:
    efficiency: dict[str, float]
    memory_efficiency: float
    launch_us: float
    overhead_ms: float
    residuals_log: list[float]

    def predict(self, cost: GraphCost, hw: EstimatorData) -> float:
        eff = efficiency_vector(self.efficiency)  # as the estimator does, so validation judges the same model
        return predict_ms(
            CostArrays.of(cost, hw), eff, self.memory_efficiency, self.launch_us, self.overhead_ms, hw.memory_gbps.value
        )


def _classes(arrays: list[CostArrays]) -> list[int]:
    return sorted({int(c) for a in arrays for c in np.unique(a.op_class)})


def fit(
    points: list[Point], hw: EstimatorData, shrink: float = SHRINK, overhead_penalty: float = OVERHEAD_PENALTY
) -> Fit:
    """Efficiencies, memory efficiency, launch (us per kernel) and overhead (ms per inference) for ``points``."""
    from scipy.optimize import least_squares

    if not points:
        raise ValueError("no measurements to calibrate on")
    arrays = [CostArrays.of(p.cost, hw) for p in points]
    measured = np.array([p.measured_ms for p in points], dtype=np.float64)
    classes = _classes(arrays)
    nc = len(classes)
    bw = hw.memory_gbps.value
    scale_ms = float(np.median(measured))

    def unpack(x):
        eff = np.ones(len(OP_CLASSES))
        eff[classes] = np.exp(x[:nc])
        return eff, float(np.exp(x[nc])), float(x[nc + 1]), float(x[nc + 2])

    def residuals(x):
        eff, eff_mem, launch, overhead = unpack(x)
        pred = np.array([predict_ms(a, eff, eff_mem, launch, overhead, bw) for a in arrays])
        r = list(np.log(pred / measured))
        logs = x[:nc]
        r += list(np.sqrt(shrink) * (logs - logs.mean()))
        mean_kernels = float(np.mean([a.kernels for a in arrays]))
        r.append(np.sqrt(overhead_penalty) * (overhead + launch * mean_kernels * 1e-3) / scale_ms)
        return np.array(r)

    lo = [np.log(EFF_BOUNDS[0])] * (nc + 1) + [0.0, 0.0]
    hi = [np.log(EFF_BOUNDS[1])] * nc + [np.log(MEM_EFF_MAX), 1e4, max(scale_ms, 1e-3)]
    best = None
    for eff0, mem0 in ((0.3, 0.5), (0.05, 0.2), (0.8, 0.9), (0.01, 0.05)):
        x0 = np.array([np.log(eff0)] * nc + [np.log(mem0), 0.0, 0.0])
        # start at the right overall scale: scale compute and memory efficiency together
        eff, eff_mem, _, _ = unpack(x0)
        ratio = np.median([predict_ms(a, eff, eff_mem, 0, 0, bw) for a in arrays] / measured)
        x0[: nc + 1] = np.clip(x0[: nc + 1] + np.log(ratio), lo[0] + 1e-6, -1e-6)
        res = least_squares(residuals, x0, bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=4000)
        if best is None or res.cost < best.cost:
            best = res
    eff, eff_mem, launch, overhead = unpack(best.x)
    n = len(points)
    return Fit(
        efficiency={OP_CLASSES[i]: float(eff[i]) for i in classes},
        memory_efficiency=eff_mem,
        launch_us=launch,
        overhead_ms=overhead,
        residuals_log=[float(v) for v in best.fun[:n]],
    )


@dataclass
class HeldOut:
    label: str
    measured_ms: float
    estimated_ms: float

    @property
    def abs_pct_error(self) -> float:
        return 100.0 * abs(self.estimated_ms - self.measured_ms) / self.measured_ms


def leave_one_out(points: list[Point], hw: EstimatorData, shrink: float = SHRINK) -> list[HeldOut]:
    """Each point predicted by a fit on all the others."""
    out = []
    for i, p in enumerate(points):
        rest = points[:i] + points[i + 1 :]
        out.append(HeldOut(p.label, p.measured_ms, fit(rest, hw, shrink).predict(p.cost, hw)))
    return out


def held_out(train: list[Point], test: list[Point], hw: EstimatorData, shrink: float = SHRINK) -> list[HeldOut]:
    """``test`` predicted by one fit on ``train`` (a split by model or size)."""
    f = fit(train, hw, shrink)
    return [HeldOut(p.label, p.measured_ms, f.predict(p.cost, hw)) for p in test]


def summarize(rows: list[HeldOut], method: str) -> Validation:
    errs = [r.abs_pct_error for r in rows]
    return Validation(
        method=method,
        points=len(rows),
        median_abs_pct_error=round(float(np.median(errs)), 2),
        max_abs_pct_error=round(float(np.max(errs)), 2),
    )


def calibrate(points: list[Point], hw: EstimatorData, source: str, graph: str = "") -> tuple[Calibration, list]:
    """The calibration for ``hw`` fitted on all ``points``, validated leave-one-out (needs 3+ points)."""
    f = fit(points, hw)
    rows = leave_one_out(points, hw) if len(points) >= 3 else []
    validation = summarize(rows, f"leave-one-out over {len(points)} points") if rows else None
    cal = Calibration(
        efficiency={k: round(v, 5) for k, v in f.efficiency.items()},
        memory_efficiency=round(f.memory_efficiency, 5),
        launch_us=round(f.launch_us, 3),
        overhead_ms=round(f.overhead_ms, 4),
        source=source,
        fitted=datetime.date.today().isoformat(),
        points=len(points),
        graph=graph,
        validation=validation,
    )
    return cal, rows
