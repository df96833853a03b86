"""Core ML lint: mlprogram op types against the verified list, tensor rank <= 5, static shapes."""

from __future__ import annotations

from pathlib import Path

from edgeseg.backends.coreml.residency import ANE_OPS
from edgeseg.errors import EdgesegError, reraise_interrupt
from edgeseg.lint import LintReport, RuleSet

# Core ML MIL ops edgeseg's graphs use that run on the Neural Engine / GPU: the Neural Engine's table plus the ops
# that run on the GPU (or are free: const, cast, identity) but not on the Neural Engine.
_COREML_VERIFIED = ANE_OPS | frozenset(
    {
        "thresholded_relu",
        "upsample_bicubic",
        "pixel_shuffle",
        "depth_to_space",
        "cast",
        "const",
        "reduce_argmax",
        "identity",
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
