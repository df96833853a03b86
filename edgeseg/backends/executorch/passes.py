"""Edge-program passes run between ExecuTorch's decomposition and its partitioner (``to_edge_transform_and_lower``'s
``transform_passes``): graph facts a delegate's partitioner needs but ExecuTorch leaves for run time.

``fold_constants`` (pattern: ops whose every input is a constant: ``aten.full`` / ``ones`` written in a forward,
a quantize of such a constant, a transpose of a weight). ExecuTorch's own ``constant_prop_pass`` is not run by
``to_edge_transform_and_lower`` and skips ``aten.full`` by default, so these ops stay in the program and run on the
portable kernels at every execute, outside the delegate, feeding it their results as runtime inputs:

- constants a rewrite writes with ``torch.full`` and PT2E quantizes (``full -> quantize -> dequantize -> add``):
  ``HardswishAsClamp``'s 3 and 1/6 (an int8 B0 with it had 54 ``full`` on the portable kernels);
- the attention's token sums (``attention-batched-bmm``): a ``bmm`` with a ``full`` ones tensor;
- a linear decomposed to ``addmm`` / ``mm`` reads its weight through ``permute_copy``; XNNPACK takes a GEMM only
  with a static weight, so the permute of the parameter must itself be a constant.

Folded here, each becomes a constant of the program (the quantize of a constant an int8 constant), which the
delegate receives as constant data. Constraint kept: a dequantize is never folded (XNNPACK recognises an int8 weight
or constant as ``dequantize(int8 constant)``), and no folded constant may be larger than both
``MAX_NEW_ELEMENTS`` and its largest input: a broadcast (``expand_copy`` of an interpolation matrix) stays an op
instead of multiplying the program's size. Exact: each op runs once, at export, on the same values.
Wanted by: every ExecuTorch delegate (constants are constants for Core ML and Vulkan too).
"""

from __future__ import annotations

from collections import Counter, OrderedDict

import torch

MAX_NEW_ELEMENTS = 1 << 16  # a folded constant larger than this and than its inputs stays an op (program size)


def _edge_name(node: torch.fx.Node) -> str:
    """``aten.full`` for ``<EdgeOpOverload: aten.full.default>``."""
    name = getattr(node.target, "__name__", str(node.target))
    return name.rsplit(".", 1)[0] if name.count(".") >= 2 else name.split(".")[0]


def _never_folded() -> set:
    """Edge ops the pass leaves in place: the dequantizes (XNNPACK's int8 patterns), qparam choice, conversions."""
    from executorch.exir.operator.util import _QUANT_PRIMITIVES
    from executorch.exir.passes.replace_aten_with_edge_pass import aten_to_edge

    foldable = ("quantized_decomposed.quantize_per_tensor", "quantized_decomposed.quantize_per_channel")
    return {aten_to_edge(op) for op in _QUANT_PRIMITIVES if not str(op).startswith(foldable)}


def _numel(value) -> int:
    return value.numel() if isinstance(value, torch.Tensor) else 0


def fold_constants(program, max_new_elements: int = MAX_NEW_ELEMENTS) -> dict[str, int]:
    """Fold every op of the edge ``program`` (an ExportedProgram, changed in place) whose inputs are all constants
    into a lifted constant, within the module docstring's constraints; returns the folded ops by type
    (``{"aten.full": 54, ...}``)."""
    from executorch.exir.passes import constant_prop_pass as cp
    from torch.export.exported_program import InputKind, InputSpec, TensorArgument

    values = cp.get_propagated_const_tensor_dict(program, _never_folded())
    kept: OrderedDict = OrderedDict()
    dropped: set = set()
    for node, value in values.items():
        if node.op != "placeholder":
            inputs = [values[a] for a in node.all_input_nodes if a in values]
            limit = max([max_new_elements] + [_numel(v) for v in inputs])
            if any(a in dropped for a in node.all_input_nodes) or _numel(value) > limit:
                dropped.add(node)
                continue
        kept[node] = value
    folded = Counter(_edge_name(n) for n in kept if n.op != "placeholder")
    if not folded:
        return {}
    specs = {s.arg.name: s for s in program.graph_signature.input_specs}
    fake_mode = cp.get_fake_mode(program)
    first_input = cp.get_first_user_input(program)
    for node, value in reversed(kept.items()):  # as constant_prop_pass's create_constant_nodes_and_return_specs
        if all(user in kept for user in node.users):
            cp.erase_constant_node(program, node)  # read only by folded ops (or by nothing)
            continue
        if node.op == "placeholder":
            continue
        placeholder, fqn = cp.replace_with_constant_node(node, value, first_input, fake_mode, program)
        specs[placeholder.name] = InputSpec(
            kind=InputKind.CONSTANT_TENSOR, arg=TensorArgument(name=placeholder.name), target=fqn, persistent=True
        )
    program.graph_signature.input_specs = [specs[n.name] for n in program.graph.find_nodes(op="placeholder")]
    cp._update_output_node_and_specs(program, _skip_dim_order=False)  # a folded output is returned as a copy
    program.graph.eliminate_dead_code()
    program.graph_module.recompile()
    return dict(sorted(folded.items()))


