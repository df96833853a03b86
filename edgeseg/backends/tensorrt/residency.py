"""Residency of a TensorRT artifact: the engine's layers where TensorRT exists, the ONNX side otherwise (labelled so).

- Engine built (TensorRT + CUDA here): the engine inspector's layer list; every layer runs on the GPU, and the
  note gives the layer count per precision (``build_engine`` builds with detailed profiling verbosity so the
  inspector reports precisions).
- TensorRT installed, no engine: TensorRT's own ONNX parser (``OnnxParser.supports_model_v2``) says which
  subgraphs it takes.
- Neither: the ONNX graph's op types against edgeseg's table of TensorRT 10's ONNX parser operators (onnx-tensorrt
  ``docs/operators.md``), grouped into partitions by ONNX Runtime's partitioning logic. ONNX-side, not the engine:
  the tool string says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeseg.residency import Residency

# TensorRT 10's ONNX parser operators (onnx-tensorrt docs/operators.md), ai.onnx domain.
TRT_ONNX_OPS = frozenset(
    """Abs Acos Acosh Add AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil
    Celu Clip Concat ConstantOfShape Constant Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
    DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND
    Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU
    HardSigmoid HardSwish Hardmax Identity If InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
    LessOrEqual Log LogSoftmax Loop LpNormalization LpPool LRN LSTM MatMul Max MaxPool Mean
    MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad Pow PRelu
    QuantizeLinear Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
    ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round Scan ScatterElements
    ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
    Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Where Xor""".split()
)


class _TableChecker:
    """Duck-typed ``usability_checker._SupportedOpsChecker`` over an op-type set."""

    def __init__(self, ops: frozenset[str]):
        self.ops = ops

    def is_op_supported(self, node) -> bool:
        return (node.domain in ("", "ai.onnx")) and node.op_type in self.ops

    def get_caveats(self) -> list[str]:
        return []


def onnx_side_residency(path: Path) -> Residency:
    import onnx
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    info = uc.check_partitioning(model.graph, _TableChecker(TRT_ONNX_OPS), False)
    taken = {id(node) for group in info.supported_groups for node in group}
    left: dict[str, int] = {}
    for node in model.graph.node:
        if id(node) not in taken:
            left[node.op_type] = left.get(node.op_type, 0) + 1
    return Residency(
        accelerator="tensorrt",
        tool="ONNX-side: edgeseg's TensorRT 10 ONNX-parser op table, ORT's partitioning logic (not the engine)",
        nodes_total=info.num_nodes,
        nodes_supported=info.num_supported_nodes,
        partitions=info.num_partitions,
        unsupported_ops=left,
        note="static: op types of the TensorRT-ready ONNX; the engine's layers need TensorRT + CUDA",
    )


def parser_residency(path: Path) -> Residency:
    """TensorRT's ONNX parser's own verdict on the graph (TensorRT installed here; no GPU needed to parse)."""
    import onnx
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    parser.supports_model_v2(Path(path).read_bytes())
    nodes = list(onnx.load(str(path)).graph.node)
    taken: set[int] = set()
    partitions = 0
    for i in range(parser.num_subgraphs):
        if parser.is_subgraph_supported(i):
            partitions += 1
            taken |= set(parser.get_subgraph_nodes(i))
    left: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if i not in taken:
            left[node.op_type] = left.get(node.op_type, 0) + 1
    return Residency(
        accelerator="tensorrt",
        tool=f"TensorRT {trt.__version__} OnnxParser.supports_model_v2",
        nodes_total=len(nodes),
        nodes_supported=len(taken),
        partitions=partitions,
        unsupported_ops=left,
        note="the ONNX parser's subgraphs (no engine in this artifact)",
    )


def engine_residency(engine_path: Path) -> Residency:
    """Layers of a built engine per precision, from TensorRT's engine inspector."""
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    layers = info.get("Layers", [])
    precisions: dict[str, int] = {}
    for layer in layers:
        if isinstance(layer, dict):
            outputs = layer.get("Outputs") or [{}]
            fmt = str(outputs[0].get("Format/Datatype", "unknown")).split(" ")[0]
        else:
            fmt = "unknown (build with detailed profiling verbosity)"
        precisions[fmt] = precisions.get(fmt, 0) + 1
    return Residency(
        accelerator="tensorrt",
        tool=f"TensorRT {trt.__version__} engine inspector",
        nodes_total=len(layers),
        nodes_supported=len(layers),
        partitions=1,
        note="engine layers per output format: " + ", ".join(f"{k} x{v}" for k, v in sorted(precisions.items())),
    )


def tensorrt_residency(path: Path) -> list[Residency]:
    """``path``: the artifact's model file (the TensorRT-ready ONNX); an engine beside it is inspected."""
    import importlib.util

    from edgeseg.backends.tensorrt.runtime import tensorrt_status

    engine = Path(path).with_name("model.engine")
    ok, _ = tensorrt_status()
    if ok and engine.is_file():
        return [engine_residency(engine)]
    if importlib.util.find_spec("tensorrt") is not None:
        return [parser_residency(path)]
    return [onnx_side_residency(path)]
