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

    quantizer = _with_tensor_adds(PT2EQuantizer)().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = prepare_pt2e(torch.export.export(module, (example,)).module(), quantizer)
    with torch.no_grad():
        for x in calib_inputs:
            graph(to_input(x))
    converted = convert_pt2e(graph, fold_quantize=fold_quantize)
    # lets callers treat it as any nn.Module (``.eval()`` for the simulated-parity predictor)
    allow_exported_model_train_eval(converted)
    return converted, quantizer


def _with_tensor_adds(base):
    """litert-torch's quantizer with its add annotation working again.

    Its add annotator finds adds through ``source_fn_stack`` metadata, which torch 2.13's ``torch.export`` no
    longer records, so every residual add, every head merge and HardSwish's ``x + 3`` stay float between a
    dequantize and a quantize (B0 int8: 11 float ADDs in the XNNPACK graph). This subclass annotates each
    still-unannotated float tensor-tensor ``aten.add`` like the original annotator would (int8 inputs and output).
    """

    class Quantizer(base):
        def annotate(self, model):
            model = super().annotate(model)
            annotate_float_adds(model, self.global_config)
            return model

    Quantizer.__name__ = Quantizer.__qualname__ = f"{base.__name__}WithAdds"
    return Quantizer


def annotate_float_adds(model, config) -> int:
    """Annotate unannotated float ``aten.add.Tensor`` nodes of two tensors with ``config``'s activation specs;
    returns how many."""
    from litert_torch.quantize.pt2e_quantizer_utils import get_input_act_qspec, get_output_act_qspec
    from torch.fx import Node
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    count = 0
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target is not torch.ops.aten.add.Tensor:
            continue
        if "quantization_annotation" in node.meta:
            continue
        a, b = node.args[0], node.args[1]
        val = node.meta.get("val")
        if not (isinstance(a, Node) and isinstance(b, Node)) or val is None or val.dtype != torch.float32:
            continue
        in_spec = get_input_act_qspec(config)
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={a: in_spec, b: in_spec},
            output_qspec=get_output_act_qspec(config),
            _annotated=True,
        )
        count += 1
    return count