def _edge(op: str, overload: str = "default"):
    from executorch.exir.dialects._ops import ops as exir_ops

    return getattr(getattr(exir_ops.edge.aten, op), overload)


def _emit(graph, fake_mode, op: str, args: tuple, before: torch.fx.Node) -> torch.fx.Node:
    """A new edge-op node before ``before`` with its ``val`` meta (the partitioners read shapes and dtypes)."""
    target = _edge(*op.split("."))
    with graph.inserting_before(before):
        node = graph.call_function(target, args)
    fake_args = tuple(a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in args)
    with fake_mode:
        node.meta["val"] = target(*fake_args)
    for key in ("stack_trace", "nn_module_stack", "source_fn_stack", "from_node"):
        if key in before.meta:
            node.meta[key] = before.meta[key]
    return node


def drop_noop_expands(program) -> int:
    """Pattern: ``expand_copy(x, size)`` whose ``size`` is ``x``'s own shape (a 4-D ``matmul`` decomposes into
    ``expand_copy`` + ``bmm``, expanding each operand to the shape it already has). Rewrite: ``x`` (an identity).
    Constraint: XNNPACK's partitioner takes no ``expand_copy``, so each one ran on the portable kernels and split the
    delegate around it. Exact. Wanted by: every ExecuTorch delegate."""
    target, dropped = _edge("expand_copy"), 0
    for node in list(program.graph.nodes):
        if node.op == "call_function" and node.target == target:
            source = node.args[0]
            if tuple(source.meta["val"].shape) == tuple(node.meta["val"].shape):
                node.replace_all_uses_with(source)
                program.graph.erase_node(node)
                dropped += 1
    return dropped


def _batch_constant(node, constants: dict) -> tuple[torch.fx.Node, bool, torch.Size] | None:
    """Where every batch of the 3-D ``node`` is one constant matrix: (the constant placeholder, whether it holds
    the batches itself, the matrix's shape). ``node`` is a constant of (B, M, K) with equal batches, or an
    ``expand_copy`` of a constant (1, M, K) / (M, K), possibly behind views that keep its shape; else None."""
    view = _edge("view_copy")
    while getattr(node, "target", None) == view and node.args[0].meta["val"].shape == node.meta["val"].shape:
        node = node.args[0]
    if node in constants:
        value = constants[node]
        if value.dim() == 3 and bool((value == value[:1]).all()):
            return node, True, value.shape[1:]
        return None
    if getattr(node, "target", None) == _edge("expand_copy") and node.args[0] in constants:
        value = constants[node.args[0]]
        if value.dim() == 2 or (value.dim() == 3 and value.shape[0] == 1):
            return node.args[0], False, value.shape[-2:]
    return None


def constant_bmm_as_mm(program) -> int:
    """Pattern: ``bmm(A, X)`` or ``bmm(X, A)`` where every batch of ``A`` is one constant matrix ``C``: a 2-D
    constant broadcast over a batch by ``torch.matmul`` (``expand_copy`` + ``bmm``: EfficientViT's head
    ``bicubic-as-matmul``, ``(W, w) @ (h, w, C)`` and ``(H, h) @ (1, h, W*C)``), or a constant ones tensor per batch
    (the token sums of ``attention-batched-bmm``).

    Rewrite: one ``mm`` with the constant as its weight, ``X`` viewed as rows: ``bmm(X, C)`` ->
    ``view(mm(view(X, (B*N, K)), C), (B, N, M))``; ``bmm(C, X)`` -> the same on ``X`` transposed
    (``permute_copy``), transposed back. Constraint satisfied: XNNPACK's partitioner takes no ``expand_copy`` and
    takes a GEMM with a constant operand only as ``mm`` / ``linear`` with a static weight (the broadcast stayed on
    the portable kernels, splitting the delegate; the head's 8 ``expand_copy`` in B0). Exact to float summation
    order (one fp32 GEMM per output element either way). Wanted by: every ExecuTorch delegate (a GEMM with a
    weight is the common form)."""
    from executorch.exir.passes import constant_prop_pass as cp

    constants = cp.get_constant_placeholder_dict(program)
    graph, fake_mode, rewritten = program.graph, cp.get_fake_mode(program), 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != _edge("bmm"):
            continue
        a, b = node.args
        if b not in constants and (found := _batch_constant(a, constants)) is not None:
            x, transposed = b, True  # C (M, K) @ X (B, K, N)
        elif a not in constants and (found := _batch_constant(b, constants)) is not None:
            x, transposed = a, False  # X (B, N, K) @ C (K, M)
        else:
            continue
        source, batched, shape = found

        def emit(op, *args, _node=node):
            return _emit(graph, fake_mode, op, args, _node)

        # the weight (K, M) as ops on the constant; fold_constants turns them into one constant
        weight = emit("select_copy.int", source, 0, 0) if batched else emit("view_copy", source, list(shape))
        if transposed:
            weight = emit("permute_copy", weight, [1, 0])
        k, m = weight.meta["val"].shape
        rows = emit("permute_copy", x, [0, 2, 1]) if transposed else x  # (B, N, K)
        batch, n = rows.meta["val"].shape[:2]
        out = emit("view_copy", emit("mm", emit("view_copy", rows, [batch * n, k]), weight), [batch, n, m])
        if transposed:
            out = emit("permute_copy", out, [0, 2, 1])
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        rewritten += 1
    graph.eliminate_dead_code()
    return rewritten


