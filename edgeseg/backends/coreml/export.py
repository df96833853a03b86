"""PyTorch -> Core ML (mlprogram) with coremltools from a ``torch.export`` program (its jit.trace path breaks
with numpy >= 2.4). Minimum deployment target iOS 17.

fp16: ``FP16ComputePrecision`` with an op selector that keeps the attention cores in fp32: EfficientViT's linear
attention (matmul, the normaliser's reduce_sum / maximum, the division: Core ML's fp16 would clamp eps 1e-15 to
5.96e-8 and overflow the token sums) and LVT / SegFormer's softmax attention (matmul, softmax: fp16 scores
overflow past 65504) and LayerNorm (fp16 variance of post-attention activations overflows). The PyTorch-side
fp32 casts of those rewrites vanish in the fp32 graph Core ML converts, so the selector is what keeps them.
Prediction needs macOS; on Linux the model is converted, saved and linted.

int8 (W8A8): PT2E static quantization calibrated on real images before conversion (``edgeseg.quantize.pt2e``):
weights become ``constexpr_affine_dequantize`` int8 constants, activations iOS 17 ``quantize``/``dequantize``
pairs (the int8-int8 path of the Neural Engine from A17 Pro / M4); float parts compute as in fp16, with the same
attention core kept fp32. The quantized PyTorch graph that is converted is returned too, so parity of the int8
numerics can be measured here, labelled as a simulation, where Core ML itself cannot run.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from edgeseg.errors import EdgesegError, reraise_interrupt

FP32_OPS = frozenset({"matmul", "real_div", "reduce_sum", "maximum", "softmax", "layer_norm"})


def export_coreml(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    precision: str,
    output_name: str,
    calib_inputs: list[torch.Tensor] | None = None,
):
    """Returns (manifest facts, the MLModel, the int8-simulating torch module for int8 or None)."""
    import coremltools as ct

    module.eval()
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    sink = io.StringIO()
    simulated = None
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        if precision == "int8":
            from edgeseg.quantize.pt2e import pt2e_int8

            if not calib_inputs:
                raise EdgesegError("coreml-int8 needs calibration inputs (pass --calib-data)")
            simulated, _ = pt2e_int8(module, example, calib_inputs, fold_quantize=True)
            module = simulated
        program = torch.export.export(module, (example,)).run_decompositions({})
        if precision == "fp32":
            compute = ct.precision.FLOAT32
        elif precision in ("fp16", "int8"):
            compute = ct.transform.FP16ComputePrecision(op_selector=lambda op: op.op_type not in FP32_OPS)
        else:
            raise EdgesegError(f"Core ML {precision} is not produced by this exporter")
        try:
            mlmodel = ct.convert(
                program,
                inputs=[ct.TensorType(name="image", shape=tuple(example.shape))],
                outputs=[ct.TensorType(name=output_name)],
                convert_to="mlprogram",
                minimum_deployment_target=ct.target.iOS17,
                compute_precision=compute,
            )
        except Exception as exc:
            reraise_interrupt(exc)
            raise EdgesegError(
                f"Core ML conversion failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            ) from None
        mlmodel.save(str(path))
    info = {
        "exporter": f"coremltools {ct.__version__} (torch.export)",
        "minimum_deployment_target": "iOS17",
        "fp32_ops_in_fp16": sorted(FP32_OPS) if precision in ("fp16", "int8") else None,
    }
    if precision == "int8":
        ops, _, _ = mil_summary(mlmodel)
        info["int8"] = (
            "PT2E static W8A8: int8 conv/add/mul/cat (constexpr_affine_dequantize weights, quantize/dequantize "
            "activations), per-channel symmetric weights; matmul/div/sum float"
        )
        info["int8_ops"] = {k: ops.get(k, 0) for k in ("constexpr_affine_dequantize", "quantize", "dequantize")}
    return info, mlmodel, simulated


def mil_summary(mlmodel) -> tuple[dict[str, int], list[tuple[str, str, int]], dict[str, int]]:
    """Op counts, (op name, op type, output rank) per op, and output dtypes per op type, from the MIL program."""
    ops: dict[str, int] = {}
    ranks: list[tuple[str, str, int]] = []
    dtypes: dict[str, int] = {}
    for fn in mlmodel._mil_program.functions.values():
        for op in fn.operations:
            ops[op.op_type] = ops.get(op.op_type, 0) + 1
            for out in op.outputs:
                rank = getattr(out, "rank", 0) or 0
                ranks.append((op.name, op.op_type, rank))
                key = f"{op.op_type}:{getattr(out.dtype, '__name__', str(out.dtype))}"
                dtypes[key] = dtypes.get(key, 0) + 1
    return ops, ranks, dtypes
