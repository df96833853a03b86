"""Conformance lint of an ONNX graph against a backend's rule set (the ``rules`` column of the target table).

Checks: ops known to break a backend (Einsum, Col2Im, ScatterND, Loop, NonZero...), maximum tensor rank,
6-D transposes (what ``F.unfold`` exports to), static shapes (no Shape-driven reshapes, every dim a number),
resize modes (align_corners=False must be half_pixel / pytorch_half_pixel; no cubic where the backend lacks it),
and ops outside the backend's verified list (a warning: it may still work, nobody checked).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeseg.errors import EdgesegError

_CORE_OPS = {
    "Conv",
    "BatchNormalization",
    "Relu",
    "Clip",
    "HardSwish",
    "HardSigmoid",
    "Sigmoid",
    "Tanh",
    "Erf",
    "Gelu",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "Max",
    "Min",
    "MatMul",
    "Gemm",
    "Reshape",
    "Transpose",
    "Slice",
    "Concat",
    "Split",
    "Squeeze",
    "Unsqueeze",
    "Resize",
    "Cast",
    "ReduceSum",
    "ReduceMean",
    "Softmax",
    "LayerNormalization",
    "ArgMax",
    "Constant",
    "Identity",
    "Pad",
    "Flatten",
    "Neg",
    "Exp",
    "QuantizeLinear",
    "DequantizeLinear",
    "ConvTranspose",
    "DepthToSpace",
    "AveragePool",
    "MaxPool",
    "GlobalAveragePool",
}


@dataclass(frozen=True)
class RuleSet:
    name: str
    max_rank: int
    forbidden: frozenset[str]
    resize_modes: frozenset[str]  # allowed Resize "mode" values
    verified_ops: frozenset[str] = frozenset(_CORE_OPS)


_ALWAYS_FORBIDDEN = frozenset(
    {
        "Einsum",
        "Col2Im",
        "ScatterND",
        "ScatterElements",
        "Loop",
        "Scan",
        "If",
        "NonZero",
        "Unique",
        "NonMaxSuppression",
        "Shape",
        "Size",
    }
)

RULES: dict[str, RuleSet] = {
    # ORT runs almost anything; the rank cap keeps graphs portable (TFLite/XNNPACK top out at 6-D, Core ML at 5).
    "onnx": RuleSet("onnx", 6, _ALWAYS_FORBIDDEN, frozenset({"nearest", "linear", "cubic"})),
    "tensorrt": RuleSet("tensorrt", 8, _ALWAYS_FORBIDDEN, frozenset({"nearest", "linear", "cubic"})),
    "coreml": RuleSet("coreml", 5, _ALWAYS_FORBIDDEN, frozenset({"nearest", "linear", "cubic"})),
    # TFLite has no bicubic resize; the GPU delegate takes at most 4-D tensors.
    "tflite": RuleSet("tflite", 4, _ALWAYS_FORBIDDEN | {"Gelu"}, frozenset({"nearest", "linear"})),
}


@dataclass
class Finding:
    severity: str  # error | warning
    rule: str
    node: str
    message: str


@dataclass
class LintReport:
    rules: str
    errors: int = 0
    warnings: int = 0
    findings: list[Finding] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    max_rank: int = 0

    @property
    def clean(self) -> bool:
        return self.errors == 0

    def add(self, severity: str, rule: str, node: str, message: str) -> None:
        self.findings.append(Finding(severity, rule, node, message))
        if severity == "error":
            self.errors += 1
        else:
            self.warnings += 1

    def as_dict(self) -> dict:
        d = asdict(self)
        d["clean"] = self.clean
        return d


def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def lint_onnx(path_or_model, rules: str) -> LintReport:
    import onnx

    if rules not in RULES:
        raise EdgesegError(f"unknown rule set {rules!r}; valid: {', '.join(RULES)}")
    rs = RULES[rules]
    if isinstance(path_or_model, (str, Path)):
        try:
            model = onnx.load(str(path_or_model))
        except Exception as exc:
            raise EdgesegError(f"cannot read ONNX model {path_or_model}: {str(exc).splitlines()[0][:160]}") from None
    else:
        model = path_or_model
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    report = LintReport(rules)

    shapes: dict[str, list] = {}
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    for name, dims in shapes.items():
        report.max_rank = max(report.max_rank, len(dims))
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            report.add("error", "static-shape", name, f"tensor {name} has a dynamic shape {dims}")

    for node in graph.node:
        label = node.name or node.op_type
        report.ops[node.op_type] = report.ops.get(node.op_type, 0) + 1
        if node.op_type in rs.forbidden:
            why = "dynamic shape computation" if node.op_type in ("Shape", "Size") else f"unsupported on {rules}"
            report.add("error", "forbidden-op", label, f"{node.op_type}: {why}")
        elif node.op_type not in rs.verified_ops and node.domain in ("", "ai.onnx"):
            report.add("warning", "unverified-op", label, f"{node.op_type} is not in the {rules} verified op list")
        for out in node.output:
            rank = len(shapes.get(out, []))
            if rank > rs.max_rank:
                report.add("error", "max-rank", label, f"{node.op_type} output {out} is {rank}-D (max {rs.max_rank})")
        if node.op_type == "Transpose" and len(_attr(node, "perm", [])) >= 6:
            report.add("error", "6d-transpose", label, "6-D Transpose (unfold/im2col pattern)")
        if node.op_type == "Resize":
            mode = _attr(node, "mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            ctm = _attr(node, "coordinate_transformation_mode", b"half_pixel")
            ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
            if mode not in rs.resize_modes:
                report.add("error", "resize-mode", label, f"Resize mode {mode!r} not supported on {rules}")
            if mode != "nearest" and ctm not in ("half_pixel", "pytorch_half_pixel"):
                report.add(
                    "error",
                    "resize-alignment",
                    label,
                    f"Resize coordinate_transformation_mode {ctm!r} != half_pixel: does not match PyTorch "
                    "align_corners=False",
                )
    return report


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


def lint_tflite(path: Path, rules: str = "tflite") -> LintReport:
    """TFLite flatbuffer: op list, tensor ranks (GPU delegate: 4-D), no dynamic shapes, XNNPACK partitions."""
    from ai_edge_litert.interpreter import Interpreter

    rs = RULES[rules]
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise EdgesegError(f"cannot read TFLite model {path}: {str(exc).splitlines()[0][:160]}") from None
    report = LintReport(rules)
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
    from edgeseg.runtimes.litert import executed_ops

    left: dict[str, int] = {}
    for op in executed_ops(interpreter):
        if op["op_name"] != "DELEGATE":
            left[op["op_name"]] = left.get(op["op_name"], 0) + 1
    return left


# Core ML MIL ops edgeseg's graphs use that run on the Neural Engine / GPU.
_COREML_VERIFIED = frozenset(
    {
        "conv",
        "avg_pool",  # LVT's CSA (2x2 pool)
        "batch_norm",
        "relu",
        "relu6",
        "thresholded_relu",
        "add",
        "sub",
        "mul",
        "real_div",
        "maximum",
        "minimum",
        "matmul",
        "reshape",
        "transpose",
        "concat",
        "slice_by_index",
        "slice_by_size",
        "split",
        "pad",
        "reduce_sum",
        "reduce_mean",
        "upsample_bilinear",
        "upsample_bicubic",
        "pixel_shuffle",
        "depth_to_space",
        "cast",
        "const",
        "clip",
        "sigmoid",
        "sigmoid_hard",
        "silu",
        "gelu",
        "tanh",
        "softmax",
        "layer_norm",
        "reduce_argmax",
        "squeeze",
        "expand_dims",
        "linear",
        "identity",
        "pow",
        "sqrt",
        "resize_bilinear",
        # W8A8 (iOS 17): int8 weights and activation quantize/dequantize pairs
        "constexpr_affine_dequantize",
        "quantize",
        "dequantize",
    }
)


def lint_coreml(spec_path_or_model, rules: str = "coreml") -> LintReport:
    """Core ML mlprogram: op types against the verified list, tensor rank <= 5, static shapes."""
    import coremltools as ct

    rs = RULES[rules]
    if isinstance(spec_path_or_model, (str, Path)):
        try:
            spec = ct.models.MLModel(str(spec_path_or_model), skip_model_load=True).get_spec()
        except Exception as exc:
            raise EdgesegError(f"cannot read Core ML model {spec_path_or_model}: {str(exc)[:160]}") from None
    else:
        spec = spec_path_or_model.get_spec()
    report = LintReport(rules)
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                report.ops[op.type] = report.ops.get(op.type, 0) + 1
                label = op.outputs[0].name if op.outputs else op.type
                if op.type not in _COREML_VERIFIED:
                    report.add("warning", "unverified-op", label, f"{op.type} is not in the coreml verified op list")
                for out in op.outputs:
                    tensor = out.type.tensorType
                    rank = tensor.rank
                    report.max_rank = max(report.max_rank, rank)
                    if rank > rs.max_rank:
                        report.add("error", "max-rank", label, f"{op.type} output is {rank}-D (max {rs.max_rank})")
                    if any(d.WhichOneof("dimension") == "unknown" for d in tensor.dimensions):
                        report.add("error", "static-shape", label, f"{op.type} output has a dynamic dimension")
    return report
