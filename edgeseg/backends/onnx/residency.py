"""Residency of an ONNX graph: the partitions ONNX Runtime's NNAPI and Core ML (NeuralNetwork, MLProgram) EPs would
take, and the CPU EP's node placement here.

The accelerator figures come from ORT's own mobile usability checker (``onnxruntime.tools.mobile_helpers.
usability_checker``, what ``python -m onnxruntime.tools.check_onnx_model_mobile_usability`` prints): the graph is
optimized at ORT's BASIC level, shapes are inferred, and each EP's supported-op table (shipped with ORT) is run
through ORT's partitioning logic (a copy of ``CreateSupportedPartitionNodeGroups``), with Core ML's rank cap of 5.
It decides by op type (and fixed shapes, rank): per-op caveats (e.g. NNAPI's 2-D Conv only) are not checked, so
the figures are the checker's, not a device's. ORT ships no supported-op table for QNN and this build has no QNN
EP, so no QNN record is made (a gate on qnn says so). The CPU EP record is a real session's graph assignment.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgeseg.residency import Residency

# accelerator -> (ORT's supported-op table, max rank the EP takes)
ORT_CHECKER_TABLES = {
    "nnapi": ("nnapi_supported_ops.md", 999),
    "coreml-neuralnetwork": ("coreml_supported_neuralnetwork_ops.md", 5),
    "coreml-mlprogram": ("coreml_supported_mlprogram_ops.md", 5),
}
_NOTES = {
    "nnapi": "static analysis (op type, fixed shapes); runs only on Android",
    "coreml-neuralnetwork": "static analysis (op type, fixed shapes, rank <= 5); runs only on Apple devices",
    "coreml-mlprogram": "static analysis (op type, fixed shapes, rank <= 5); runs only on Apple devices",
}


def _ort_version() -> str:
    from importlib.metadata import version

    return version("onnxruntime")


def checker_tool() -> str:
    return f"onnxruntime {_ort_version()} usability_checker (BASIC-optimized graph)"


def partition_model(model, accelerator: str) -> Residency:
    """One accelerator's record for a shape-inferred ``onnx.ModelProto`` through ORT's partitioning logic."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    table, max_rank = ORT_CHECKER_TABLES[accelerator]
    checker = uc._SupportedOpsChecker(str(Path(uc.__file__).parent / table))
    info = uc.check_partitioning(model.graph, checker, True, max_rank)
    taken = {id(node) for group in info.supported_groups for node in group}
    left: dict[str, int] = {}
    for node in model.graph.node:
        if id(node) not in taken:
            left[node.op_type] = left.get(node.op_type, 0) + 1
    return Residency(
        accelerator=accelerator,
        tool=checker_tool(),
        nodes_total=info.num_nodes,
        nodes_supported=info.num_supported_nodes,
        partitions=info.num_partitions,
        unsupported_ops=left,
        note=_NOTES[accelerator],
    )


def optimized_with_shapes(path: Path):
    """The graph the checker reads: ORT BASIC-level optimization (as ``analyze_model`` does), shapes inferred."""
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "model.onnx"
        optimize_model(Path(path), optimized, use_external_initializers=True)
        return ModelProtoWithShapeInfo(optimized).model_with_shape_info


def checker_residency(path: Path, accelerators=tuple(ORT_CHECKER_TABLES)) -> list[Residency]:
    model = optimized_with_shapes(path)
    return [partition_model(model, a) for a in accelerators]


def cpu_placement(path: Path) -> Residency:
    """The CPU EP's share of the graph a real ORT session here runs (all-level optimized): the session's recorded
    EP graph assignment."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    per_ep: dict[str, int] = {}
    left: dict[str, int] = {}
    for subgraph in session.get_provider_graph_assignment_info():
        nodes = subgraph.get_nodes()
        per_ep[subgraph.ep_name] = per_ep.get(subgraph.ep_name, 0) + len(nodes)
        if subgraph.ep_name != "CPUExecutionProvider":
            for node in nodes:
                left[node.op_type] = left.get(node.op_type, 0) + 1
    total = sum(per_ep.values())
    cpu = per_ep.get("CPUExecutionProvider", 0)
    return Residency(
        accelerator="ort-cpu",
        tool=f"onnxruntime {_ort_version()} session graph assignment (CPUExecutionProvider)",
        nodes_total=total,
        nodes_supported=cpu,
        partitions=None,  # the CPU EP is the fallback itself: ORT reports its nodes one by one, not partitions
        unsupported_ops=left,
        note="measured here: a session with graph optimizations on (no device copies: no partitions)",
    )


def onnx_residency(path: Path) -> list[Residency]:
    return [*checker_residency(path), cpu_placement(path)]
