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
