"""PyTorch -> ExecuTorch program (.pte): ``torch.export`` -> ``to_edge_transform_and_lower`` with one delegate's
partitioner -> ``to_executorch``.

Delegates: XNNPACK (fp32 and int8, Arm and x86 CPUs; runs here), Core ML (fp16 mlprogram inside the .pte; runs on
Apple platforms) and Vulkan (fp32, Android GPUs; runs where a Vulkan device and a runtime built with it exist).
int8 is PT2E static quantization with ExecuTorch's ``XNNPACKQuantizer`` (per-channel symmetric int8 weights,
per-tensor int8 activations on conv / linear / add / mul / cat; matmul, softmax, div and sum stay float, as the
attention-aware policy asks), the same per-op float switches and mixed-precision search as TFLite's int8.

What each delegate took is counted on the lowered edge program (``delegation``): the .pte keeps the delegates'
payloads but not the edge nodes inside them, so node counts are recorded at export time.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from edgeseg.errors import EdgesegError

DELEGATES = {"xnnpack": "XnnpackBackend", "coreml": "CoreMLBackend", "vulkan": "VulkanBackend"}


def partitioner(delegate: str):
    if delegate == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    if delegate == "coreml":
        import coremltools as ct
        from executorch.backends.apple.coreml.compiler import CoreMLBackend
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        specs = CoreMLBackend.generate_compile_specs(
            compute_precision=ct.precision.FLOAT16, minimum_deployment_target=ct.target.iOS17
        )
        return CoreMLPartitioner(compile_specs=specs)
    if delegate == "vulkan":
        from executorch.backends.vulkan.partitioner.vulkan_partitioner import VulkanPartitioner

        return VulkanPartitioner()
    raise EdgesegError(f"unknown ExecuTorch delegate {delegate!r}: use {', '.join(DELEGATES)}")


def delegation(edge_graph) -> dict:
    """Delegated and non-delegated nodes of a lowered edge program's graph module (ExecuTorch's
    ``get_delegation_info``): partitions, node counts and the op types left to ExecuTorch's portable kernels.
    Shape bookkeeping (``getitem`` of a delegate's outputs) is not a node of the model and is not counted."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge_graph)
    left: dict[str, int] = {}
    delegated = 0
    for op, row in info.delegation_by_operator.items():
        if op == "getitem":
            continue
        delegated += row.delegated
        if row.non_delegated:
            left[_short_op(op)] = row.non_delegated
    return {
        "partitions": info.num_delegated_subgraphs,
        "nodes_total": delegated + sum(left.values()),
        "nodes_delegated": delegated,
        "non_delegated_ops": dict(sorted(left.items())),
    }


def _short_op(op: str) -> str:
    """``aten_expand_copy_default`` -> ``aten.expand_copy``: edge node names are op names with underscores."""
    for prefix in ("aten_", "dim_order_ops_", "quantized_decomposed_"):
        if op.startswith(prefix):
            rest = op[len(prefix) :]
            for overload in ("_default", "_Tensor", "_Scalar", "_int", "_self", "_dim", "_tensor"):
                rest = rest.removesuffix(overload)
            return f"{prefix[:-1]}.{rest}"
    return op


@contextlib.contextmanager
def _quiet():
    """ExecuTorch's partitioners and coremltools log every op they take; export keeps the caller's streams clean."""
    sink = io.StringIO()
    levels = {n: logging.getLogger(n).level for n in ("", "coremltools", "executorch", "torch")}
    for n in levels:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield sink
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def channels_last_input(example: torch.Tensor, delegate: str) -> bool:
    """Whether the program for ``delegate`` takes ``example`` in channels-last (NHWC) dim order: XNNPACK runs
    convolutions in NHWC, and an NCHW input costs the program a transpose before its first convolution (B0 int8 at
    384x480: an int8 ``Transpose (ND, X8)`` of the 3-channel image, about 4 % of the program's time,
    docs/executorch.md). An image (4-D, more than one channel; with one channel both orders are the same bytes) is
    traced channels-last instead, and XNNPACK's channels-last pass then reads it without a transpose. Core ML and
    Vulkan keep NCHW."""
    return delegate == "xnnpack" and example.dim() == 4 and example.shape[1] > 1


def lower(module: nn.Module, example: torch.Tensor, delegate: str):
    """(ExecuTorch program bytes, delegation summary) of ``module`` lowered to ``delegate``. ExecuTorch's quantized
    kernels are registered first: a quantize / dequantize the delegate does not take then runs on them (lint and
    residency name it) instead of failing the lowering. Before partitioning, ``passes.delegate_passes`` folds
    constants and rewrites constant broadcasts (every delegate) and, for XNNPACK, ``passes.decompose_layer_norm``
    writes LayerNorm with ops it takes; the summary's ``graph_passes`` counts what they changed. The input's dim
    order is ``channels_last_input``'s choice (recorded in the program; ``runtime.ExecuTorchModel`` reads it)."""
    from edgeseg.backends.executorch.runtime import import_executorch

    import_executorch()
    import executorch.kernels.quantized  # noqa: F401  (registers quantized_decomposed's out variants)
    from executorch.exir import to_edge_transform_and_lower
    from executorch.exir.pass_manager import ExportedProgramPassManager

    from edgeseg.backends.executorch.passes import decompose_layer_norm, delegate_passes

    record: dict[str, int] = {}
    if channels_last_input(example, delegate):
        example = example.contiguous(memory_format=torch.channels_last)
    with _quiet(), torch.no_grad():
        try:
            program = torch.export.export(module, (example,))
            if delegate == "xnnpack":
                program, decomposed = decompose_layer_norm(program)
                if decomposed:
                    record["decompose_layer_norm"] = decomposed
            edge = to_edge_transform_and_lower(
                program,
                transform_passes=ExportedProgramPassManager([delegate_passes(record)]),
                partitioner=[partitioner(delegate)],
            )
            summary = delegation(edge.exported_program().graph_module)
            summary["graph_passes"] = dict(sorted(record.items()))
            buffer = edge.to_executorch().buffer
        except EdgesegError:
            raise
        except Exception as exc:
            why = (str(exc).strip().splitlines() or [""])[0][:200]
            raise EdgesegError(f"ExecuTorch lowering to {delegate} failed: {type(exc).__name__}: {why}") from None
    return buffer, summary


def xnnpack_quantizer():
    """ExecuTorch's XNNPACK quantizer: per-channel symmetric int8 weights, per-tensor int8 activations."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def fold_weight_quantize(graph_module):
    """Fold the weights' ``quantize_per_channel`` into int8 constants (what ``convert_pt2e(fold_quantize=True)``
    does). The float switches need the unfolded graph; XNNPACK's partitioner takes a conv only with constant int8
    weights (unfolded, the convs and their weight quantize/dequantize fall to the portable kernels)."""
    from torchao.quantization.pt2e.constant_fold import constant_fold
    from torchao.quantization.pt2e.quantize_pt2e import _quant_node_constraint

    constant_fold(graph_module, _quant_node_constraint)
    graph_module.recompile()
    return graph_module


def int8_ops(graph_module) -> dict[str, int]:
    """Op types of a converted PT2E graph that read an int8 tensor (a ``dequantize``), e.g. ``{"conv2d": 21}``:
    what the program runs in int8 (the manifest's ``quantization.int8_nodes``, as every backend reports it)."""
    from edgeseg.quantize.pt2e import _NOT_LAYERS

    counts: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
        if node.op != "call_function" or "quantize" in name or name in _NOT_LAYERS:  # shape bookkeeping, asserts
            continue
        if any(getattr(a, "op", None) == "call_function" and "dequantize" in getattr(a.target, "__name__", "")
               for a in node.args):  # fmt: skip
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _io_layout(path: Path) -> dict:
    """The manifest's record of the program's input and output dim orders, read back from the written .pte (shapes
    stay NCHW, as PyTorch names them; a channels-last 4-D tensor's bytes are NHWC)."""
    from edgeseg.backends.executorch.runtime import CHANNELS_LAST, input_dim_orders

    data = path.read_bytes()

    def name(order) -> str:
        if order == CHANNELS_LAST:
            return "NHWC (channels-last dim order 0,2,3,1)"
        return "contiguous" if order == tuple(range(len(order or ()))) else str(order)

    return {
        "input_dim_order": name(input_dim_orders(data)[0]),
        "output_dim_order": name(input_dim_orders(data, outputs=True)[0]),
        "dim_order_note": "ExecuTorch reads and writes a tensor's bytes in the program's dim order without checking "
        "the caller's strides: give a channels-last input as x.contiguous(memory_format=torch.channels_last) "
        "(or HWC-interleaved pixels); edgeseg's runtime does this from the program's record",
    }


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.replace(path)


def export_executorch(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    delegate: str,
    precision: str,
    calib_inputs: list[torch.Tensor] | None = None,
    choose_float: Callable | None = None,
) -> dict:
    """Write the .pte for ``delegate`` at ``precision`` to ``path``; returns the manifest facts (with the delegation
    summary). int8 (XNNPACK only) needs ``calib_inputs`` (NCHW, preprocessed like the deployed input).
    ``choose_float(switches, convert)`` is the mixed-precision search: given the int8 graph's per-op float switches
    (``Pt2eSwitches``) and ``convert(ops kept float) -> .pte path`` for its probes, it returns the ops to keep
    float; the program lowered for them is the one written."""
    module.eval()
    info: dict = {"exporter": "executorch (torch.export -> to_edge_transform_and_lower)", "delegate": delegate}
    if precision != "int8":
        buffer, summary = lower(module, example, delegate)
        write_atomic(path, buffer)
        return {**info, **_io_layout(path), "delegation": summary}
    if delegate != "xnnpack":
        raise EdgesegError(f"ExecuTorch int8 is produced for the XNNPACK delegate, not {delegate}")
    if not calib_inputs:
        raise EdgesegError("executorch-int8 needs calibration inputs (pass --calib-data)")
    from edgeseg.quantize.pt2e import Pt2eSwitches, pt2e_int8

    with _quiet(), torch.no_grad():
        graph, _ = pt2e_int8(module, example, calib_inputs, False, quantizer=xnnpack_quantizer())
    summaries: dict[frozenset, tuple[Path, dict, list[str], dict[str, int]]] = {}

    def convert_with_float(names: list[str]) -> Path:
        """The int8 program with ``names`` in float, lowered once per set."""
        key = frozenset(names)
        if key not in summaries:
            probe = path.with_name(f"{path.stem}.probe{len(summaries)}{path.suffix}")
            graph_module, producers = graph, []
            if switches is not None:  # producers of a float layer whose int8 output nothing else reads: float too
                closed = switches.with_float_producers(names)
                graph_module, producers = switches.graph_for_export(closed), sorted(closed - key)
            buffer, summary = lower(fold_weight_quantize(graph_module), example, "xnnpack")
            write_atomic(probe, buffer)
            summaries[key] = (probe, summary, producers, int8_ops(graph_module))
        return summaries[key][0]

    switches = Pt2eSwitches(graph, lambda x: x, lambda y: y) if choose_float is not None else None
    chosen = convert_with_float(choose_float(switches, convert_with_float) if choose_float else [])
    summary, producers, int8_counts = next((s, f, n) for p, s, f, n in summaries.values() if p == chosen)
    chosen.replace(path)
    for probe, *_ in summaries.values():
        probe.unlink(missing_ok=True)
    return {
        **info,
        **_io_layout(path),
        "delegation": summary,
        "float_producers": producers,  # made float beside the searched layers (with_float_producers)
        "int8_nodes": int8_counts,
        "int8": "PT2E static (XNNPACKQuantizer): int8 conv/linear/add/mul/cat, per-channel symmetric weights; "
        "matmul/softmax/div/sum float",
        "io": "float input and output (quantize/dequantize inside the program)",
    }
