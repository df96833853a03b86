"""Conformance lint: the report every backend's linter fills, the rule-set record each backend declares, and the
ONNX graph checker (the backends' own file linters live in their packages).

Checks: ops known to break a backend (Einsum, Col2Im, ScatterND, Loop, NonZero...), maximum tensor rank,
6-D transposes (what ``F.unfold`` exports to), static shapes (no Shape-driven reshapes, every dim a number),
resize modes (align_corners=False must be half_pixel / pytorch_half_pixel; no cubic where the backend lacks it),
and ops outside the backend's verified list (a warning: it may still work, nobody checked).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeseg.errors import EdgesegError, reraise_interrupt

CORE_OPS = {
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
    verified_ops: frozenset[str] = frozenset(CORE_OPS)


ALWAYS_FORBIDDEN = frozenset(
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


def lint_onnx(path_or_model, rs: RuleSet) -> LintReport:
    """An ONNX graph against a backend's graph rules (ONNX, TensorRT and the estimator's graphs use these)."""
    import onnx

    rules = rs.name
    if isinstance(path_or_model, (str, Path)):
        try:
            model = onnx.load(str(path_or_model))
        except Exception as exc:
            reraise_interrupt(exc)
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