def delegate_passes(record: dict[str, int]):
    """The edge-program pass run before partitioning: ``fold_constants``, ``drop_noop_expands``,
    ``constant_bmm_as_mm`` (whose weights are ops on constants), then ``fold_constants`` again. What each did is
    added to ``record`` (``{"fold:aten.full": 54, "drop_noop_expands": 4, ...}``) for the manifest."""
    from executorch.exir.pass_base import ExportedProgramPassBase, ExportedProgramPassResult

    def count(key: str, n: int) -> None:
        if n:
            record[key] = record.get(key, 0) + n

    class DelegatePasses(ExportedProgramPassBase):
        def call(self, program):
            folded = Counter(fold_constants(program))
            count("drop_noop_expands", drop_noop_expands(program))
            bmms = constant_bmm_as_mm(program)
            count("constant_bmm_as_mm", bmms)
            if bmms:
                folded.update(fold_constants(program))
            for op, n in folded.items():
                count(f"fold:{op}", n)
            program.graph_module.recompile()
            return ExportedProgramPassResult(program, True)

    return DelegatePasses()


def _layer_norm_as_xnnpack_ops(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``native_layer_norm`` from ops XNNPACK takes (see ``decompose_layer_norm``); returns (out, mean, rstd)."""
    dims = len(normalized_shape)
    n = 1
    for d in normalized_shape:
        n *= int(d)
    rows = x.reshape(-1, n)
    mean_col = torch.full((n, 1), 1.0 / n, dtype=x.dtype, device=x.device)
    mean = torch.mm(rows, mean_col)
    centred = rows - mean
    var = torch.mm(centred * centred, mean_col)
    std = torch.sqrt(var + eps)
    out = (centred / std).reshape(x.shape)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    stat_shape = tuple(x.shape[: x.dim() - dims]) + (1,) * dims
    return out, mean.reshape(stat_shape), torch.reciprocal(std).reshape(stat_shape)


def decompose_layer_norm(program):
    """Pattern: ``aten.native_layer_norm`` (every ``nn.LayerNorm`` / ``F.layer_norm``: LVT's 28, SegFormer-B0's 30).

    Rewrite (on the ATen program, before ExecuTorch's own decompositions): over the ``n`` normalised elements, the
    mean and the variance as ``mm`` with a constant ``1/n`` column, then ``sub``, ``mul``, ``add``, ``sqrt``,
    ``div`` and the affine ``mul`` / ``add``. Constraint satisfied: ExecuTorch's XNNPACK partitioner has no
    LayerNorm (nor a mean over the last dim: its ``mean.dim`` is 4-D global pooling only), so every LayerNorm ran on
    the portable kernels between two delegate partitions; every op here is XNNPACK's (the column a static weight
    once ``fold_constants`` has run). Two-pass variance, sqrt and a true division (not XNNPACK's approximate
    ``rsqrt``): equal to ``F.layer_norm`` to fp32 rounding (``tests/test_executorch_rewrites.py``).
    Wanted by: the XNNPACK delegate only (Core ML and Vulkan take LayerNorm natively)."""
    table = {
        torch.ops.aten.native_layer_norm.default: _layer_norm_as_xnnpack_ops,
        torch.ops.aten.layer_norm.default: lambda x, shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True: (
            _layer_norm_as_xnnpack_ops(x, shape, weight, bias, eps)[0]
        ),
    }
    if not any(n.target in table for n in program.graph.nodes):
        return program, 0
    count = sum(1 for n in program.graph.nodes if n.target in table)
    return program.run_decompositions(table), count
