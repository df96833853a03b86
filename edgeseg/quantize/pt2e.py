"""PT2E static int8 shared by the TFLite and Core ML exporters.

The quantizer is litert-torch's (per-channel symmetric int8 weights, per-tensor symmetric int8 activations). Its
op set quantizes conv / linear / add / mul / cat and leaves matmul, div and sum float, so the linear-attention
core and its normaliser stay float as the policy asks (coremltools 9's own CoreMLQuantizer imports
``torch.ao.quantization.quantizer``, which torch 2.13 no longer has).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn


def pt2e_int8(
    module: nn.Module,
    example: torch.Tensor,
    calib_inputs: list[torch.Tensor],
    fold_quantize: bool,
    to_input: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
):
    """Export ``module`` at ``example``, observe ``calib_inputs`` (NCHW, mapped by ``to_input`` to the module's
    layout) and convert; returns the quantized GraphModule and the quantizer. ``fold_quantize`` stores weights as
    int8 constants (Core ML) instead of float weights with quantize/dequantize pairs (litert-torch's input)."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = prepare_pt2e(torch.export.export(module, (example,)).module(), quantizer)
    with torch.no_grad():
        for x in calib_inputs:
            graph(to_input(x))
    converted = convert_pt2e(graph, fold_quantize=fold_quantize)
    # lets callers treat it as any nn.Module (``.eval()`` for the simulated-parity predictor)
    allow_exported_model_train_eval(converted)
    return converted, quantizer
