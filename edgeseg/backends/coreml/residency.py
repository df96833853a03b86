"""Residency of a Core ML mlprogram on the Neural Engine (compute units ALL, what edgeseg's exports leave set).

On macOS 14.4+ the figure is Core ML's own: ``MLComputePlan`` (coremltools ``compute_plan``) gives each
operation's preferred compute device; partitions are the runs of consecutive Neural Engine operations in program
order. Elsewhere (Core ML's runtime is macOS only) it is a static reading of the converted program, labelled so:
an operation counts as Neural Engine-resident when its type is in edgeseg's Neural Engine op table and it computes
in fp16 (the Neural Engine has no fp32 path: an fp32 program, and the ops an fp16 export keeps fp32, run on the GPU
or CPU). ``const`` operations are weights, not work, and ``cast`` operations mark where the precision changes (the
fp32 ops between them are counted as not taken): neither is counted.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edgeseg.residency import Residency

# MIL op types the Neural Engine executes (fp16), as edgeseg's graphs use them (a static table: not Core ML's word).
ANE_OPS = frozenset(
    {
        "conv",
        "avg_pool",
        "batch_norm",
        "relu",
        "relu6",
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
        "resize_bilinear",
        "clip",
        "sigmoid",
        "sigmoid_hard",
        "silu",
        "gelu",
        "tanh",
        "softmax",
        "layer_norm",
        "squeeze",
        "expand_dims",
        "linear",
        "pow",
        "sqrt",
        "quantize",
        "dequantize",
        "constexpr_affine_dequantize",
    }
)
_UNCOUNTED = frozenset({"const", "cast"})
_FP16, _INT8 = 10, 21  # coremltools.proto.MIL_pb2 data types
_STATIC = "static: edgeseg's Neural Engine op table and op dtypes (MLComputePlan needs macOS 14.4+)"


def _coremltools_version() -> str:
    from importlib.metadata import version

    return version("coremltools")


def _operations(spec):
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            yield from block.operations


def static_ane_residency(path: Path) -> Residency:
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    total = taken = partitions = 0
    left: dict[str, int] = {}
    in_run = False
    for op in _operations(spec):
        if op.type in _UNCOUNTED:
            continue
        total += 1
        dtypes = {o.type.tensorType.dataType for o in op.outputs}
        ok = op.type in ANE_OPS and bool(dtypes) and dtypes <= {_FP16, _INT8}
        if ok:
            taken += 1
            partitions += not in_run
        else:
            key = op.type if op.type not in ANE_OPS else f"{op.type} (fp32)"  # in the table: its dtype is why
            left[key] = left.get(key, 0) + 1
        in_run = ok
    return Residency(
        accelerator="coreml-ane",
        tool=f"edgeseg static op table over the coremltools {_coremltools_version()} program",
        nodes_total=total,
        nodes_supported=taken,
        partitions=partitions,
        unsupported_ops=left,
        note=_STATIC + "; partitions: runs of consecutive Neural Engine ops in program order",
    )


def compute_plan_residency(path: Path) -> Residency:
    """Core ML's own placement (macOS 14.4+): each operation's preferred device under compute units ALL."""
    import coremltools as ct
    from coremltools.models.compute_plan import MLComputePlan

    plan = MLComputePlan.load_from_path(path=str(path), compute_units=ct.ComputeUnit.ALL)
    main = plan.model_structure.program.functions["main"]
    total = taken = partitions = 0
    left: dict[str, int] = {}
    in_run = False
    for op in main.block.operations:
        if op.operator_name in _UNCOUNTED:
            continue
        usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
        device = type(usage.preferred_compute_device).__name__ if usage is not None else ""
        total += 1
        ok = "NeuralEngine" in device
        if ok:
            taken += 1
            partitions += not in_run
        else:
            left[op.operator_name] = left.get(op.operator_name, 0) + 1
        in_run = ok
    return Residency(
        accelerator="coreml-ane",
        tool=f"Core ML MLComputePlan (coremltools {_coremltools_version()})",
        nodes_total=total,
        nodes_supported=taken,
        partitions=partitions,
        unsupported_ops=left,
        note="measured on this Mac; partitions: runs of consecutive Neural Engine ops in program order",
    )


def coreml_residency(path: Path) -> list[Residency]:
    if sys.platform == "darwin":
        try:
            return [compute_plan_residency(path)]
        except (ImportError, AttributeError, RuntimeError):  # older macOS / coremltools without MLComputePlan
            pass
    return [static_ane_residency(path)]
