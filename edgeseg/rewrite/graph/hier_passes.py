"""Graph passes for the hierarchical and convolutional attention families (MViT, CvT, HorNet, BoTNet at real
sizes): einsums as batched matmuls, slice assignments as concatenations, and the rank > 4 broadcasts, expands
and concatenations their reference code builds, lowered to rank <= 4.

Same contract as ``edgeseg.rewrite.graph.passes``: each function takes a shape-propagated ``fx.GraphModule``,
rewrites every match in place and returns a description per match; ``rewrite_graph`` verifies the result and
refuses a pass that is not exact. A match the pass cannot lower is left as it is (the census reports it).
"""

from __future__ import annotations

import torch.fx as fx

from edgeseg.rewrite.graph.core import (
    COPIES,
    VIEWS,
    add_constant,
    aten,
    const_value,
    depends_on_input,
    emit,
    prod,
    rank,
    reshape,
    shape,
)
from edgeseg.rewrite.graph.passes import _permute_low

# ops whose output holds the input's elements in the same row-major order (only the shape changes)
_SAME_ORDER = (
    VIEWS
    | COPIES
    | {
        aten.unsqueeze.default,
        aten.squeeze.dim,
        aten.squeeze.dims,
        aten.squeeze.default,
        aten.alias.default,
    }
)


def _same_order(node: fx.Node) -> bool:
    if node.target in _SAME_ORDER:
        return True
    # a full slice (``x[:, :, 0:]``) is the tensor itself
    return node.target is aten.slice.Tensor and shape(node) == shape(node.args[0])


def _flat_source(node: fx.Node) -> fx.Node:
    """The first node of rank <= 4 holding ``node``'s elements in the same order (following views, unsqueezes,
    copies and full slices back); ``node`` itself when there is none."""
    cur = node
    while rank(cur) > 4 and isinstance(cur, fx.Node) and _same_order(cur):
        cur = cur.args[0]
    return cur if rank(cur) <= 4 else node


def _as_permuted(node: fx.Node):
    """``(src, sizes, perm)`` with ``node == src.reshape(sizes).permute(perm)`` and ``rank(src) <= 4``, or None."""
    n = node
    while n.target in COPIES:
        n = n.args[0]
    r = rank(n)
    perm = list(range(r))
    if n.target is aten.permute.default:
        perm = [p % r for p in n.args[1]]
        n = n.args[0]
    elif n.target is aten.transpose.int:
        a, b = n.args[1] % r, n.args[2] % r
        perm[a], perm[b] = perm[b], perm[a]
        n = n.args[0]
    src = _flat_source(n)
    if rank(src) > 4:
        return None
    return src, list(shape(n)), perm


def _replace_by_flat(graph: fx.Graph, node: fx.Node, flat: fx.Node) -> None:
    """Replace ``node`` by ``flat`` (its elements in order, another shape): a view user becomes one reshape of
    ``flat``; other users get ``flat`` reshaped to ``node``'s shape."""
    for user in list(node.users):
        if user.target in VIEWS:
            with graph.inserting_before(user):
                r = reshape(graph, flat, shape(user))
            user.replace_all_uses_with(r)
            graph.erase_node(user)
    if node.users:
        with graph.inserting_before(node):
            full = reshape(graph, flat, shape(node))
        node.replace_all_uses_with(full)


def _einsum_spec(node: fx.Node):
    eq = node.args[0].replace(" ", "")
    operands = node.args[1]
    if "..." in eq or "->" not in eq or len(operands) != 2:
        return None
    lhs, out = eq.split("->")
    a_idx, b_idx = lhs.split(",")
    if any(len(set(s)) != len(s) for s in (a_idx, b_idx, out)):
        return None  # a diagonal
    if set(a_idx) - set(b_idx) - set(out) or set(b_idx) - set(a_idx) - set(out):
        return None  # an index summed within one operand
    size = {}
    for idx, op in ((a_idx, operands[0]), (b_idx, operands[1])):
        s = shape(op)
        if s is None or len(s) != len(idx):
            return None
        for i, n in zip(idx, s):
            if size.setdefault(i, n) != n:
                return None  # a broadcast size-1 dim
    return a_idx, b_idx, out, size


