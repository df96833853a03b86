"""Latency statistics and the two timing loops.

``measure`` runs warm-up calls, then timed calls until the median is known to within ``rel_ci`` (half-width of
its distribution-free 95 % confidence interval, from order statistics) or a run/time cap is hit, and says which.
``interleave`` times several calls round-robin, one call each in turn, so a load change on a shared machine hits
all of them alike (check's latency ratio against the baseline artifact, the benchmark tables that compare
artifacts). The timer is injectable so the loops and the statistics are tested on a fake clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class LatencyStats:
    n: int  # timed runs
    warmup: int  # untimed runs before them
    median_ms: float | None  # None where the tool reports no median (TFLite benchmark_model: mean/std only)
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float
    std_ms: float | None  # None where the tool reports none (trtexec prints it only when unstable)
    min_ms: float | None
    max_ms: float | None
    median_ci95_ms: tuple[float, float] | None  # distribution-free 95 % interval of the median
    fps: float  # 1000 / median (or / mean where no median exists)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["median_ci95_ms"] = list(self.median_ci95_ms) if self.median_ci95_ms else None
        return d


def median_ci95(sorted_ms: Sequence[float]) -> tuple[float, float]:
    """95 % confidence interval of the median from order statistics (binomial, normal approximation): ranks
    n/2 -+ 1.96 sqrt(n)/2, clamped to the sample."""
    n = len(sorted_ms)
    half = 1.96 * math.sqrt(n) / 2
    lo = max(1, math.floor(n / 2 - half))
    hi = min(n, math.ceil(1 + n / 2 + half))
    return float(sorted_ms[lo - 1]), float(sorted_ms[hi - 1])


def summarize(samples_ms: Sequence[float], warmup: int) -> LatencyStats:
    if not samples_ms:
        raise ValueError("no timed runs")
    a = np.sort(np.asarray(samples_ms, dtype=np.float64))
    median = float(np.median(a))
    return LatencyStats(
        n=len(a),
        warmup=warmup,
        median_ms=median,
        p90_ms=float(np.percentile(a, 90)),
        p99_ms=float(np.percentile(a, 99)),
        mean_ms=float(a.mean()),
        std_ms=float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        min_ms=float(a[0]),
        max_ms=float(a[-1]),
        median_ci95_ms=median_ci95(a),
        fps=1000.0 / median if median > 0 else math.inf,
    )


@dataclass
class TimingPlan:
    warmup: int = 10
    min_runs: int = 30
    max_runs: int = 300
    max_seconds: float = 20.0  # timed phase only
    rel_ci: float = 0.02  # stop once the median's 95 % CI half-width is within 2 % of it

    def __post_init__(self):
        if self.warmup < 0 or self.min_runs < 1 or self.max_runs < self.min_runs:
            raise ValueError(f"bad timing plan: {self}")
        if not self.max_seconds > 0:  # NaN too
            raise ValueError(f"bad timing plan: max_seconds must be a positive number of seconds: {self}")


@dataclass
class Timing:
    stats: LatencyStats
    samples_ms: list[float]
    stop: str  # why the loop stopped: "stable", "max-runs" or "max-seconds"


def measure(fn: Callable[[], object], plan: TimingPlan, timer: Callable[[], float] = time.perf_counter) -> Timing:
    """Time ``fn`` per ``plan``; ``timer`` returns seconds. ``max_seconds`` bounds the warm-up and the timed phase
    each, before ``min_runs`` too: a huge --runs or --warmup never outlasts the time promised."""
    start, warm = timer(), 0
    while warm < plan.warmup:
        fn()
        warm += 1
        if timer() - start >= plan.max_seconds:
            break
    samples: list[float] = []
    start = timer()
    stop = "max-runs"
    while len(samples) < plan.max_runs:
        t0 = timer()
        fn()
        t1 = timer()
        samples.append(1000.0 * (t1 - t0))
        if len(samples) >= plan.min_runs:
            s = sorted(samples)
            lo, hi = median_ci95(s)
            med = float(np.median(s))
            if (hi - lo) / 2 <= plan.rel_ci * med:
                stop = "stable"
                break
        if t1 - start >= plan.max_seconds:
            stop = "max-seconds"
            break
    return Timing(summarize(samples, warm), samples, stop)


def interleave(
    calls: Sequence[Callable[[], object]],
    runs: int,
    warmup: int,
    rounds: int = 1,
    timer: Callable[[], float] = time.perf_counter,
) -> list[list[list[float]]]:
    """Time ``calls`` round-robin: in each of ``rounds`` rounds, ``warmup`` untimed passes over every call, then
    ``runs`` timed passes, one call each in turn. The call that goes first rotates from pass to pass (with two
    calls: alternates), so none always runs straight after another. Returns the samples in ms,
    ``[round][call][run]``; ``timer`` returns seconds."""
    if runs < 1 or warmup < 0 or rounds < 1:
        raise ValueError(f"bad interleaved timing: runs {runs}, warmup {warmup}, rounds {rounds}")
    n = len(calls)
    out = []
    for _ in range(rounds):
        for _ in range(warmup):
            for call in calls:
                call()
        samples: list[list[float]] = [[] for _ in calls]
        for i in range(runs):
            for j in range(n):
                k = (i + j) % n
                t0 = timer()
                calls[k]()
                samples[k].append(1000.0 * (timer() - t0))
        out.append(samples)
    return out


def from_summary(
    n: int,
    warmup: int,
    mean_ms: float,
    std_ms: float | None,
    min_ms: float | None = None,
    max_ms: float | None = None,
    median_ms: float | None = None,
    p90_ms: float | None = None,
    p99_ms: float | None = None,
) -> LatencyStats:
    """Stats a remote tool reported (trtexec, benchmark_model) rather than samples we hold."""
    ref = median_ms if median_ms is not None else mean_ms
    return LatencyStats(n, warmup, median_ms, p90_ms, p99_ms, mean_ms, std_ms, min_ms, max_ms, None, 1000.0 / ref)
