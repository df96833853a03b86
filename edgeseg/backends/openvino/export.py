"""edgeseg's rewritten graph -> OpenVINO IR (``openvino.save_model``): model.xml (graph) + model.bin (weights).

The IR is converted from edgeseg's own ONNX (``openvino.convert_model`` on the onnxslim-simplified file), not from
the PyTorch module: on EfficientViT-B0 at 384x480 both are exact in f32 (max abs diff 5.7e-6 against PyTorch),
but the ONNX route gives 339 ops against 393 and ran 5.3 ms against 9.1 ms in bf16 at 1 thread (measured once,
load average 2.0; the PyTorch route keeps the exporter's extra reshapes and casts). The fp16 IR is the f32
graph with ``compress_to_fp16`` (fp16 weights; Intel GPU/NPU run it in fp16, the CPU plugin decompresses to f32).
"""

from __future__ import annotations

from pathlib import Path

from edgeseg.errors import EdgesegError, reraise_interrupt
from edgeseg.io import sha256_file

CONVERTER = "openvino.convert_model from edgeseg's ONNX (torch.export -> onnxslim)"


def convert_from_onnx(job, onnx_file: Path):
    """The OpenVINO model of ``job``'s deploy graph, via edgeseg's ONNX (written to ``onnx_file``); + ONNX facts."""
    import openvino as ov

    from edgeseg.backends.onnx.export import export_onnx

    info = export_onnx(job.module, job.example, onnx_file, job.opset, job.output_name)
    try:
        model = ov.convert_model(str(onnx_file))
    except Exception as exc:  # the ONNX frontend's failures (an op it cannot convert) are the target's result
        reraise_interrupt(exc)
        raise EdgesegError(f"OpenVINO conversion failed: {conversion_failure(exc)}") from None
    return model, {"exporter": f"{info['exporter']} -> ONNX -> OpenVINO IR", "opset": info["opset"], "onnx": info}


def conversion_failure(exc: Exception) -> str:
    """One line from an OpenVINO frontend error: the first op it could not convert and why (its report opens with a
    C++ check location, then lists ``-- <op> with a message:`` blocks), else the first line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    op = next((i for i, ln in enumerate(lines) if ln.startswith("-- ")), None)
    if op is None:
        return f"{type(exc).__name__}: {(lines or [''])[0][:240]}"
    why = [ln for ln in lines[op + 1 : op + 6] if not ln.startswith("[")]
    reason = next((ln for ln in reversed(why) if not ln.startswith(("While validating", "Summary", "--"))), "")
    name = lines[op][3:].split(" with a message")[0]
    return f"{type(exc).__name__}: {name}: {reason or (why[0] if why else '')}"[:300]


def save_ir(model, path: Path, compress_to_fp16: bool) -> dict:
    """``openvino.save_model`` to ``path`` (.xml, weights beside it in .bin); manifest facts about the IR."""
    import openvino as ov

    ov.save_model(model, str(path), compress_to_fp16=compress_to_fp16)
    weights = path.with_suffix(".bin")
    ops: dict[str, int] = {}
    for op in ov.Core().read_model(str(path)).get_ordered_ops():
        ops[op.get_type_name()] = ops.get(op.get_type_name(), 0) + 1
    return {
        "converter": CONVERTER,
        "ir": {"xml": path.name, "bin": weights.name, "bin_sha256": sha256_file(weights)},
        "compress_to_fp16": compress_to_fp16,
        "ir_ops": sum(n for t, n in ops.items() if t not in ("Parameter", "Result", "Constant")),
    }