def einsum_to_bmm(gm: fx.GraphModule) -> list[str]:
    """Pattern: a two-operand ``einsum`` without ellipsis, diagonals or broadcasting, on operands that are
    constants or (permuted) views of rank <= 4 tensors: CvT's ``einsum('bhlk,bhtk->bhlt')`` attention, MViTv2's
    decomposed relative positions ``einsum('byhwc,hkc->byhwk')`` on 5-D queries, BoTNet's relative logits
    ``einsum('bhxyd,rd->bhxyr')`` where the position-wise table of ``einsum-region-as-matmul`` is too large.

    Rewrite: indices split into batch (both operands and the output), contracted (both operands only) and free
    ones; each operand is permuted to ``(batch, free, contracted)`` through rank-4 block swaps (a constant
    operand is permuted once, offline), one ``bmm`` of rank 3, and the result is permuted back to the output's
    order (exact up to fp32 summation order, verified). Wanted by every format: ONNX Einsum is rarely
    accelerated, TFLite and Core ML have none. Constraint: no Einsum, rank <= 4."""
    matches = []
    graph = gm.graph
    memo: dict = {}
    for node in list(graph.nodes):
        if node.target is not aten.einsum.default:
            continue
        spec = _einsum_spec(node)
        if spec is None:
            continue
        a_idx, b_idx, out, size = spec
        batch = [i for i in out if i in a_idx and i in b_idx]
        contr = [i for i in a_idx if i in b_idx and i not in out]
        lfree = [i for i in out if i in a_idx and i not in b_idx]
        rfree = [i for i in out if i in b_idx and i not in a_idx]
        bt, m, k, n = (prod(size[i] for i in g) for g in (batch, lfree, contr, rfree))
        wants = ((a_idx, batch + lfree + contr, (bt, m, k)), (b_idx, batch + contr + rfree, (bt, k, n)))
        sides = []
        for op, (idx, order, dims3) in zip(node.args[1], wants):
            to = [idx.index(i) for i in order]
            if not depends_on_input(op, memo):
                sides.append(("const", const_value(gm, op).permute(to).reshape(dims3), dims3))
                continue
            traced = _as_permuted(op)
            if traced is None:
                break
            src, sizes, perm = traced
            sides.append(("live", (src, sizes, [perm[j] for j in to]), dims3))
        if len(sides) != 2:
            continue
        with graph.inserting_before(node):
            mats = []
            for kind, value, dims3 in sides:
                if kind == "const":
                    mats.append(add_constant(gm, value, node, "einsum_operand"))
                else:
                    src, sizes, perm = value
                    mats.append(reshape(graph, _permute_low(graph, src, sizes, perm), dims3))
            y = emit(graph, aten.bmm.default, *mats)
            order = batch + lfree + rfree
            flat = _permute_low(graph, y, [size[i] for i in order], [order.index(i) for i in out])
        _replace_by_flat(graph, node, flat)
        graph.erase_node(node)
        matches.append(f"einsum {node.args[0]} -> bmm [{bt}, {m}, {k}] x [{bt}, {k}, {n}]")
    return matches


INPLACE = {
    aten.copy_.default: None,
    aten.add_.Tensor: aten.add.Tensor,
    aten.sub_.Tensor: aten.sub.Tensor,
    aten.mul_.Tensor: aten.mul.Tensor,
    aten.div_.Tensor: aten.div.Tensor,
}


def _slice_chain(view: fx.Node):
    """``(base, [(slice node, dim, start, end), ...] outermost first)`` when ``view`` is ``base`` through aliases
    and step-1 slices only, else None."""
    chain = []
    while view.target in (aten.alias.default, aten.slice.Tensor):
        if view.target is aten.slice.Tensor:
            args = list(view.args) + [None] * (5 - len(view.args))
            src, dim, start, end, step = args[:5]
            if (step or 1) != 1:
                return None
            n = shape(src)[dim % rank(src)]
            start = 0 if start is None else min(max(start + n if start < 0 else start, 0), n)
            end = n if end is None else min(max(end + n if end < 0 else end, 0), n)
            chain.append((src, dim % rank(src), start, end))
        view = view.args[0]
    if view.op != "call_function" or view.target in INPLACE:
        return None
    return view, chain[::-1]


