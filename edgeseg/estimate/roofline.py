"""The latency model: a roofline per kernel with measured efficiencies.

    t_kernel = max(flops / (peak[precision] * eff[op class]), bytes / (bandwidth * eff_mem)) + launch
    t        = sum of t_kernel + per-inference overhead

Peaks and bandwidth are spec-sheet facts; ``eff``, ``eff_mem``, ``launch`` and the overhead come from a
calibration (``edgeseg.estimate.calibrate``). Without a calibration nothing is estimated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeseg.estimate.graph import OP_CLASSES, GraphCost
from edgeseg.estimate.schema import Estimate, EstimatorData


@dataclass
class CostArrays:
    """A graph's kernels as arrays, for fast evaluation during fitting."""

    flops: np.ndarray
    bytes: np.ndarray
    op_class: np.ndarray  # index into OP_CLASSES
    peak_flops: np.ndarray  # FLOP/s of each kernel's precision

    @classmethod
    def of(cls, cost: GraphCost, hw: EstimatorData) -> CostArrays:
        ks = cost.kernels
        return cls(
            np.array([k.flops for k in ks], dtype=np.float64),
            np.array([k.bytes for k in ks], dtype=np.float64),
            np.array([OP_CLASSES.index(k.op_class) for k in ks], dtype=np.int64),
            np.array([hw.peak(k.precision) * 1e9 for k in ks], dtype=np.float64),
        )

    @property
    def kernels(self) -> int:
        return len(self.flops)


def kernel_seconds(a: CostArrays, eff: np.ndarray, eff_mem: float, bandwidth_gbps: float) -> tuple:
    """(compute seconds, memory seconds) per kernel; ``eff`` is indexed like OP_CLASSES."""
    compute = a.flops / (a.peak_flops * eff[a.op_class])
    memory = a.bytes / (bandwidth_gbps * 1e9 * eff_mem)
    return compute, memory


def predict_ms(
    a: CostArrays, eff: np.ndarray, eff_mem: float, launch_us: float, overhead_ms: float, bandwidth_gbps: float
) -> float:
    compute, memory = kernel_seconds(a, eff, eff_mem, bandwidth_gbps)
    return float(1e3 * np.maximum(compute, memory).sum() + a.kernels * launch_us * 1e-3 + overhead_ms)


def efficiency_vector(efficiency: dict[str, float]) -> np.ndarray:
    """Per-class efficiencies; a class the calibration never saw takes the geometric mean of those it did."""
    seen = list(efficiency.values())
    fallback = float(np.exp(np.mean(np.log(seen)))) if seen else 1.0
    return np.array([efficiency.get(c, fallback) for c in OP_CLASSES], dtype=np.float64)


def estimate(cost: GraphCost, hw: EstimatorData, device: str, target: str, precision: str, graph: str) -> Estimate:
    """The labelled estimate of ``cost`` for ``target`` on a device whose profile carries ``hw``."""
    found = hw.calibration_for(target)
    if found is None:
        raise ValueError(f"device {device} has no estimator calibration for {target}")
    calibrated_target, cal = found
    a = CostArrays.of(cost, hw)
    eff = efficiency_vector(cal.efficiency)
    compute, memory = kernel_seconds(a, eff, cal.memory_efficiency, hw.memory_gbps.value)
    per_kernel = np.maximum(compute, memory)
    by_class = {}
    for i, c in enumerate(OP_CLASSES):
        mask = a.op_class == i
        if mask.any():
            by_class[c] = round(float(1e3 * per_kernel[mask].sum()), 3)
    launch_ms = a.kernels * cal.launch_us * 1e-3
    return Estimate(
        device=device,
        target=target,
        precision=precision,
        latency_ms=float(1e3 * per_kernel.sum() + launch_ms + cal.overhead_ms),
        compute_bound_ms=float(1e3 * per_kernel[compute >= memory].sum()),
        memory_bound_ms=float(1e3 * per_kernel[compute < memory].sum()),
        launch_ms=launch_ms,
        overhead_ms=cal.overhead_ms,
        kernels=a.kernels,
        gflops=cost.flops / 1e9,
        mbytes=cost.bytes / 1e6,
        by_class_ms=by_class,
        calibration_source=cal.source,
        calibrated_target=calibrated_target,
        validation=cal.validation,
        graph=graph,
    )
