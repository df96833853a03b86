"""PT2E static int8 shared by the TFLite, Core ML and ExecuTorch exporters.

The default quantizer is litert-torch's (per-channel symmetric int8 weights, per-tensor symmetric int8 activations). Its
op set quantizes conv / linear / add / mul / cat and leaves matmul, div and sum float, so the linear-attention
core and its normaliser stay float as the policy asks (coremltools 9's own CoreMLQuantizer imports
``torch.ao.quantization.quantizer``, which torch 2.13 no longer has). ExecuTorch passes its own
``XNNPACKQuantizer`` (the same scheme; its add annotator does not depend on ``source_fn_stack``).
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
    quantizer=None,
):
    """Export ``module`` at ``example``, observe ``calib_inputs`` (NCHW, mapped by ``to_input`` to the module's
    layout) and convert; returns the quantized GraphModule and the quantizer. ``fold_quantize`` stores weights as
    int8 constants (Core ML) instead of float weights with quantize/dequantize pairs (litert-torch's and ExecuTorch's
    input). ``quantizer``: a PT2E quantizer to use instead of litert-torch's (with its add annotation restored)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if quantizer is None:
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

        config = get_symmetric_quantization_config(is_per_channel=True)
        quantizer = _with_tensor_adds(PT2EQuantizer)().set_global(config)
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


_DEQUANTIZE = ("dequantize_per_tensor", "dequantize_per_channel")
_QUANTIZE = ("quantize_per_tensor", "quantize_per_channel")


class _Switch(nn.Module):
    """An op's int8 input, ``dequantize(quantize(x))``, or in float just ``x``; quantizes only when it is used, so
    a probe with most layers in float runs near float speed."""

    def __init__(self, quantize, dequantize, n_quantize_args: int):
        super().__init__()
        self.quantize, self.dequantize, self.n = quantize, dequantize, n_quantize_args
        self.use_float = False

    def forward(self, source: torch.Tensor, *qparams) -> torch.Tensor:
        if self.use_float:
            return source
        return self.dequantize(self.quantize(source, *qparams[: self.n]), *qparams[self.n :])


# ops with int8 inputs that are not layers of their own: shape bookkeeping and export's dtype asserts
_NOT_LAYERS = {"_assert_tensor_metadata", "to", "_to_copy", "reshape", "view", "permute", "transpose", "slice"}


