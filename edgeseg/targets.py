"""The target registry: one table drives argument checks, export, lint and the docs (``edgeseg targets``).

Each row: format, precision, file suffix, the runtime that runs it on this machine (or what it needs), the
packages it needs (a pip extra), the conformance rule set, the rewrites applied before capture, and whether its
exporter exists in this version (``available``). Rows whose exporter is not built yet stay in the table so
names, docs and checks are stable; asking to export one says so plainly.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from edgeseg.errors import EdgesegError

# Rewrites every target gets; an export applies those for the model's family (``edgeseg.rewrite.rewrites_for``).
# EfficientViT: the fp32 pad-free linear attention (the head's upsampling is chosen per export: exact bicubic as
# conv by default). LVT / SegFormer: attention without unfold/fold and 5-D permutes, fp32 softmax core, LayerNorm
# in fp32. GELU stays erf everywhere: every exporter here has an erf path (``gelu-tanh`` exists for kernels that
# do not; its error is measured in the tests).
_BASE = ("attention-fp32-normaliser", "csa-no-unfold", "rasa-split-kv", "sra-split-kv", "layernorm-fp32")
_TFLITE = _BASE + ("sra-single-head-batch2",)


@dataclass(frozen=True)
class Target:
    name: str
    format: str  # onnx | tflite | coreml | tensorrt
    precision: str  # fp32 | fp16 | int8
    suffix: str
    runtime: str  # what runs it here, or what it needs
    extra: str  # pip extra with its packages (TensorRT itself: JetPack / NVIDIA's index, not PyPI)
    rules: str  # conformance rule set (edgeseg.lint)
    rewrites: tuple[str, ...]
    available: bool  # exporter implemented in this version
    planned: str = ""  # where an unavailable row is being built

    @property
    def runs_here(self) -> bool:
        return self.available and not self.runtime.startswith("needs")


def _row(fmt, prec, suffix, runtime, extra, rules, rewrites=_BASE, available=False, planned=""):
    return Target(
        f"{fmt if fmt != 'tensorrt' else 'trt'}-{prec}",
        fmt,
        prec,
        suffix,
        runtime,
        extra,
        rules,
        rewrites,
        available,
        planned,
    )


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        _row("onnx", "fp32", ".onnx", "onnxruntime (CPU)", "onnx", "onnx", available=True),
        _row(
            "onnx",
            "fp16",
            ".onnx",
            "onnxruntime (CPU; no native fp16 here, slower than fp32)",
            "onnx",
            "onnx",
            available=True,
        ),
        _row("onnx", "int8", ".onnx", "onnxruntime (CPU)", "onnx", "onnx", available=True),
        _row("tflite", "fp32", ".tflite", "ai-edge-litert (XNNPACK)", "tflite", "tflite", _TFLITE, available=True),
        _row("tflite", "fp16", ".tflite", "ai-edge-litert (XNNPACK)", "tflite", "tflite", _TFLITE, available=True),
        _row(
            "tflite",
            "int8",
            ".tflite",
            "ai-edge-litert (XNNPACK)",
            "tflite",
            "tflite",
            _TFLITE + ("hardswish-as-clamp", "rasa-weights-per-use"),
            available=True,
        ),
        _row("coreml", "fp32", ".mlpackage", "needs macOS (coremltools predict)", "coreml", "coreml", available=True),
        _row("coreml", "fp16", ".mlpackage", "needs macOS (coremltools predict)", "coreml", "coreml", available=True),
        _row(
            "coreml",
            "int8",
            ".mlpackage",
            "needs macOS (coremltools predict); int8 parity simulated here in PyTorch",
            "coreml",
            "coreml",
            available=True,
        ),
        _row("tensorrt", "fp32", ".engine", "needs TensorRT + CUDA", "onnx", "tensorrt", available=True),
        _row("tensorrt", "fp16", ".engine", "needs TensorRT + CUDA", "onnx", "tensorrt", available=True),
        _row("tensorrt", "int8", ".engine", "needs TensorRT + CUDA", "onnx", "tensorrt", available=True),
    )
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        close = difflib.get_close_matches(name, list(TARGETS), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise EdgesegError(f"unknown target {name!r}.{hint} Valid: {', '.join(TARGETS)}")
    return TARGETS[name]


def require_exporter(target: Target) -> Target:
    if not target.available:
        ready = ", ".join(t.name for t in TARGETS.values() if t.available)
        raise EdgesegError(
            f"target {target.name} is registered but its exporter is not in this version yet ({target.planned}); "
            f"available now: {ready}"
        )
    return target


def known_target_names(names: list[str]) -> list[str]:
    """A pydantic validator's check of a list of target names (ValueError naming the item and the valid names)."""
    for i, name in enumerate(names):
        if name not in TARGETS:
            raise ValueError(f"item {i}: unknown target {name!r} (valid: {', '.join(TARGETS)})")
    return names
