"""Residency of a TFLite model: XNNPACK's partitions as this machine's LiteRT interpreter applies them, and the GPU
delegate's share, from LiteRT's model analyzer and edgeseg's GPU-delegate op table.

XNNPACK is measured: the interpreter applies the delegate here and its op list shows the DELEGATE nodes and the
nodes left to TFLite's own kernels (``executed_ops``).

GPU delegate: LiteRT's model analyzer (``ai_edge_litert._pywrap_analyzer_wrapper.ModelAnalyzer(path, True,
True)``, TensorFlow's ``Analyzer(gpu_compatibility=True)``) is asked first and its verdict kept in the note, but
in ai-edge-litert 2.3.0 it printed "compatible with GPU delegate" for a model holding STABLEHLO_SORT, GATHER_ND
and 5-D tensors, none of which the GPU delegate takes, so its verdict is not evidence on its own. A node counts as
GPU-resident when the analyzer does not flag it, its op is in the GPU delegate's supported-op list (TFLite GPU
delegate documentation) and no tensor it reads or writes is above 4-D; partitions are the runs of such nodes in
execution order (an estimate: the delegate partitions the graph, not the list). NPU residency through LiteRT's
vendor compiler plugins needs the vendors' SDKs (QAIRT, NeuroPilot, ...), not installed here: no NPU record.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgeseg.residency import Residency

_ISSUES = re.compile(r"GPU delegate compatibility issues at nodes ([0-9, ]+)")
_COMPATIBLE = "compatible with GPU delegate"
# TFLite GPU delegate builtins (TFLite "GPU delegate: supported ops"), plus DELEGATE-free graphs' QUANTIZE pairs.
GPU_OPS = frozenset(
    """ABS ADD AVERAGE_POOL_2D BATCH_MATMUL CAST CONCATENATION CONV_2D COS CUMSUM DEPTH_TO_SPACE DEPTHWISE_CONV_2D
    DEQUANTIZE DIV ELU EQUAL EXP FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GELU GREATER GREATER_EQUAL
    HARD_SWISH LESS LESS_EQUAL LOG LOGICAL_AND LOGISTIC LOG_SOFTMAX MAX_POOL_2D MAXIMUM MEAN MINIMUM MIRROR_PAD MUL
    NEG NOT_EQUAL ONE_HOT PACK PAD PADV2 POW PRELU QUANTIZE REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU RELU_N1_TO_1
    RELU6 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR RSQRT SELECT_V2 SIN SLICE SOFTMAX SPACE_TO_DEPTH SPLIT
    SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE STRIDED_SLICE SUB SUM TANH TILE TRANSPOSE TRANSPOSE_CONV UNPACK""".split()
)
GPU_MAX_RANK = 4


def _litert_version() -> str:
    from importlib.metadata import version

    return version("ai-edge-litert")


def analyzer_text(path: Path) -> str:
    from ai_edge_litert import _pywrap_analyzer_wrapper

    return _pywrap_analyzer_wrapper.ModelAnalyzer(str(path), True, True)


def analyzer_flags(text: str) -> tuple[set[int], bool]:
    """The analyzer's dump -> the main subgraph's node indices it flags, and whether it printed the verdict
    "compatible with GPU delegate"."""
    bad: set[int] = set()
    for m in _ISSUES.finditer(text):
        if "Subgraph#0 " in text[max(0, m.start() - 40) : m.start()] or "Subgraph#" not in m.group(0):
            bad |= {int(n) for n in m.group(1).replace(" ", "").split(",") if n}
    return bad, _COMPATIBLE in text and not bad


def gpu_residency_of(ops: list[dict], ranks: dict[int, int], flagged: set[int], verdict: str, tool: str) -> Residency:
    """``ops``: the interpreter's node list (``_get_ops_details()``, DELEGATE nodes left out); ``ranks``: tensor
    index -> rank; ``flagged``: node indices LiteRT's analyzer rejects."""
    left: dict[str, int] = {}
    taken = partitions = 0
    in_run = False
    for op in ops:
        name = op["op_name"]
        tensors = [int(t) for t in (*op["inputs"], *op["outputs"]) if int(t) >= 0]
        too_big = any(ranks.get(t, 0) > GPU_MAX_RANK for t in tensors)
        ok = op["index"] not in flagged and name in GPU_OPS and not too_big
        if ok:
            taken += 1
            partitions += not in_run
        else:
            key = f"{name} (>{GPU_MAX_RANK}-D)" if too_big and name in GPU_OPS else name
            left[key] = left.get(key, 0) + 1
        in_run = ok
    return Residency(
        accelerator="tflite-gpu",
        tool=tool,
        nodes_total=len(ops),
        nodes_supported=taken,
        partitions=partitions,
        unsupported_ops=left,
        note=f"static: GPU delegate op list and rank <= {GPU_MAX_RANK}; LiteRT's analyzer: {verdict}; partitions: "
        "runs in execution order (estimate)",
    )


def gpu_residency(path: Path) -> Residency:
    from ai_edge_litert.interpreter import Interpreter

    flagged, compatible = analyzer_flags(analyzer_text(path))
    verdict = "compatible with GPU delegate" if compatible else f"{len(flagged)} nodes flagged"
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    ranks = {int(t["index"]): len(t["shape"]) for t in interpreter.get_tensor_details()}
    tool = f"ai-edge-litert {_litert_version()} ModelAnalyzer (gpu check) + edgeseg GPU delegate op table"
    return gpu_residency_of(ops, ranks, flagged, verdict, tool)


def xnnpack_residency(path: Path) -> Residency:
    """XNNPACK as the interpreter applies it here: nodes replaced by DELEGATE nodes vs left to TFLite's kernels."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeseg.backends.tflite.lint import undelegated_ops

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    total = sum(1 for op in ops if op["op_name"] != "DELEGATE")
    left = undelegated_ops(interpreter)
    return Residency(
        accelerator="xnnpack",
        tool=f"ai-edge-litert {_litert_version()} interpreter (XNNPACK delegate applied)",
        nodes_total=total,
        nodes_supported=total - sum(left.values()),
        partitions=sum(1 for op in ops if op["op_name"] == "DELEGATE"),
        unsupported_ops=left,
        note="measured here: the delegate applied by this machine's LiteRT",
    )


def tflite_residency(path: Path) -> list[Residency]:
    return [xnnpack_residency(path), gpu_residency(path)]
