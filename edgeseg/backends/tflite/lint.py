"""TFLite lint: op list against what XNNPACK and the GPU delegate take, tensor ranks, static shapes, and the
XNNPACK partitions (ops left between partitions run on TFLite's reference kernels)."""

from __future__ import annotations

from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.lint import LintReport, RuleSet

# TFLite builtins the CPU (XNNPACK) and GPU delegates take, as used by edgeseg's graphs.
_TFLITE_VERIFIED = frozenset(
    {
        "CONV_2D",
        "AVERAGE_POOL_2D",  # LVT's CSA (2x2 pool); XNNPACK (fp32 only, not int8) and the GPU delegate take it
        "DEPTHWISE_CONV_2D",
        "ADD",
        "SUB",
        "MUL",
        "DIV",
        "HARD_SWISH",
        "RELU",
        "RELU6",
        "LOGISTIC",
        "RESHAPE",
        "TRANSPOSE",
        "CONCATENATION",
        "SLICE",
        "STRIDED_SLICE",
        "PAD",
        "PADV2",
        "MIRROR_PAD",
        "BATCH_MATMUL",
        "FULLY_CONNECTED",
        "SUM",
        "MEAN",
        "MAXIMUM",
        "MINIMUM",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "DEPTH_TO_SPACE",
        "ARG_MAX",
        "CAST",
        "DEQUANTIZE",
        "QUANTIZE",
        "SOFTMAX",
        "GELU",  # XNNPACK: fp32 only; an int8 GELU runs on TFLite's kernels (a delegate partition boundary)
        "TANH",
        "POW",
        "SQRT",
        "RSQRT",
        "SQUARED_DIFFERENCE",
        "DELEGATE",
        "BROADCAST_TO",
    }
)
_TFLITE_FORBIDDEN = frozenset(
    {"GATHER_ND", "SCATTER_ND", "WHILE", "IF", "CUSTOM", "FlexEinsum", "NON_MAX_SUPPRESSION_V4", "SHAPE", "WHERE"}
)


def lint_tflite(path: Path, rs: RuleSet) -> LintReport:
    """TFLite flatbuffer: op list, tensor ranks (GPU delegate: 4-D), no dynamic shapes, XNNPACK partitions."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise EdgesegError(f"cannot read TFLite model {path}: {str(exc).splitlines()[0][:160]}") from None
    report = LintReport(rs.name)
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        report.ops[name] = report.ops.get(name, 0) + 1
        label = f"{name}#{op['index']}"
        if name in _TFLITE_FORBIDDEN or name.startswith("Flex"):
            report.add("error", "forbidden-op", label, f"{name} is unsupported or falls off the delegates")
        elif name not in _TFLITE_VERIFIED:
            report.add("warning", "unverified-op", label, f"{name} is not in the tflite verified op list")
    for t in interpreter.get_tensor_details():
        rank = len(t["shape"])
        report.max_rank = max(report.max_rank, rank)
        if rank > rs.max_rank:
            report.add("error", "max-rank", t["name"], f"tensor is {rank}-D (GPU delegate max {rs.max_rank})")
        if any(d < 0 for d in t.get("shape_signature", t["shape"])):
            report.add("error", "static-shape", t["name"], f"dynamic shape {list(t['shape_signature'])}")
    partitions = report.ops.get("DELEGATE", 0)
    if partitions > 1:
        left = ", ".join(f"{name} x{n}" for name, n in sorted(undelegated_ops(interpreter).items()))
        report.add(
            "warning",
            "delegate-partitions",
            "XNNPACK",
            f"{partitions} delegate partitions: {left or 'ops between them'} run on TFLite's reference kernels",
        )
    return report


def undelegated_ops(interpreter) -> dict[str, int]:
    """Op types an allocated LiteRT interpreter runs on TFLite's own kernels (outside every delegate partition),
    with counts."""
    from edgeseg.backends.tflite.runtime import executed_ops

    left: dict[str, int] = {}
    for op in executed_ops(interpreter):
        if op["op_name"] != "DELEGATE":
            left[op["op_name"]] = left.get(op["op_name"], 0) + 1
    return left


