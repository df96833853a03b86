"""Graph passes for local-window attention (NAT, QnA, ELSA and whatever else writes the same ATen patterns).

They run after the passes of ``passes.py``: those fold the shapes they know (window partitions, qkv splits, Swin
masks); these fold what is left in the general case. Every function takes a shape-propagated ``fx.GraphModule``,
rewrites it in place and returns a description of each match; ``rewrite_graph`` verifies the result on random
inputs with borders and undoes a pass that is not exact within its tolerance.
"""

from __future__ import annotations

import types

import torch
import torch.fx as fx

from edgeseg.rewrite.graph.core import (
    COPIES,
    HOSTILE,
    VIEWS,
    add_constant,
    aten,
    const_value,
    depends_on_input,
    op_name,
    prod,
    rank,
    shape,
)
from edgeseg.rewrite.graph.passes import _block_swaps


def _emit(graph: fx.Graph, like: fx.Node | None, out_shape, target, *args, **kwargs) -> fx.Node:
    """A new node with its output shape recorded (the passes read shapes of nodes they made themselves)."""
    node = graph.call_function(target, tuple(args), kwargs or None)
    dtype = like.meta["tensor_meta"].dtype if like is not None and "tensor_meta" in like.meta else torch.float32
    node.meta["tensor_meta"] = types.SimpleNamespace(shape=torch.Size(int(s) for s in out_shape), dtype=dtype)
    return node


def _reshape(graph: fx.Graph, x: fx.Node, dims) -> fx.Node:
    dims = [int(d) for d in dims]
    if shape(x) == tuple(dims):
        return x
    return _emit(graph, x, dims, aten.reshape.default, x, dims)


def _constant(gm: fx.GraphModule, value: torch.Tensor, before: fx.Node, stem: str) -> fx.Node:
    node = add_constant(gm, value, before, stem)
    node.meta["tensor_meta"] = types.SimpleNamespace(shape=value.shape, dtype=value.dtype)
    return node


# --------------------------------------------------------------------------- constant subgraphs
def _is_hostile(node: fx.Node) -> bool:
    name = op_name(node)
    return rank(node) > 4 or any(name.startswith(k) for k in HOSTILE) or name.startswith("repeat_interleave")


def fold_constant_subgraphs(gm: fx.GraphModule) -> list[str]:
    """Pattern: a computation on weights and constants only (no input reaches it) that holds a tensor of rank > 4
    or an export-hostile op: QnA's learned queries fused with the key projection (``einsum('bqhd,Dhd->bDqh')``),
    its ``repeat_interleave``'d summation kernel, ELSA's ghost head (``expand(2, B, C, k, k)`` + 5-D
    ``reshape`` + ``select``), bias tables reshaped through 5-D views.

    Rewrite: evaluate it once at export and store the value as a constant (exact: the same ops on the same
    values). Wanted by every format: no Einsum / rank-5 Expand / Repeat on the accelerator for values that never
    change. Constraint: no constant computation with rank > 4 or hostile ops left in the program."""
    matches = []
    graph = gm.graph
    memo: dict = {}
    frontier = []
    for node in graph.nodes:
        if node.op != "call_function" or depends_on_input(node, memo):
            continue
        if any(u.op == "output" or depends_on_input(u, memo) for u in node.users):
            frontier.append(node)
    for node in frontier:
        region, stack = [], [node]
        while stack:
            n = stack.pop()
            if n.op == "call_function" and n not in region:
                region.append(n)
                stack.extend(n.all_input_nodes)
        bad = sorted({op_name(n) for n in region if _is_hostile(n)})
        if not bad:
            continue
        value = const_value(gm, node)
        if not isinstance(value, torch.Tensor):
            continue
        const = _constant(gm, value, node, "const")
        node.replace_all_uses_with(const)
        matches.append(f"{len(region)} constant ops ({', '.join(bad)}) -> constant {list(value.shape)}")
    return matches


# --------------------------------------------------------------------------- non-zero padding modes
_PAD_MODES = {
    "replication_pad1d": "replicate",
    "replication_pad2d": "replicate",
    "replication_pad3d": "replicate",
    "reflection_pad1d": "reflect",
    "reflection_pad2d": "reflect",
    "reflection_pad3d": "reflect",
    "_pad_circular": "circular",
}
PAD_OPS = {getattr(aten, k).default: v for k, v in _PAD_MODES.items() if hasattr(aten, k)}