def slice_assign_to_cat(gm: fx.GraphModule) -> list[str]:
    """Pattern: an in-place write into slices of a tensor (``aten.copy_`` / ``add_`` / ``sub_`` / ``mul_`` /
    ``div_`` on a chain of step-1 ``slice`` / ``alias`` views): ``attn[:, :, a:, a:] = y`` and ``x[:, :, 1:] += q``,
    MViTv2's relative-position update and its class-token residual pooling.

    Rewrite: the written region's new value (``y``, or ``view op y``) is concatenated with the untouched slices
    of each enclosing view (``cat([v[..., :a], new, v[..., b:]])``, innermost first), and the tensor's later
    readers read that instead (exact: data movement only). Wanted by every format: exporters functionalize the
    write to ``slice_scatter`` / ScatterND, which TFLite GPU, Core ML's ANE and TensorRT's fast paths reject; a
    write over the whole tensor is just its new value. Constraint: no scatter, no in-place op."""
    matches = []
    graph = gm.graph
    memo: dict = {}
    for node in list(graph.nodes):
        if node.target not in INPLACE:
            continue
        found = _slice_chain(node.args[0])
        if found is None:
            continue
        base, chain = found
        if not depends_on_input(base, memo):
            continue  # arithmetic on constants (index tables built in forward): folded by the exporters
        position = {x: i for i, x in enumerate(graph.nodes)}
        with graph.inserting_before(node):
            view, other = node.args[0], node.args[1]
            if INPLACE[node.target] is None:
                value = other
            else:
                value = graph.call_function(INPLACE[node.target], (view, other), dict(node.kwargs))
            if INPLACE[node.target] is None and shape(other) != shape(view):  # copy_ broadcasts its source
                value = emit(graph, aten.expand.default, value, list(shape(view)))
            if value is not other:  # later matches read shapes off the nodes made here
                value.meta["tensor_meta"] = view.meta["tensor_meta"]
            region = value  # what the in-place op returns: the written view
            for src, dim, start, end in reversed(chain):
                pieces = [emit(graph, aten.slice.Tensor, src, dim, 0, start)] if start > 0 else []
                pieces.append(value)
                if end < shape(src)[dim]:
                    pieces.append(emit(graph, aten.slice.Tensor, src, dim, end, shape(src)[dim]))
                if len(pieces) > 1:
                    value = emit(graph, aten.cat.default, pieces, dim)
                    value.meta["tensor_meta"] = src.meta["tensor_meta"]
        later = [u for u in base.users if position.get(u, -1) > position[node]]
        for user in later:
            user.replace_input_with(base, value)
        node.replace_all_uses_with(region)
        graph.erase_node(node)
        what = node.target.__name__.split(".")[0]
        regions = ", ".join(f"dim {d} [{a}:{b}]" for _, d, a, b in chain) or "all"
        matches.append(f"{what} into {regions} of {list(shape(base))} -> {len(chain)} cat level(s)")
    return matches


ELEMENTWISE = {
    aten.add.Tensor,
    aten.sub.Tensor,
    aten.mul.Tensor,
    aten.div.Tensor,
    aten.add.Scalar,
    aten.sub.Scalar,
    aten.mul.Scalar,
    aten.div.Scalar,
}


def _view_ends(node: fx.Node) -> list[fx.Node] | None:
    """The rank <= 4 views that consume ``node`` (through copies), or None if any use is something else."""
    ends = []
    for user in node.users:
        end = user
        while end.target in COPIES and len(end.users) == 1:
            end = next(iter(end.users))
        if end.target not in VIEWS or rank(end) > 4:
            return None
        ends.append(end)
    return ends or None


