"""OpenVINO lint and residency, on the IR itself (what the plugins compile).

Rules: no dynamic shapes (every edgeseg artifact is static; a dynamic dim makes the NPU plugin refuse the model);
no shape computation (ShapeOf) or control flow; rank at most 6 (the NPU plugin's limit, and the ONNX rule set's);
every node taken by the CPU plugin (``Core.query_model``); an int8 IR must not fake-quantize a constant-first
MatMul (the CPU plugin refuses to compile it); ops outside the verified list are warnings.
Residency: ``Core.query_model(model, device)`` for every device OpenVINO finds here, one record each.
"""

from __future__ import annotations

from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.lint import LintReport, RuleSet
from edgeseg.residency import Residency

# OpenVINO op types (opset names) of edgeseg's graphs, checked to compile and run on the CPU plugin
VERIFIED = frozenset(
    {
        "Parameter",
        "Result",
        "Constant",
        "Convolution",
        "GroupConvolution",
        "Add",
        "Subtract",
        "Multiply",
        "Divide",
        "Power",
        "Sqrt",
        "Maximum",
        "Minimum",
        "Relu",
        "Clamp",
        "HSwish",
        "HSigmoid",
        "Sigmoid",
        "Tanh",
        "Gelu",
        "Erf",
        "Exp",
        "MatMul",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Split",
        "VariadicSplit",
        "StridedSlice",
        "Slice",
        "ReduceSum",
        "ReduceMean",
        "Softmax",
        "SoftMax",
        "MVN",
        "Interpolate",
        "TopK",
        "Convert",
        "Pad",
        "AvgPool",
        "MaxPool",
        "FakeQuantize",
        "DepthToSpace",
    }
)
FORBIDDEN = frozenset(
    {"ShapeOf", "Loop", "If", "TensorIterator", "NonZero", "ScatterNDUpdate", "ScatterElementsUpdate", "Unique"}
)
OPENVINO_RULES = RuleSet("openvino", 6, FORBIDDEN, frozenset({"nearest", "linear", "cubic"}), VERIFIED)
_BOOKKEEPING = ("Parameter", "Result", "Constant")


def _read(path_or_model):
    import openvino as ov

    if not isinstance(path_or_model, (str, Path)):
        return path_or_model
    try:
        return ov.Core().read_model(str(path_or_model))
    except RuntimeError as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), str(exc))
        raise EdgesegError(f"cannot read OpenVINO IR {path_or_model}: {first[:160]}") from None


def lint_openvino(path_or_model, rs: RuleSet = OPENVINO_RULES) -> LintReport:
    import openvino as ov

    from edgeseg.backends.openvino.int8 import constant_first_matmuls

    model = _read(path_or_model)
    report = LintReport(rs.name)
    for op in model.get_ordered_ops():
        kind, name = op.get_type_name(), op.get_friendly_name()
        report.ops[kind] = report.ops.get(kind, 0) + 1
        if kind in rs.forbidden:
            why = "dynamic shape computation" if kind == "ShapeOf" else "control flow / data-dependent shape"
            report.add("error", "forbidden-op", name, f"{kind}: {why}")
        elif kind not in rs.verified_ops:
            report.add("warning", "unverified-op", name, f"{kind} is not in the openvino verified op list")
        for i in range(op.get_output_size()):
            shape = op.get_output_partial_shape(i)
            if shape.rank.is_dynamic or not shape.is_static:
                report.add("error", "static-shape", name, f"{kind} output {i} has a dynamic shape {shape}")
                continue
            rank = len(shape)
            report.max_rank = max(report.max_rank, rank)
            if rank > rs.max_rank:
                report.add("error", "max-rank", name, f"{kind} output {i} is {rank}-D (max {rs.max_rank})")
        if kind == "Interpolate":
            mode = str(op.get_attributes().get("mode", ""))
            if mode.replace("linear_onnx", "linear") not in rs.resize_modes:
                report.add("error", "resize-mode", name, f"Interpolate mode {mode!r} not supported on {rs.name}")
    quantized_first = constant_first_matmuls(model, quantized_only=True)
    for n in quantized_first:
        report.add(
            "error",
            "constant-first-matmul-int8",
            n,
            "MatMul with a constant first input is quantized: the CPU plugin cannot compile it "
            "(dnnl_postops_composer any_of(scale.size(), OC, 1U)); keep it float",
        )
    taken = ov.Core().query_model(model, "CPU")
    left = [op for op in model.get_ordered_ops() if op.get_friendly_name() not in taken]
    for op in left:
        if op.get_type_name() not in _BOOKKEEPING:
            report.add(
                "error", "cpu-plugin", op.get_friendly_name(), f"{op.get_type_name()} not taken by the CPU plugin"
            )
    return report


def residency(path_or_model) -> list[Residency]:
    """One record per device OpenVINO finds here (``Core.query_model``: which nodes that plugin takes)."""
    import openvino as ov

    from edgeseg.backends.openvino.runtime import openvino_version

    model = _read(path_or_model)
    core = ov.Core()
    nodes = [op for op in model.get_ordered_ops() if op.get_type_name() not in _BOOKKEEPING]
    out = []
    for device in core.available_devices:
        taken = core.query_model(model, device)
        missing: dict[str, int] = {}
        for op in nodes:
            if op.get_friendly_name() not in taken:
                missing[op.get_type_name()] = missing.get(op.get_type_name(), 0) + 1
        full = core.get_property(device, "FULL_DEVICE_NAME")
        out.append(
            Residency(
                accelerator=f"openvino-{device.lower()}",
                tool=f"openvino {openvino_version()} Core.query_model",
                nodes_total=len(nodes),
                nodes_supported=len(nodes) - sum(missing.values()),
                partitions=None,
                unsupported_ops=missing,
                note=f"query_model on this machine's {device} plugin ({full}); GPU/NPU plugins answer only where "
                "an Intel GPU / NPU and its driver are present",
            )
        )
    return out