def pad_to_slices(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``F.pad(x, pad, mode)`` with mode ``replicate``, ``reflect`` or ``circular``
    (``aten.replication_pad*d`` / ``reflection_pad*d`` / ``_pad_circular`` / ``aten.pad``): NAT's clamped
    border windows (the legacy code replicate-pads the map of valid windows, so a border query reads the window
    of its nearest interior neighbour), reflect-padded convolutions, circular filters.

    Rewrite: per padded dim, a concatenation of static one-wide slices of the border (repeated for replicate,
    mirrored for reflect, wrapped for circular) around ``x`` (exact: data movement only). Wanted by every format:
    exporters lower edge / reflect padding to Gather chains (TFLite, Core ML) or Pad modes that delegates and
    TensorRT's zero-pad layer do not run. Constraint: static slices and concatenation, no Gather."""
    matches = []
    graph = gm.graph
    for node in list(graph.nodes):
        mode = PAD_OPS.get(node.target)
        if node.target is aten.pad.default:
            mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        if mode not in ("replicate", "reflect", "circular"):
            continue
        x, pads = node.args[0], list(node.args[1])
        xs = shape(x)
        if xs is None or any(p < 0 for p in pads) or len(pads) % 2:
            continue
        y, cur = x, list(xs)
        with graph.inserting_before(node):
            for i in range(len(pads) // 2):
                dim, before, after = len(xs) - 1 - i, pads[2 * i], pads[2 * i + 1]
                if before == after == 0:
                    continue
                n = cur[dim]

                def piece(a, b, y=y, dim=dim, cur=tuple(cur)):
                    s = list(cur)
                    s[dim] = b - a
                    return _emit(graph, y, s, aten.slice.Tensor, y, dim, a, b)

                if mode == "replicate":
                    first, last = piece(0, 1), piece(n - 1, n)
                    parts = [first] * before + [y] + [last] * after
                elif mode == "reflect":
                    parts = [piece(j, j + 1) for j in range(before, 0, -1)] + [y]
                    parts += [piece(n - 1 - j, n - j) for j in range(1, after + 1)]
                else:
                    parts = [piece(n - before, n)] if before else []
                    parts += [y] + ([piece(0, after)] if after else [])
                cur[dim] = n + before + after
                y = _emit(graph, y, cur, aten.cat.default, parts, dim)
        node.replace_all_uses_with(y)
        graph.erase_node(node)
        matches.append(f"{mode} pad {pads} of {list(xs)} -> slices + concat")
    return matches


# --------------------------------------------------------------------------- gathers by a constant index
_MAX_RUNS = 512  # slices: a constant index with more runs of consecutive positions is left as a gather


def constant_index_to_slices(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``x[..., idx, ...]`` (``aten.index.Tensor`` with one tensor index) or ``index_select(x, d, idx)``
    where ``x`` depends on the input and ``idx`` is a constant: neighborhood attention written after NATTEN's
    semantics, keys and values gathered by the clamped window indices ``clamp(i - k // 2, 0, H - k) + j``
    along each axis; fixed token selections.

    Rewrite: the index is read once at export and split into runs of consecutive positions; each run is a
    static slice of ``x`` (a repeated run is one slice used again), concatenated along the gathered dim and
    reshaped to the index's shape (exact: data movement only). Wanted by every format: a Gather of activations
    runs off the TFLite GPU delegate and the ANE, and TensorRT/ONNX gathers cost a copy through an index tensor.
    Constraint: no data-dependent Gather; refused (left as is) above 512 runs."""
    matches = []
    graph = gm.graph
    memo: dict = {}
    for node in list(graph.nodes):
        if node.target is aten.index.Tensor:
            x, indices = node.args[:2]
            live = [i for i, t in enumerate(indices) if t is not None]
            if len(live) != 1:
                continue
            d, index_node = live[0], indices[live[0]]
        elif node.target is aten.index_select.default:
            x, d, index_node = node.args[:3]
        else:
            continue
        xs = shape(x)
        if xs is None or not depends_on_input(x, memo) or depends_on_input(index_node, memo):
            continue
        d %= len(xs)
        index = const_value(gm, index_node)
        if index.dtype == torch.bool:
            continue  # a mask: its shape depends on its values
        flat = [int(i) % xs[d] for i in index.reshape(-1).tolist()]
        runs: list[list[int]] = []
        for i in flat:
            if runs and i == runs[-1][0] + runs[-1][1]:
                runs[-1][1] += 1
            else:
                runs.append([i, 1])
        if not runs or len(runs) > _MAX_RUNS:
            continue
        pieces: dict = {}
        with graph.inserting_before(node):
            for start, length in runs:
                if (start, length) not in pieces:
                    s = list(xs)
                    s[d] = length
                    pieces[start, length] = _emit(graph, x, s, aten.slice.Tensor, x, d, start, start + length)
            parts = [pieces[start, length] for start, length in runs]
            joined = list(xs)
            joined[d] = len(flat)
            y = parts[0] if len(parts) == 1 else _emit(graph, x, joined, aten.cat.default, parts, d)
            y = _reshape(graph, y, shape(node))
        node.replace_all_uses_with(y)
        graph.erase_node(node)
        matches.append(f"gather of {len(flat)} along dim {d} of {list(xs)} -> {len(pieces)} slices + concat")
    return matches


# --------------------------------------------------------------------------- rank lowering of what is left
_MOVES = {aten.permute.default, aten.transpose.int, aten.t.default, aten.select.int, aten.expand.default}
_SHAPE_ONLY = VIEWS | {aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default}
_SHAPE_ONLY |= {aten.flatten.using_ints, aten.alias.default, aten.detach.default} | COPIES
_POINTWISE = {
    aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.rsub.Scalar, aten.pow.Tensor_Scalar,
    aten.pow.Tensor_Tensor, aten.maximum.default, aten.minimum.default, aten.where.self, aten.exp.default,
    aten.log.default, aten.sigmoid.default, aten.tanh.default, aten.relu.default, aten.gelu.default,
    aten.silu.default, aten.neg.default, aten.abs.default, aten.sqrt.default, aten.rsqrt.default,
    aten.reciprocal.default, aten.erf.default, aten.clamp.default, aten.hardswish.default,
    aten.hardsigmoid.default, aten.leaky_relu.default, aten.masked_fill.Scalar,
}  # fmt: skip
_REDUCE = {aten.sum.dim_IntList, aten.mean.dim, aten.amax.default, aten.amin.default}
_SOFTMAX = {aten._softmax.default, aten.softmax.int, aten._log_softmax.default, aten.log_softmax.int}


def _nonunit(s) -> tuple[int, ...]:
    return tuple(int(d) for d in s if d != 1)


class _Lowering:
    """Tracks, for tensors of any rank reached from a rank <= 4 tensor by data movement, where their elements
    come from: ``(base, sizes, fixed, order)`` = ``permute(select(reshape(base, sizes), fixed), order)`` with
    unit dims dropped; ``realize`` emits that value at rank <= 4 (selects on 3-D views, rank-4 block swaps) in
    the element order of the tensor it stands for."""

    def __init__(self, gm: fx.GraphModule):
        self.gm, self.graph = gm, gm.graph
        self.states: dict = {}
        self.realized: dict = {}
        self.memo: dict = {}  # depends_on_input

    def state(self, node) -> tuple | None:
        if not isinstance(node, fx.Node) or shape(node) is None:
            return None
        if node in self.states:
            return self.states[node]
        result = None
        s = shape(node)
        if len(s) <= 4:
            nu = _nonunit(s)
            result = (node, nu, (), tuple(range(len(nu))))
        elif node.op == "call_function" and (node.target in _SHAPE_ONLY or node.target in _MOVES):
            inner = self.state(node.args[0])
            if inner is not None:
                result = self._step(node, inner)
        self.states[node] = result
        return result

    def _step(self, node: fx.Node, st: tuple) -> tuple | None:
        base, sizes, fixed, order = st
        src = shape(node.args[0])
        current = tuple(sizes[o] for o in order)
        if node.target in _SHAPE_ONLY or node.target is aten.expand.default:
            if node.target is aten.expand.default and _nonunit(shape(node)) != _nonunit(src):
                return None  # a broadcasting expand repeats elements: not data movement
            if _nonunit(shape(node)) == current:
                return st
            flat = self.realize(st, node)
            nu = _nonunit(shape(node))
            return (flat, nu, (), tuple(range(len(nu))))
        positions = [i for i, d in enumerate(src) if d != 1]
        logical = dict(zip(positions, order))
        if node.target is aten.select.int:
            d = node.args[1] % len(src)
            if src[d] == 1:
                return st
            dim = logical[d]
            return (base, sizes, fixed + ((dim, node.args[2] % sizes[dim]),), tuple(o for o in order if o != dim))
        if node.target is aten.permute.default:
            perm = [p % len(src) for p in node.args[1]]
        elif node.target is aten.t.default:
            perm = list(reversed(range(len(src))))
        else:  # transpose.int
            perm = list(range(len(src)))
            i, j = node.args[1] % len(src), node.args[2] % len(src)
            perm[i], perm[j] = perm[j], perm[i]
        return (base, sizes, fixed, tuple(logical[p] for p in perm if src[p] != 1))

    def realize(self, st: tuple, before: fx.Node) -> fx.Node:
        """The elements of state ``st`` in order, as a tensor of rank <= 4 (emitted before ``before``)."""
        key = st[1:] + (st[0],)
        if key in self.realized:
            return self.realized[key]
        base, sizes, fixed, order = st
        graph = self.graph
        x, cur = base, list(sizes)
        with graph.inserting_before(before):
            kept = list(range(len(sizes)))
            for dim, index in sorted(fixed, reverse=True):
                d = kept.index(dim)
                x = _reshape(graph, x, (prod(cur[:d]), cur[d], prod(cur[d + 1 :])))
                x = _emit(graph, x, (prod(cur[:d]), prod(cur[d + 1 :])), aten.select.int, x, 1, index)
                cur.pop(d)
                kept.pop(d)
            perm = [kept.index(o) for o in order]
            for dims in _block_swaps(cur, perm):
                x = _reshape(graph, x, dims)
                x = _emit(graph, x, (dims[0], dims[2], dims[1], dims[3]), aten.permute.default, x, [0, 2, 1, 3])
        self.realized[key] = x
        return x

    def low(self, node, before: fx.Node) -> fx.Node | None:
        """``node``'s elements in order at rank <= 4 (a constant is evaluated once), or None."""
        if not isinstance(node, fx.Node):
            return None
        if rank(node) <= 4:
            return node
        if not depends_on_input(node, self.memo):
            return _constant(self.gm, const_value(self.gm, node).contiguous(), before, "lowered")
        st = self.state(node)
        return None if st is None else self.realize(st, before)


def _merged_dims(out, operand_shapes):
    """Adjacent output dims where every operand is either full or broadcast alike merge into one dim."""
    n = len(out)
    padded = [(1,) * (n - len(s)) + tuple(s) for s in operand_shapes]
    groups, patterns = [], []
    for d in range(n):
        if out[d] == 1:
            continue
        pattern = tuple(s[d] != 1 for s in padded)
        if patterns and patterns[-1] == pattern:
            groups[-1].append(d)
        else:
            groups.append([d])
            patterns.append(pattern)
    merged = [prod(out[d] for d in g) for g in groups] or [1]
    per_operand = [
        [prod(out[d] for d in g) if p[i] else 1 for g, p in zip(groups, patterns)] or [1] for i in range(len(padded))
    ]
    return merged, per_operand


def rank_lower(gm: fx.GraphModule) -> list[str]:
    """Pattern: tensors of rank > 4 that any chain of data movement (``reshape`` / ``view`` / ``permute`` /
    ``transpose`` / ``select`` / ``unsqueeze`` / same-shape ``expand``) makes from a rank <= 4 tensor, and the
    elementwise ops, single-dim reductions (``sum`` / ``mean`` / ``amax``) and softmaxes computed on them:
    NAT's 6-D window permute, ``x[0]`` / ``x[1]`` key/value selects and 5-D attention (``q @ k.transpose(-2,
    -1)``, ``+ rpb``, ``softmax``, ``@ v``), QnA's 5-D / 6-D score broadcasts and its sum over the queries.

    Rewrite: each elementwise op on the fewest dims that keep its broadcasting (adjacent dims where every operand
    is full or broadcast alike merge), each reduction or softmax on a ``(before, dim, after)`` view, each value
    read by a consumer of rank <= 4 realised from its rank <= 4 source by selects on 3-D views and rank-4 block
    swaps (exact: the same ops on the same elements), each rank > 4 ``matmul`` as one ``bmm`` on the realised
    operands (exact up to fp32 summation order: BLAS takes a transposed operand by another path; verified).
    Wanted by TFLite (GPU delegate: rank 4), Core ML (rank 5), ONNX / TensorRT (no 5-D / 6-D Transpose).
    Constraint: rank <= 4 wherever the chain starts and ends at rank <= 4."""
    matches = []
    graph = gm.graph
    lowering = _Lowering(gm)
    for node in list(graph.nodes):
        if node.op != "call_function" or shape(node) is None:
            continue
        out = shape(node)
        moves = node.target in _SHAPE_ONLY or node.target in _MOVES
        if moves and len(out) <= 4 and rank(node.args[0]) > 4:
            st = lowering.state(node.args[0])
            st = None if st is None else lowering._step(node, st)
            if st is None:
                continue
            flat = lowering.realize(st, node)
            matches.append(f"{op_name(node)} {list(out)} read from rank {rank(node.args[0])} at rank <= 4")
            with graph.inserting_before(node):
                y = _reshape(graph, flat, out)
            node.replace_all_uses_with(y)
            graph.erase_node(node)
        elif node.target in _POINTWISE and len(out) > 4:
            tensors = [a for a in node.args if isinstance(a, fx.Node)]
            merged, per_operand = _merged_dims(out, [shape(a) for a in tensors])
            if len(merged) > 4:
                continue
            lows = [
                None if depends_on_input(a, lowering.memo) else const_value(gm, a).reshape(s)
                for a, s in zip(tensors, per_operand)
            ]
            lows = [low if low is not None else lowering.low(a, node) for a, low in zip(tensors, lows)]
            if any(low is None for low in lows):
                continue
            with graph.inserting_before(node):
                new = iter(
                    _constant(gm, low, node, "lowered") if isinstance(low, torch.Tensor) else _reshape(graph, low, s)
                    for low, s in zip(lows, per_operand)
                )
                args = [next(new) if isinstance(a, fx.Node) else a for a in node.args]
                y = _emit(graph, node, merged, node.target, *args, **node.kwargs)
                r = _emit(graph, node, out, aten.reshape.default, y, list(out))
            node.replace_all_uses_with(r)
            graph.erase_node(node)
            matches.append(f"{op_name(node)} of {list(out)} -> rank {len(merged)}")
        elif node.target is aten.matmul.default and len(out) > 4:
            (a, b), (sa, sb) = node.args[:2], (shape(node.args[0]), shape(node.args[1]))
            if len(sa) != len(sb) or sa[:-2] != sb[:-2]:
                continue  # broadcast batch dims: left to the census
            lows = [lowering.low(a, node), lowering.low(b, node)]
            if any(low is None for low in lows):
                continue
            nb = prod(sa[:-2])
            with graph.inserting_before(node):
                a3 = _reshape(graph, lows[0], (nb, sa[-2], sa[-1]))
                b3 = _reshape(graph, lows[1], (nb, sb[-2], sb[-1]))
                y = _emit(graph, node, (nb, sa[-2], sb[-1]), aten.bmm.default, a3, b3)
                r = _emit(graph, node, out, aten.reshape.default, y, list(out))
            node.replace_all_uses_with(r)
            graph.erase_node(node)
            matches.append(f"matmul of {list(sa)} x {list(sb)} -> bmm")
        elif (node.target in _REDUCE or node.target in _SOFTMAX) and rank(node.args[0]) > 4:
            xs = shape(node.args[0])
            dims = node.args[1] if node.target in _REDUCE else [node.args[1]]
            if not isinstance(dims, (list, tuple)) or len(dims) != 1:
                continue
            d = dims[0] % len(xs)
            low = lowering.low(node.args[0], node)
            if low is None:
                continue
            view = [prod(xs[:d]), xs[d], prod(xs[d + 1 :])]
            if view[2] == 1:
                view.pop()
            with graph.inserting_before(node):
                x3 = _reshape(graph, low, view)
                reduced = view[:1] + view[2:] if node.target in _REDUCE else view
                rest = [[1], False, *node.args[3:]] if node.target in _REDUCE else [1, *node.args[2:]]
                y = _emit(graph, node, reduced, node.target, x3, *rest, **node.kwargs)
                r = _emit(graph, node, out, aten.reshape.default, y, list(out))
            node.replace_all_uses_with(r)
            graph.erase_node(node)
            matches.append(f"{op_name(node)} over dim {d} of {list(xs)} -> rank {len(view)}")
    return matches