def broadcast_rank_lower(gm: fx.GraphModule) -> list[str]:
    """Pattern: a connected region of elementwise add/sub/mul/div of rank > 4 and one shape ``S``, whose
    operands are constants or views of rank <= 4 tensors broadcast against ``S``, and whose results are only
    reshaped back to rank <= 4: MViTv2's ``attn.view(B, heads, qh, qw, kh, kw) + rel_h[..., None] +
    rel_w[..., None, :]``.

    Rewrite: unit dims of ``S`` are dropped and adjacent dims merged wherever every operand broadcasts them
    alike (both full, or both 1), so each operand is one reshape of its source; the same ops run at the merged
    rank (exact: the same values, the same broadcasting). Wanted by TFLite (GPU delegate: rank 4), Core ML
    (rank 5), ONNX/TensorRT (fewer 6-D tensors). Constraint: rank <= 4 (a region needing 5 merged dims is left)."""
    matches = []
    graph = gm.graph
    done: set = set()
    memo: dict = {}
    for node in list(graph.nodes):
        if node.target not in ELEMENTWISE or rank(node) <= 4 or node in done:
            continue
        full = shape(node)
        region, stack = [], [node]
        while stack:
            cur = stack.pop()
            if cur in region:
                continue
            region.append(cur)
            near = [*cur.users, *(a for a in cur.all_input_nodes)]
            stack += [x for x in near if x.target in ELEMENTWISE and shape(x) == full and x not in region]
        done.update(region)
        inside = set(region)
        operands = list(dict.fromkeys(a for r in region for a in r.all_input_nodes if a not in inside))
        outputs = {r: _view_ends(r) for r in region if any(u not in inside for u in r.users)}
        if not outputs or any(ends is None for ends in outputs.values()):
            continue
        n = len(full)
        padded = {}
        for op in operands:
            s = (1,) * (n - rank(op)) + tuple(shape(op))
            if any(a not in (1, b) for a, b in zip(s, full)):
                break
            padded[op] = s
        if len(padded) != len(operands):
            continue
        groups: list[list[int]] = []
        last = None
        for i in range(n):
            if full[i] == 1:
                continue
            pattern = tuple(padded[op][i] == 1 for op in operands)
            if pattern == last:
                groups[-1].append(i)
            else:
                groups.append([i])
                last = pattern
        sources = {op: (_flat_source(op) if depends_on_input(op, memo) else None) for op in operands}
        if len(groups) > 4 or any(src is not None and rank(src) > 4 for src in sources.values()):
            continue
        position = {x: i for i, x in enumerate(graph.nodes)}
        order = sorted(region, key=position.__getitem__)
        first = order[0]
        new = {}
        for op in operands:
            dims = [prod(padded[op][i] for i in g) for g in groups] or [1]
            if sources[op] is None:
                new[op] = add_constant(gm, const_value(gm, op).reshape(dims), first, "broadcast")
            else:
                with graph.inserting_before(first):
                    new[op] = reshape(graph, sources[op], dims)
        for r in order:
            with graph.inserting_before(r):
                args, kwargs = fx.node.map_arg((r.args, r.kwargs), new.__getitem__)
                new[r] = graph.call_function(r.target, args, kwargs)
        for r, ends in outputs.items():
            for end in ends:
                with graph.inserting_before(end):
                    out = reshape(graph, new[r], shape(end))
                end.replace_all_uses_with(out)
        matches.append(f"{n}-D region of {len(region)} ops on {list(full)} -> rank {len(groups)}")
    return matches


