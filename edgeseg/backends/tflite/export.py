"""PyTorch -> TFLite with litert-torch (direct from torch.export; keeps torch 2.13, no TensorFlow).

fp32: the deploy graph as is. int8: PT2E static quantization calibrated on real images. fp16: TFLite's float16
scheme, applied with ai-edge-quantizer's float casting (conv / fully-connected weights stored fp16 with explicit
dequantize; CPU computes fp32, the GPU delegate fp16).
I/O is NHWC (the TFLite convention): input (1, H, W, 3) float32, logits (1, h, w, C) or labels (1, H, W) int32.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from edgeseg.errors import EdgesegError, reraise_interrupt

_FP16_RECIPE = [
    {
        "regex": ".*",
        "operation": "*",
        "algorithm_key": "float_casting",
        "op_config": {
            "weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
            "compute_precision": "FLOAT",
            "explicit_dequantize": True,
        },
    }
]


def _to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


def export_tflite(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    precision: str,
    logits_output: bool,
    calib_inputs: list[torch.Tensor] | None = None,
    choose_float: Callable | None = None,
) -> dict:
    """``calib_inputs`` (NCHW, preprocessed like the deployed input) are required for int8. ``choose_float(switches,
    convert)`` is the mixed-precision search (int8 with logits output only): given the int8 graph's per-layer float
    switches (``Pt2eSwitches``, logits in NCHW) and ``convert(ops kept float) -> .tflite path`` for its probes, it
    returns the ops to keep float; the artifact converted for them is the one written."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import litert_torch

    module.eval()
    wrapped = litert_torch.to_channel_last_io(module, args=[0], outputs=[0] if logits_output else [])
    nhwc = example.permute(0, 2, 3, 1).contiguous()
    logging.getLogger("torch").setLevel(logging.ERROR)
    sink, outer = io.StringIO(), (sys.stdout, sys.stderr)  # the search reports progress on the caller's streams
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        try:
            if precision == "int8":
                from litert_torch.quantize.quant_config import QuantConfig

                from edgeseg.quantize.pt2e import pt2e_int8

                graph, quantizer = pt2e_int8(wrapped, nhwc, calib_inputs or [], False, _to_nhwc)
                if choose_float is None:
                    edge = litert_torch.convert(graph, (nhwc,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
                else:
                    from edgeseg.quantize.pt2e import Pt2eSwitches

                    switches = Pt2eSwitches(graph, _to_nhwc, lambda y: y.permute(0, 3, 1, 2))
                    built: dict[frozenset, Path] = {}

                    def convert_with_float(names: list[str]) -> Path:
                        """The int8 artifact with ``names`` in float, converted once per set."""
                        key = frozenset(names)
                        if key not in built:
                            probe = path.with_name(f"{path.stem}.probe{len(built)}{path.suffix}")
                            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                                litert_torch.convert(
                                    switches.graph_for_export(names),
                                    (nhwc,),
                                    quant_config=QuantConfig(pt2e_quantizer=quantizer),
                                ).export(str(probe))
                            built[key] = probe
                        return built[key]

                    with contextlib.redirect_stdout(outer[0]), contextlib.redirect_stderr(outer[1]):
                        chosen = convert_with_float(choose_float(switches, convert_with_float))
                    chosen.replace(path)
                    for probe in built.values():
                        probe.unlink(missing_ok=True)
                    edge = None
            else:
                edge = litert_torch.convert(wrapped, (nhwc,))
        except EdgesegError:
            raise
        except Exception as exc:
            reraise_interrupt(exc)
            raise EdgesegError(
                f"TFLite conversion failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            ) from None
        fp32_path = path if precision in ("fp32", "int8") else path.with_name(path.stem + ".fp32.tflite")
        if edge is not None:  # the searched int8 artifact is already in place
            edge.export(str(fp32_path))
    info = {"exporter": "litert-torch", "layout": "NHWC"}
    if precision == "fp16":
        from ai_edge_quantizer import quantizer

        qt = quantizer.Quantizer(str(fp32_path))
        qt.load_quantization_recipe(_FP16_RECIPE)
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            result = qt.quantize()
        path.write_bytes(result.quantized_model)
        fp32_path.unlink()
        info["fp16"] = "ai-edge-quantizer float_casting: conv/FC weights fp16, explicit dequantize"
    elif precision == "int8":
        info["int8"] = "PT2E static: int8 conv/add/mul/cat, per-channel symmetric weights; matmul/div/sum float"
        info["io"] = "int8 input and output with scale/zero point (runtimes quantize and dequantize)"
    elif precision != "fp32":
        raise EdgesegError(f"TFLite {precision} is not produced by this exporter")
    return info
