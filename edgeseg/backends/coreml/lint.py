"""Core ML lint: mlprogram op types against the verified list, tensor rank <= 5, static shapes."""

from __future__ import annotations

from pathlib import Path

from edgeseg.errors import EdgesegError, reraise_interrupt
from edgeseg.lint import LintReport, RuleSet

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


def lint_coreml(spec_path_or_model, rs: RuleSet) -> LintReport:
    """Core ML mlprogram: op types against the verified list, tensor rank <= 5, static shapes."""
    import coremltools as ct

    if isinstance(spec_path_or_model, (str, Path)):
        try:
            spec = ct.models.MLModel(str(spec_path_or_model), skip_model_load=True).get_spec()
        except Exception as exc:
            reraise_interrupt(exc)
            raise EdgesegError(f"cannot read Core ML model {spec_path_or_model}: {str(exc)[:160]}") from None
    else:
        spec = spec_path_or_model.get_spec()
    report = LintReport(rs.name)
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