def expand_rank_lower(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``expand`` to rank > 4 of a view of a rank <= 4 tensor, optionally permuted, then reshaped back to
    rank <= 4: BoTNet / Attention Augmentation's ``logits.unsqueeze(3).expand(-1, -1, -1, h, -1, -1)``
    followed by ``permute(0, 1, 2, 4, 3, 5).reshape(B, heads, h*w, h*w)``.

    Rewrite: the non-broadcast dims are permuted first (rank-4 block swaps of the source), then the broadcast
    dims are inserted as runs: one ``reshape`` with size-1 runs and one ``expand`` of rank <= 4 (exact: data
    movement only). Wanted by TFLite (rank 4), Core ML (rank 5), ONNX/TensorRT (no 6-D Expand/Transpose).
    Constraint: rank <= 4."""
    matches = []
    graph = gm.graph
    for node in list(graph.nodes):
        if node.target is not aten.expand.default or rank(node) <= 4:
            continue
        out_s = shape(node)
        n = len(out_s)
        in_s = (1,) * (n - rank(node.args[0])) + tuple(shape(node.args[0]))
        src = _flat_source(node.args[0])
        if rank(src) > 4 or not depends_on_input(src):
            continue
        after, perm = node, list(range(n))
        users = list(node.users)
        if len(users) == 1 and users[0].target is aten.permute.default:
            after, perm = users[0], [p % n for p in users[0].args[1]]
        ends = _view_ends(after)
        if ends is None:
            continue
        bcast = {i for i in range(n) if in_s[i] == 1 and out_s[i] != 1}
        kept = [i for i in range(n) if i not in bcast]
        low_perm = [kept.index(p) for p in perm if p not in bcast]
        runs: list[tuple[bool, int]] = []  # (broadcast?, size) after the permute
        for p in perm:
            if out_s[p] == 1:
                continue
            is_b = p in bcast
            if runs and runs[-1][0] == is_b:
                runs[-1] = (is_b, runs[-1][1] * out_s[p])
            else:
                runs.append((is_b, out_s[p]))
        if len(runs) > 4:
            continue
        with graph.inserting_before(node):
            y = _permute_low(graph, src, [in_s[i] for i in kept], low_perm)
            y = reshape(graph, y, [1 if b else s for b, s in runs] or [1])
            if any(b for b, _ in runs):
                y = emit(graph, aten.expand.default, y, [s for _, s in runs])
        for end in ends:
            with graph.inserting_before(end):
                out = reshape(graph, y, shape(end))
            end.replace_all_uses_with(out)
        matches.append(f"{n}-D expand of {list(in_s)} to {list(out_s)}, permute {perm} -> rank {len(runs)}")
    return matches


def cat_rank_lower(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``cat`` (or ``stack``) to rank > 4 of views of rank <= 4 tensors, reshaped back to rank <= 4:
    HorNet's channel interleave ``torch.cat([x1.unsqueeze(2), x2.unsqueeze(2)], dim=2).reshape(B, 2*C, H, W)``.

    Rewrite: each input is reshaped to ``(prod(S[:k]), S_i[k], prod(S[k+1:]))`` and concatenated along dim 1
    (exact: the same element order). Wanted by TFLite (rank 4), Core ML (rank 5), ONNX/TensorRT.
    Constraint: rank <= 4."""
    matches = []
    graph = gm.graph
    memo: dict = {}
    for node in list(graph.nodes):
        if node.target not in (aten.cat.default, aten.stack.default) or rank(node) <= 4:
            continue
        full = shape(node)
        k = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % len(full)
        ends = _view_ends(node)
        if ends is None:
            continue
        pieces = []
        for t in node.args[0]:
            src = _flat_source(t) if depends_on_input(t, memo) else None
            if src is not None and rank(src) > 4:
                break
            pieces.append((t, src, 1 if node.target is aten.stack.default else shape(t)[k]))
        if len(pieces) != len(node.args[0]):
            continue
        outer, inner = prod(full[:k]), prod(full[k + 1 :])
        with graph.inserting_before(node):
            parts = []
            for t, src, size in pieces:
                dims = (outer, size, inner)
                if src is None:
                    parts.append(add_constant(gm, const_value(gm, t).reshape(dims), node, "cat"))
                else:
                    parts.append(reshape(graph, src, dims))
            y = emit(graph, aten.cat.default, parts, 1)
        for end in ends:
            with graph.inserting_before(end):
                out = reshape(graph, y, shape(end))
            end.replace_all_uses_with(out)
        matches.append(f"{len(full)}-D {node.target.__name__.split('.')[0]} of {len(pieces)} on dim {k} -> rank 3")
    return matches


def alias_drop(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``aten.alias`` (what ``torch.export`` records for a full slice such as ``q[:, :, 0:]`` or
    ``attn[:, :, 0:, 0:]`` in MViTv2's relative-position code) in a program with no in-place write left on an
    input-dependent tensor.

    Rewrite: the alias is its input (exact: the same tensor; without in-place writes an alias cannot observe a
    difference). Wanted by Core ML (its converter has no ``alias`` op); harmless elsewhere. Constraint: no alias."""
    graph = gm.graph
    memo: dict = {}
    if any(n.target in INPLACE and depends_on_input(n, memo) for n in graph.nodes):
        return []  # an alias may still be written through: slice-assign-as-cat refused something
    matches = []
    for node in list(graph.nodes):
        if node.target is aten.alias.default:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            matches.append(f"alias of {list(shape(node) or ())} -> its input")
    return matches


def matvec_to_row_matmul(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``matmul(A, B)`` / ``bmm(A, B)`` with ``B`` a column (last dim 1, ``A``'s not): a batched
    matrix-vector product, GCNet's attention pooling ``torch.matmul(x.view(N, C, HW).unsqueeze(1),
    softmax(mask).unsqueeze(-1))``.

    Rewrite: the row form ``(B^T @ A^T)`` (``B`` reshaped to a row: the same elements in order, ``A`` transposed),
    reshaped to the column result (exact up to fp32 summation order, verified). Wanted by TFLite: its converter
    fails on a column ``batch_matmul`` followed by a reshape (``'tfl.batch_matmul' op found invalid output
    rank``). Constraint: no matrix-vector ``batch_matmul`` with a column result."""
    matches = []
    graph = gm.graph
    for node in list(graph.nodes):
        if node.target not in (aten.matmul.default, aten.bmm.default) or len(node.args) != 2:
            continue
        a, b = node.args
        sa, sb = shape(a), shape(b)
        if sa is None or sb is None or min(len(sa), len(sb)) < 2 or sb[-1] != 1 or sa[-1] == 1:
            continue
        with graph.inserting_before(node):
            row = reshape(graph, b, (*sb[:-2], 1, sb[-2]))
            at = emit(graph, aten.transpose.int, a, -2, -1)
            y = reshape(graph, emit(graph, node.target, row, at), shape(node))
        node.replace_all_uses_with(y)
        graph.erase_node(node)
        matches.append(f"{node.target.__name__.split('.')[0]} {list(sa)} x {list(sb)} -> row form")
    return matches