class Pt2eSwitches:
    """Per-op float switches over a converted PT2E graph (``fold_quantize=False``).

    A layer is an op with int8 inputs, i.e. with ``dequantize(quantize(x))`` arguments (conv, add, mul, clamp,
    cat). Switching it to float makes it read each ``x`` instead: its weights and input activations are no longer
    quantized, as in ONNX's ``nodes_to_exclude``. Its output stays quantized where int8 consumers read it. The
    TFLite converter turns such an op into a float op between DEQUANTIZE and QUANTIZE (and keeps float the
    producers whose float output it reads), so ``predict`` here runs the numerics the converter is given, and
    ``graph_for_export`` is that graph without the switches. PyTorch's rounding is not TFLite's integer kernels':
    on 16 images the two mIoUs can differ by 0.3, so budget decisions are measured on converted artifacts."""

    def __init__(self, converted, to_input, from_output):
        import copy

        self.converted = converted
        self.to_input, self.from_output = to_input, from_output
        self.simulated = copy.deepcopy(converted)
        self.layers: list[tuple[str, str]] = []
        self._switches: dict[str, list[_Switch]] = {}
        graph = self.simulated.graph
        for node in list(graph.nodes):
            if node.op != "call_function" or _op_name(node) in _NOT_LAYERS or _is_qdq(node, _DEQUANTIZE + _QUANTIZE):
                continue
            if not any(_is_int8_input(a) for a in node.args):
                continue
            self.layers.append((node.name, _layer_label(node)))
            self._switch_inputs(node)
        # Shape ops (reshape, permute, ...) and the graph's output can read int8 tensors too (quantizers share
        # ranges across shape ops, and quantize outputs that int8 ops produce). They are not layers: each follows
        # its owners, the layers it feeds (through other shape ops) or, feeding only float ops or the output, the
        # layer whose output it reads, and turns float when every owner is float, so "every layer float" leaves no
        # quantize/dequantize pair behind. Owners are found on the converted graph (the simulated one is rewired).
        layer_names = {n for n, _ in self.layers}
        original = {n.name: n for n in converted.graph.nodes}
        self._followers: dict[str, frozenset[str] | None] = {}
        for node in list(graph.nodes):
            shape_op = node.op == "call_function" and _op_name(node) in _NOT_LAYERS
            if not (shape_op or node.op == "output") or not _int8_inputs(node):
                continue
            self._followers[node.name] = _owners(original[node.name], layer_names)
            self._switch_inputs(node)
        _erase_unread_qdq(graph)
        self.simulated.recompile()

    def _switch_inputs(self, node) -> None:
        """Route each int8 input of ``node`` (in the simulated graph) through a switch registered under its name."""
        from torch.fx.node import map_arg

        graph = self.simulated.graph

        def switched(a):
            if not _is_int8_input(a):
                return a
            q = a.args[0]
            switch = _Switch(q.target, a.target, len(q.args) - 1)
            name = f"edgeseg_switch_{sum(map(len, self._switches.values()))}"
            self.simulated.add_submodule(name, switch)
            self._switches.setdefault(node.name, []).append(switch)
            with graph.inserting_before(node):
                return graph.call_module(name, (q.args[0], *q.args[1:], *a.args[1:]))

        node.args = map_arg(node.args, switched)

    def _with_followers(self, names) -> set[str]:
        """``names`` (layers) plus the shape ops whose owners are all among them (see ``__init__``)."""
        chosen = set(names)
        every = chosen >= {n for n, _ in self.layers}
        return chosen | {f for f, owners in self._followers.items() if (every if owners is None else owners <= chosen)}

    def set_float(self, names) -> None:
        chosen = set(names)
        unknown = chosen - {n for n, _ in self.layers}
        if unknown:
            raise KeyError(f"not a layer of this graph: {sorted(unknown)[:3]}")
        chosen = self._with_followers(chosen)
        for name, switches in self._switches.items():
            for s in switches:
                s.use_float = name in chosen

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW in, NCHW logits out, like the reference."""
        with torch.no_grad():
            return self.from_output(self.simulated(self.to_input(x)))

    def with_float_producers(self, names) -> set[str]:
        """``names`` plus every layer whose int8 output only float layers among them read (its output quantize,
        after the layer or after a ReLU, is erased in ``graph_for_export``), repeated until none is added.
        ExecuTorch's XNNPACK partitioner takes an int8 conv only with an int8 output: one left with int8 weights
        and a float output falls to the portable kernels, so it is made float too (TFLite's converter does the
        same on its own)."""
        chosen = set(names)
        layers = {n for n, _ in self.layers}
        original = {n.name: n for n in self.converted.graph.nodes}
        while True:
            graph = self.graph_for_export(chosen).graph
            now = {n.name: n for n in graph.nodes}
            extra = {
                n
                for n in layers - chosen
                if _reaches_quantize(original[n], layers) and not _reaches_quantize(now[n], layers)
            }
            if not extra:
                return chosen
            chosen |= extra

    def graph_for_export(self, names):
        """A copy of the converted graph with ``names`` in float: their quantize/dequantize inputs bypassed and
        removed where nothing else reads them."""
        import copy

        from torch.fx.node import map_arg

        module = copy.deepcopy(self.converted)
        graph = module.graph
        by_name = {n.name: n for n in graph.nodes}
        for name in self._with_followers(names):
            node = by_name[name]
            node.args = map_arg(node.args, lambda a: a.args[0].args[0] if _is_int8_input(a) else a)
        _erase_unread_qdq(graph)
        module.recompile()
        return module


def _op_name(node) -> str:
    return getattr(node.target, "__name__", str(node.target)).split(".")[0]


def _is_qdq(node, kinds: tuple[str, ...]) -> bool:
    return getattr(node, "op", None) == "call_function" and _op_name(node) in kinds


def _is_int8_input(node) -> bool:
    """``dequantize(quantize(x))``: an int8 tensor as the converter sees it."""
    return _is_qdq(node, _DEQUANTIZE) and _is_qdq(node.args[0], _QUANTIZE)


def _reaches_quantize(node, layers: set[str]) -> bool:
    """Whether ``node``'s output is quantized: a quantize reads it directly or through ops that are not layers
    (the ReLU after a conv, reshapes)."""
    todo, seen = list(node.users), set()
    while todo:
        user = todo.pop()
        if user in seen:
            continue
        seen.add(user)
        if _is_qdq(user, _QUANTIZE):
            return True
        if user.op == "call_function" and user.name not in layers and not _is_qdq(user, _DEQUANTIZE):
            todo.extend(user.users)
    return False


def _int8_inputs(node) -> list:
    """The ``dequantize(quantize(x))`` nodes among ``node``'s arguments, nested ones (the output's) included."""
    found = []
    from torch.fx.node import map_arg

    map_arg(node.args, lambda a: found.append(a) if _is_int8_input(a) else None)
    return found


def _owners(node, layers: set[str]) -> frozenset[str] | None:
    """The layers a shape op reading an int8 tensor follows: those it feeds, through other shape ops and
    quantize/dequantize pairs; feeding none, the layer whose output it reads (back through shape ops); None when
    neither exists (it turns float only with every layer)."""
    down, todo, seen = set(), list(node.users), set()
    while todo:
        user = todo.pop()
        if user in seen:
            continue
        seen.add(user)
        if user.name in layers:
            down.add(user.name)
        elif user.op == "call_function" and (_op_name(user) in _NOT_LAYERS or _is_qdq(user, _DEQUANTIZE + _QUANTIZE)):
            todo.extend(user.users)
    if down:
        return frozenset(down)
    source = node
    while True:
        int8 = _int8_inputs(source)
        if not int8:
            return None
        source = int8[0].args[0].args[0]  # dequantize <- quantize <- the tensor quantized
        if source.name in layers:
            return frozenset({source.name})
        if getattr(source, "op", None) != "call_function" or _op_name(source) not in _NOT_LAYERS:
            return None


def _erase_unread_qdq(graph) -> None:
    for node in reversed(list(graph.nodes)):  # a dequantize, then its quantize, once nothing reads them
        if _is_qdq(node, _DEQUANTIZE + _QUANTIZE) and not node.users:
            graph.erase_node(node)


def _layer_label(node) -> str:
    """The module path that made ``node`` (from torch.export's ``nn_module_stack``) and the node's name (op and
    index: a HardSwish has two muls)."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    for prefix in ("wrapped.", "wrapped_model.", "model."):  # litert-torch's NHWC wrapper, then DeployWrapper
        path = path.removeprefix(prefix)
    return f"{path} ({node.name})" if path else node.name
