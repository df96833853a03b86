"""PyTorch -> ONNX: torch's torch.export-based exporter, static shapes, one self-contained file, then onnxslim.

The legacy TorchScript exporter is used only when the torch.export path fails (recorded in the manifest).
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


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path, opset: int, output_name: str) -> dict:
    """Write ``module`` traced at ``example``'s static shape to ``path``; return facts for the manifest."""
    import onnx
    import onnxslim

    module.eval()
    # torch's exporter logs a warning per missing torchvision op; edgeseg never uses torchvision
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    exporter = "torch.export (dynamo)"
    # the exporter prints its progress to stdout; edgeseg reports the result itself
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=True,
                opset_version=opset,
                external_data=False,
                input_names=["image"],
                output_names=[output_name],
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many types; fall back once, then report both
            reraise_interrupt(exc)  # Ctrl-C during torch's lazy imports arrives wrapped: stop, never fall back
            first = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            exporter = f"torchscript (legacy fallback; torch.export failed: {first[:200]})"
            try:
                torch.onnx.export(
                    module,
                    (example,),
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=["image"],
                    output_names=[output_name],
                    do_constant_folding=True,
                )
            except Exception as exc2:
                reraise_interrupt(exc2)
                raise EdgesegError(f"ONNX export failed with both exporters: {first}; legacy: {exc2}") from None
    model = onnx.load(str(path))
    nodes_before = len(model.graph.node)
    model = onnxslim.slim(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    # what the file holds, not what was asked for: an exporter may settle on another opset than requested
    actual = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    return {
        "exporter": exporter,
        "opset": actual,
        "nodes": len(model.graph.node),
        "nodes_before_slim": nodes_before,
        "simplifier": f"onnxslim {onnxslim.__version__}",
    }
