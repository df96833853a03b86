"""What a device profile holds for the estimator (``estimator:`` in its YAML), and what an estimate is.

Hardware facts (peak throughput per precision, memory bandwidth) come from spec sheets and carry their source.
Efficiency factors are never typed in: ``edgeseg fit-latency`` fits them to measurements and writes them with what
they were fitted on and their validation error (leave-one-out over those measurements).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgeseg.estimate.graph import OP_CLASSES

PRECISIONS = ("fp32", "fp16", "int8")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Input(_Strict):
    """A schema of user-edited YAML (a profile's ``estimator:``): finite numbers only."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SourcedValue(_Input):
    value: float = Field(gt=0)
    source: str = Field(min_length=3)  # spec sheet / data sheet, or how it follows from one


class Validation(_Input):
    method: str  # e.g. "leave-one-out over the 6 calibration points"
    points: int = Field(ge=1)
    median_abs_pct_error: float = Field(ge=0)
    max_abs_pct_error: float = Field(ge=0)


class Calibration(_Input):
    efficiency: dict[str, float]  # op class -> fraction of peak throughput reached
    memory_efficiency: float = Field(gt=0, le=4)  # > 1: caches serve more than the DRAM bandwidth
    launch_us: float = Field(ge=0)  # per kernel
    overhead_ms: float = Field(ge=0)  # per inference (framework, data transfer)
    source: str = Field(min_length=3)  # what it was fitted on
    fitted: str  # ISO date
    points: int = Field(ge=1)
    graph: str = ""  # how the graphs of the calibration points were exported
    validation: Validation | None = None

    @field_validator("efficiency")
    @classmethod
    def _classes(cls, value: dict[str, float]) -> dict[str, float]:
        for k, v in value.items():
            if k not in OP_CLASSES:
                raise ValueError(f"unknown op class {k!r} (valid: {', '.join(OP_CLASSES)})")
            if not 0 < v <= 1.5:
                raise ValueError(f"efficiency of {k} must be in (0, 1.5], got {v}")
        return value


class EstimatorData(_Input):
    """The ``estimator:`` section of a device profile."""

    peak_gflops: dict[str, SourcedValue]  # precision -> peak (GFLOP/s; GOP/s for int8)
    memory_gbps: SourcedValue
    # target name -> calibration (efficiencies depend on the runtime and precision); written by `edgeseg fit-latency`
    calibrations: dict[str, Calibration] = {}
    # another profile whose calibrations apply here (same GPU architecture and runtime); estimates say so
    borrow_calibration: str | None = None

    @field_validator("calibrations")
    @classmethod
    def _targets(cls, value: dict[str, Calibration]) -> dict[str, Calibration]:
        from edgeseg.backends import known_target_names

        known_target_names(list(value))
        return value

    @field_validator("peak_gflops")
    @classmethod
    def _precisions(cls, value: dict[str, SourcedValue]) -> dict[str, SourcedValue]:
        for k in value:
            if k not in PRECISIONS:
                raise ValueError(f"unknown precision {k!r} (valid: {', '.join(PRECISIONS)})")
        if "fp32" not in value:
            raise ValueError("peak_gflops needs at least fp32")
        return value

    def calibration_for(self, target: str) -> tuple[str, Calibration] | None:
        """The calibration of ``target``, else one of a target of the same format (another precision)."""
        if target in self.calibrations:
            return target, self.calibrations[target]
        fmt = target.split("-")[0]
        for name, cal in self.calibrations.items():
            if name.split("-")[0] == fmt:
                return name, cal
        return None

    def peak(self, precision: str) -> float:
        """GFLOP/s at ``precision``; a precision the device has no faster path for runs at the fp32 peak."""
        return (self.peak_gflops.get(precision) or self.peak_gflops["fp32"]).value


class Estimate(_Strict):
    """A latency that was computed, not measured. ``kind`` is always "estimate"."""

    kind: Literal["estimate"] = "estimate"
    label: Literal["estimate"] = "estimate"
    device: str
    target: str
    precision: str
    latency_ms: float
    compute_bound_ms: float  # kernels where compute time exceeds memory time
    memory_bound_ms: float
    launch_ms: float
    overhead_ms: float
    kernels: int
    gflops: float
    mbytes: float
    by_class_ms: dict[str, float]
    calibration_source: str
    calibrated_target: str  # the target the efficiencies were fitted for (another precision of this format: noted)
    validation: Validation | None
    graph: str  # what graph was estimated
    notes: list[str] = []

    @property
    def text(self) -> str:
        v = self.validation
        err = f"validation median error {v.median_abs_pct_error:.0f} % ({v.method})" if v else "not validated"
        extra = "".join(f"; {n}" for n in self.notes)
        return f"estimate: {self.latency_ms:.1f} ms (calibrated on {self.calibration_source}; {err}{extra})"


class PublishedFigure(_Strict):
    model: str
    size: str = Field(pattern=r"^\d+x\d+$")  # HxW
    ms: float = Field(gt=0)


class PublishedDevice(_Strict):
    target: str
    dataset: str
    conditions: str = Field(min_length=3)  # how the source measured (runtime, precision, batch, transfers)
    figures: list[PublishedFigure] = Field(min_length=1)

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        from edgeseg.backends import known_target_names

        return known_target_names([value])[0]


class PublishedFigures(_Strict):
    """A file of published latencies to calibrate on (``edgeseg fit-latency --from FILE``), per device profile."""

    source: str = Field(min_length=3)
    devices: dict[str, PublishedDevice] = Field(min_length=1)
