"""Residency: where an artifact's nodes would run on an accelerator, as measured by a named tool.

One record per (artifact, accelerator). Backends produce them (``Backend.residency``), manifests store them, lint,
op-profile, bench and sweep show them, and the residency gates judge them. ``tool`` always names what produced the
figure (ORT's partitioner, LiteRT's analyzer, OpenVINO's ``query_model``, ExecuTorch's delegation info, or
edgeseg's own op-support table), because the figures of different tools are not the same kind of evidence.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Residency(BaseModel):
    """Where the nodes of one artifact would run on one accelerator."""

    model_config = ConfigDict(extra="forbid")

    accelerator: str  # e.g. nnapi, coreml-mlprogram, coreml-neuralnetwork, qnn, tflite-gpu, xnnpack, openvino-cpu
    tool: str  # what produced the figure, with its version where it has one
    nodes_total: int = Field(ge=0)
    nodes_supported: int = Field(ge=0)  # nodes the accelerator takes (delegated / assigned to it)
    partitions: int | None = Field(default=None, ge=0)  # subgraphs handed to it; None where the tool cannot tell
    unsupported_ops: dict[str, int] = {}  # op type -> count of nodes left to the CPU fallback
    note: str = ""  # e.g. "static analysis: runs only on Android", "query_model on this machine's CPU plugin"

    @property
    def fraction(self) -> float:
        return self.nodes_supported / self.nodes_total if self.nodes_total else 1.0

    def summary(self) -> str:
        parts = ""
        if self.partitions is not None:
            parts = f", {self.partitions} partition{'s' if self.partitions != 1 else ''}"
        text = f"{self.accelerator}: {self.nodes_supported}/{self.nodes_total} nodes{parts}"
        if self.unsupported_ops:
            text += " (not taken: " + ", ".join(f"{op} x{n}" for op, n in sorted(self.unsupported_ops.items())) + ")"
        return text


class ResidencyLimit(BaseModel):
    """What an accelerator must take of an artifact for a device or a check config: at most ``max_partitions``
    subgraphs, at least ``min_delegated_fraction`` of the nodes (None: not judged)."""

    model_config = ConfigDict(extra="forbid")

    max_partitions: int | None = Field(None, ge=1)
    min_delegated_fraction: float | None = Field(None, ge=0, le=1)


def measure(backend, path) -> tuple[list[Residency], str | None]:
    """``backend.residency(path)``, never failing the caller: the records, or [] and why none could be made (a
    residency tool that cannot read a model must not fail an export that worked)."""
    try:
        return backend.residency(path), None
    except Exception as exc:  # third-party analyzers raise anything; the reason is recorded instead
        return [], f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


def from_dicts(records) -> list[Residency]:
    """Records as stored in a manifest or a report row (dicts), back to ``Residency``."""
    return [r if isinstance(r, Residency) else Residency.model_validate(r) for r in records or ()]


def cell(records) -> str:
    """One table cell: ``accelerator taken/total, partitions`` per record (the tools are in the JSON)."""
    out = []
    for r in from_dicts(records):
        parts = "" if r.partitions is None else f" {r.partitions}p"
        out.append(f"{r.accelerator} {r.nodes_supported}/{r.nodes_total}{parts}")
    return "; ".join(out) or "-"
