"""The graph passes: each rewrites one export-hostile ATen pattern wherever it occurs in a captured program.

Every function takes a shape-propagated ``fx.GraphModule`` (``core.propagate``), rewrites it in place and returns a
description of each match; ``edgeseg.rewrite.graph.rewrite_graph`` verifies the result on random inputs and
undoes a pass whose result is not exact. Docstrings name the pattern, the formats that want the rewrite and the
constraint it satisfies.
"""

from __future__ import annotations

import operator

import torch
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


def _where(node: fx.Node) -> str:
    return f"{node.name} {list(shape(node) or ())}"


def roll_to_slices(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``aten.roll(x, shifts, dims)`` (Swin's cyclic shift of shifted windows, and its reverse).

    Rewrite: per rolled dim, ``cat([x[n-s:], x[:n-s]])`` along it, a pure data movement (exact). Wanted by every
    format: ONNX has no Roll (exporters emit Slice+Concat or a Gather), TFLite and Core ML lower Roll to
    gathers that GPU/ANE delegates reject. Constraint: static slices and concatenation only, no Gather."""
    matches = []
    graph = gm.graph
    for node in list(graph.nodes):
        if node.target is not aten.roll.default:
            continue
        x, shifts, dims = node.args[0], node.args[1], node.args[2] if len(node.args) > 2 else []
        shifts = [shifts] if isinstance(shifts, int) else list(shifts)
        dims = [dims] if isinstance(dims, int) else list(dims)
        xs = shape(x)
        if not dims or len(dims) != len(shifts) or xs is None:
            continue  # a roll of the flattened tensor: left as is (reported by the census)
        with graph.inserting_before(node):
            y = x
            for s, d in zip(shifts, dims):
                n = xs[d]
                s %= n
                if s == 0:
                    continue
                tail = emit(graph, aten.slice.Tensor, y, d, n - s, n)
                head = emit(graph, aten.slice.Tensor, y, d, 0, n - s)
                y = emit(graph, aten.cat.default, [tail, head], d)
        node.replace_all_uses_with(y)
        graph.erase_node(node)
        matches.append(f"roll shifts={shifts} dims={dims} on {list(xs)} ({node.name})")
    return matches


def fold_constant_gathers(gm: fx.GraphModule) -> list[str]:
    """Pattern: a gather whose table and index are both constants of the exported weights (``table[index]``,
    ``index_select``, ``gather``): Swin / MaxViT / LeViT relative-position bias tables indexed by a fixed
    relative-position index, BoTNet/HaloNet relative embeddings looked up by fixed offsets.

    Rewrite: evaluate it once and store the result as a constant (exact: the same values). Wanted by every format:
    the Gather with a constant index is one op fewer and keeps TFLite GPU / ANE delegates from falling back.
    Constraint: no Gather whose inputs are all constants."""
    matches = []
    gathers = {aten.index.Tensor, aten.index_select.default, aten.gather.default, aten.take.default}
    memo_dep: dict = {}
    for node in list(gm.graph.nodes):
        if node.target not in gathers or depends_on_input(node, memo_dep):
            continue
        value = const_value(gm, node)
        const = add_constant(gm, value, node, "gather")
        node.replace_all_uses_with(const)
        gm.graph.erase_node(node)
        matches.append(f"{node.target.__name__} -> constant {list(value.shape)}")
    return matches


def im2col_to_conv(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``F.unfold`` / ``aten.im2col(x, kernel, dilation, padding, stride)`` on a 4-D map: the local windows
    of SASA-style stand-alone self-attention and HaloNet's blocked halos.

    Rewrite: a grouped convolution with one-hot weights (``C*kh*kw`` outputs, ``groups=C``), each output channel
    copying one window position (exact: one product by 1.0, the rest by 0.0), then a reshape to ``(B, C*kh*kw,
    L)``. Wanted by every format: ONNX exports im2col as Pad+Gather or a 6-D Transpose, TFLite has no im2col.
    Constraint: rank <= 4, no Col2Im, no data-dependent Gather."""
    matches = []
    graph = gm.graph
    for node in list(graph.nodes):
        if node.target is not aten.im2col.default or rank(node.args[0]) != 4:
            continue
        x, kernel, dilation, padding, stride = node.args[:5]
        b, c, _, _ = shape(x)
        kh, kw = kernel
        weight = torch.zeros(c * kh * kw, 1, kh, kw, dtype=node.meta["tensor_meta"].dtype)
        for o in range(c * kh * kw):
            a, r = divmod(o % (kh * kw), kw)
            weight[o, 0, a, r] = 1.0
        w = add_constant(gm, weight, node, "im2col")
        with graph.inserting_before(node):
            y = emit(graph, aten.conv2d.default, x, w, None, list(stride), list(padding), list(dilation), c)
            out = reshape(graph, y, shape(node))
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        matches.append(
            f"im2col kernel={list(kernel)} stride={list(stride)} padding={list(padding)} on {list(shape(x))}"
        )
    return matches


def unfold_to_conv(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``x.unfold(2, kh, sh).unfold(3, kw, sw)`` on a 4-D map (timm's HaloAttn, blocked local windows):
    a 6-D ``(B, C, nH, nW, kh, kw)`` tensor.

    Rewrite: a one-hot grouped convolution gathers the windows into ``(B, C*kh*kw, nH, nW)`` (exact), reshaped
    and permuted to the same 6-D value, which ``permute_rank_lower`` then folds into the reshape that follows.
    Wanted by every format (ONNX: Gather chains; TFLite/Core ML: rank-6 tensors). Constraint: no Gather."""
    matches = []
    graph = gm.graph
    for node in list(graph.nodes):
        if node.target is not aten.unfold.default or node.args[1] != 2 or rank(node.args[0]) != 4:
            continue
        users = list(node.users)
        if len(users) != 1 or users[0].target is not aten.unfold.default or users[0].args[1] != 3:
            continue
        second = users[0]
        x, (_, kh, sh), (_, kw, sw) = node.args[0], node.args[1:], second.args[1:]
        b, c, _, _ = shape(x)
        _, _, nh, nw, _, _ = shape(second)
        weight = torch.zeros(c * kh * kw, 1, kh, kw, dtype=x.meta["tensor_meta"].dtype)
        for o in range(c * kh * kw):
            a, r = divmod(o % (kh * kw), kw)
            weight[o, 0, a, r] = 1.0
        w = add_constant(gm, weight, node, "unfold")
        with graph.inserting_before(second):
            y = emit(graph, aten.conv2d.default, x, w, None, [sh, sw], [0, 0], [1, 1], c)
            y6 = reshape(graph, y, (b, c, kh, kw, nh, nw))
            out = emit(graph, aten.permute.default, y6, [0, 1, 4, 5, 2, 3])
        second.replace_all_uses_with(out)
        graph.erase_node(second)
        graph.erase_node(node)
        matches.append(f"unfold x2 window=({kh},{kw}) step=({sh},{sw}) on {list(shape(x))}")
    return matches


def _block_swaps(sizes: list[int], perm: list[int]) -> list[tuple[list[int], list[int]]]:
    """Steps that realise ``permute(perm)`` of a tensor with ``sizes`` as rank-4 reshape+permute(0,2,1,3) block
    swaps: each step moves the longest run of the next wanted dims in front of the dims before them."""
    n = len(perm)
    cur = list(range(n))
    steps = []
    for i in range(n):
        if cur[i] == perm[i]:
            continue
        j = cur.index(perm[i])
        run = 1
        while j + run < n and i + run < n and cur[j + run] == perm[i + run]:
            run += 1
        groups = [cur[:i], cur[i:j], cur[j : j + run], cur[j + run :]]
        steps.append([prod(sizes[d] for d in g) for g in groups])
        cur = groups[0] + groups[2] + groups[1] + groups[3]
    return steps


def _permute_low(graph: fx.Graph, source: fx.Node, sizes, perm) -> fx.Node:
    """``permute(reshape(source, sizes), perm)``'s elements in order, with tensors of rank <= 4 only (flat order
    is what matters: the caller reshapes the result)."""
    y = source
    for dims in _block_swaps(list(sizes), list(perm)):
        y = reshape(graph, y, dims)
        y = emit(graph, aten.permute.default, y, [0, 2, 1, 3])
    return y


def _view_source(node: fx.Node) -> fx.Node | None:
    """The tensor a high-rank view was made from, when it is a view/reshape."""
    return node.args[0] if node.target in VIEWS else None


def permute_rank_lower(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``reshape(x, S) -> permute(p) [-> contiguous] -> reshape(T)`` with ``len(S) > 4`` and
    ``len(T) <= 4``: Swin / MaxViT window partition and reverse (6-D), MaxViT grid partition, HaloNet block
    partition, 5-D head reshapes that are merged back.

    Rewrite: the same element order through at most ``len(S) - 1`` rank-4 block swaps (``reshape`` to
    ``(A, X, Y, B)`` + ``permute(0, 2, 1, 3)``), then ``reshape(T)`` (exact: data movement only). Wanted by
    TFLite (GPU delegate: rank 4), Core ML (rank 5), TensorRT/ONNX (fewer 6-D transposes). Constraint: every
    tensor rank <= 4."""
    matches = []
    graph = gm.graph
    for node in list(graph.nodes):
        if node.target is not aten.permute.default or rank(node) <= 4:
            continue
        src = _view_source(node.args[0])
        if src is None:
            continue
        consumers = []
        for user in node.users:
            end = user
            while end.target in COPIES and len(end.users) == 1:
                end = next(iter(end.users))
            if end.target not in VIEWS or rank(end) > 4:
                consumers = None
                break
            consumers.append(end)
        if not consumers:
            continue
        sizes, perm = shape(node.args[0]), [p % len(shape(node)) for p in node.args[1]]
        with graph.inserting_before(node):
            flat = _permute_low(graph, src, sizes, perm)
        for end in consumers:
            with graph.inserting_before(end):
                out = reshape(graph, flat, shape(end))
            end.replace_all_uses_with(out)
        matches.append(
            f"{len(sizes)}-D permute {perm} of {list(sizes)} -> {len(_block_swaps(sizes, perm))} rank-4 swaps"
        )
    return matches


def select_rank_lower(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``reshape(x, S) -> permute(p) -> select / unbind`` with ``len(S) > 4``: the 5-D ``qkv`` head
    split of ViT/Swin/MaxViT attention (``reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)`` then ``qkv[0]``
    or ``unbind(0)``).

    Rewrite: select the index on a 3-D ``(prod(S[:k]), S[k], prod(S[k+1:]))`` view of ``x`` (k = ``p[dim]``),
    reshape to ``S`` without dim k and permute by the rest of ``p`` (exact). Wanted by TFLite (rank 4), Core ML
    (rank 5), ONNX/TensorRT (no 5-D Transpose). Constraint: rank <= 4 where ``len(S) - 1 <= 4``."""
    matches = []
    graph = gm.graph
    for node in list(graph.nodes):
        if node.target is not aten.permute.default or rank(node) <= 4 or rank(node) > 5:
            continue
        src = _view_source(node.args[0])
        users = list(node.users)
        picks = []  # (node to replace, dim, index)
        for user in users:
            if user.target is aten.select.int:
                picks.append((user, user.args[1] % rank(node), user.args[2]))
            elif user.target is aten.unbind.int and all(u.target is operator.getitem for u in user.users):
                d = (user.args[1] if len(user.args) > 1 else 0) % rank(node)
                picks += [(g, d, g.args[1]) for g in user.users]
            else:
                picks = None
                break
        if src is None or not picks:
            continue
        sizes, perm = list(shape(node.args[0])), [p % rank(node) for p in node.args[1]]
        for pick, d, index in picks:
            k = perm[d]
            rest = [p for j, p in enumerate(perm) if j != d]
            rest = [p - (p > k) for p in rest]
            kept = sizes[:k] + sizes[k + 1 :]
            with graph.inserting_before(pick):
                y = reshape(graph, src, (prod(sizes[:k]), sizes[k], prod(sizes[k + 1 :])))
                y = emit(graph, aten.select.int, y, 1, index % sizes[k])
                y = reshape(graph, y, kept)
                y = emit(graph, aten.permute.default, y, rest)
            pick.replace_all_uses_with(y)
        matches.append(f"{len(sizes)}-D permute {perm} of {sizes} -> {len(picks)} rank-{len(sizes) - 1} selects")
    return matches


_ELEMENTWISE = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor}


def _low_source(node: fx.Node) -> fx.Node:
    """Follow unsqueeze/view/reshape back to the lowest-rank node with the same elements in the same order."""
    while node.target in VIEWS or node.target in (aten.unsqueeze.default, aten.squeeze.dim):
        node = node.args[0]
    return node


def unit_dims_rank_lower(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``reshape(x, S) (op) y -> reshape(T)`` with ``len(S) > 4``, ``S`` holding unit dims, ``op`` an
    elementwise add/sub/mul/div and ``y`` broadcast against it: Swin's shifted-window mask
    (``attn.view(B_ // nW, nW, heads, N, N) + mask.unsqueeze(1).unsqueeze(0)``).

    Rewrite: drop the dims where both sides have size 1 and do the same op at rank <= 4 (exact: same values,
    same broadcasting). Wanted by TFLite (rank 4) and Core ML (rank 5). Constraint: rank <= 4."""
    matches = []
    graph = gm.graph
    for node in list(graph.nodes):
        if node.target not in _ELEMENTWISE or rank(node) <= 4:
            continue
        a, b = node.args[:2]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            continue
        out = shape(node)
        n = len(out)
        sa = (1,) * (n - rank(a)) + shape(a)
        sb = (1,) * (n - rank(b)) + shape(b)
        keep = [i for i in range(n) if not (sa[i] == 1 and sb[i] == 1)]
        ends = list(node.users)
        if len(keep) > 4 or not ends or any(e.target not in VIEWS or rank(e) > 4 for e in ends):
            continue
        with graph.inserting_before(node):
            sides = []
            for side, s in ((a, sa), (b, sb)):
                low = _low_source(side)
                if not depends_on_input(low):
                    low = add_constant(gm, const_value(gm, side).reshape([s[i] for i in keep]), node, "mask")
                    sides.append(low)
                else:
                    sides.append(reshape(graph, low, [s[i] for i in keep]))
            y = emit(graph, node.target, *sides)
        for end in ends:
            with graph.inserting_before(end):
                r = reshape(graph, y, shape(end))
            end.replace_all_uses_with(r)
        matches.append(f"{n}-D {node.target.__name__.split('.')[0]} of {list(out)} -> rank {len(keep)}")
    return matches


_FFT_IN = {aten.fft_rfft2.default, aten.fft_rfftn.default}
_FFT_OUT = {aten.fft_irfft2.default, aten.fft_irfftn.default}


def fft_filter_to_conv(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``irfft2(rfft2(x) * W)`` with ``W`` (and anything else between the two transforms) constant: the
    global filter of GFNet and HorNet's gnconv global branch.

    Rewrite: the filter is linear and shift-invariant on the torus, so it equals a circular depthwise
    convolution whose kernel is its impulse response: circular padding (slices + concat) and a
    ``groups=C`` ``H x W`` convolution (exact up to fp32 rounding of a different summation order, verified).
    Wanted by TFLite, Core ML, TensorRT and ONNX runtimes without a DFT (ONNX DFT is opset 17, rarely
    accelerated). Constraint: no DFT op, rank <= 4."""
    matches = []
    graph = gm.graph
    for start in list(graph.nodes):
        if start.target not in _FFT_IN:
            continue
        x = start.args[0]
        xs = shape(x)
        ends = _reachable(start, _FFT_OUT)
        if xs is None or len(ends) != 1 or len(xs) > 4:
            continue
        end = ends[0]
        body = _between(start, end)
        if body is None or shape(end) != xs:
            continue
        dims = sorted(d % len(xs) for d in (start.args[2] if len(start.args) > 2 else (-2, -1)))
        if len(dims) != 2:
            continue

        def run(t, body=body, start=start, end=end, x=x):
            env = {x: t}
            memo: dict = {}
            for n in [start, *body, end]:
                args, kwargs = fx.node.map_arg(
                    (n.args, n.kwargs), lambda a: env[a] if a in env else const_value(gm, a, memo)
                )
                env[n] = n.target(*args, **kwargs)
            return env[end]

        delta = torch.zeros(xs, dtype=x.meta["tensor_meta"].dtype)
        index = [slice(None)] * len(xs)
        index[dims[0]] = index[dims[1]] = 0
        delta[tuple(index)] = 1.0
        with torch.no_grad():
            response = run(delta)
        others = [d for d in range(len(xs)) if d not in dims]
        order = others + dims
        h, w = xs[dims[0]], xs[dims[1]]
        channels = prod(xs[d] for d in others)
        kernel = response.permute(order).reshape(channels, 1, h, w).flip(-2, -1)
        k = add_constant(gm, kernel, end, "fft_kernel")
        with graph.inserting_before(end):
            t = emit(graph, aten.permute.default, x, order)
            t = reshape(graph, t, (1, channels, h, w))
            if h > 1:
                t = emit(graph, aten.cat.default, [emit(graph, aten.slice.Tensor, t, 2, 1, h), t], 2)
            if w > 1:
                t = emit(graph, aten.cat.default, [emit(graph, aten.slice.Tensor, t, 3, 1, w), t], 3)
            y = emit(graph, aten.conv2d.default, t, k, None, [1, 1], [0, 0], [1, 1], channels)
            y = reshape(graph, y, [xs[d] for d in order])
            inverse = [order.index(d) for d in range(len(xs))]
            y = emit(graph, aten.permute.default, y, inverse)
        end.replace_all_uses_with(y)
        matches.append(
            f"{start.target.__name__.split('.')[0]} filter on {list(xs)} dims={dims} -> {h}x{w} circular depthwise conv"
        )
    return matches


def _reachable(start: fx.Node, targets) -> list[fx.Node]:
    seen, stack, found = set(), [start], []
    while stack:
        n = stack.pop()
        for u in n.users:
            if u in seen:
                continue
            seen.add(u)
            if u.target in targets:
                found.append(u)
            else:
                stack.append(u)
    return found


def _between(start: fx.Node, end: fx.Node) -> list[fx.Node] | None:
    """The nodes on paths start -> end, in graph order, if every other input to them is a constant and none of
    them is used outside the path."""
    order = {n: i for i, n in enumerate(start.graph.nodes)}
    body = []
    for n in start.graph.nodes:
        if order[start] < order[n] < order[end] and _on_path(start, n, end):
            body.append(n)
    inside = {start, *body}
    for n in [*body, end]:
        for a in n.all_input_nodes:
            if a not in inside and depends_on_input(a):
                return None
    for n in [start, *body]:
        if any(u not in inside and u is not end for u in n.users):
            return None
    return body


def _on_path(start: fx.Node, node: fx.Node, end: fx.Node) -> bool:
    def reaches(a, b, seen):
        if a is b:
            return True
        seen.add(a)
        return any(u not in seen and reaches(u, b, seen) for u in a.users)

    return reaches(start, node, set()) and reaches(node, end, set())


_MAX_TABLE = 1 << 22  # elements (16 MB fp32): a larger position-wise table is refused, not built


def _path_nodes(start: fx.Node, end: fx.Node) -> list[fx.Node]:
    """The nodes on paths start -> end (end included, start not), in graph order."""
    order = {n: i for i, n in enumerate(start.graph.nodes)}
    return [n for n in start.graph.nodes if order[start] < order[n] <= order[end] and _on_path(start, n, end)]


def einsum_region_to_matmul(gm: fx.GraphModule) -> list[str]:
    """Pattern: an ``einsum`` with one input-dependent operand ``q`` (reached from a rank <= 4 tensor ``X`` by
    reshapes/permutes) and constant others, followed by a chain of constant-shaped ops back to a rank <= 4 tensor
    ``Y`` with ``X``'s leading shape: BoTNet / Attention Augmentation relative logits (``einsum('bhxyd,rd->bhxyr')``,
    the ``rel_to_abs`` pad/reshape/slice trick, the 6-D ``expand`` over key rows).

    Rewrite: ``Y`` is a position-wise affine map of ``X`` (``Y[..., n, :] = X[..., n, :] @ E[..., n] + c``), whose
    table ``E`` is read off ``d`` probes of the region; it becomes one batched matmul of rank 3 (exact up to fp32
    summation order, verified). Wanted by every format: no Einsum (ONNX Einsum is rarely accelerated, TFLite has
    none), no rank-5/6 tensors. Constraint: rank <= 4, no Einsum; the table is refused above 4M elements."""
    matches = []
    graph = gm.graph
    memo: dict = {}
    for node in list(graph.nodes):
        if node.target is not aten.einsum.default or node not in gm.graph.nodes:
            continue
        live = [a for a in node.args[1] if depends_on_input(a, memo)]
        if len(live) != 1:
            continue
        x = live[0]
        while rank(x) > 4 and (x.target in VIEWS or x.target is aten.permute.default):
            x = x.args[0]
        end, cur = None, node
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if any(a is not cur and depends_on_input(a, memo) for a in nxt.all_input_nodes):
                break
            cur = nxt
            if 0 < rank(cur) <= 4:
                end = cur
        if end is None and rank(node) <= 4:
            end = node
        xs, ys = shape(x), shape(end) if end is not None else None
        if rank(x) > 4 or ys is None or len(xs) < 2 or xs[:-1] != ys[:-1]:
            continue
        body = _path_nodes(x, end)
        if any(a not in body and a is not x and depends_on_input(a, memo) for n in body for a in n.all_input_nodes):
            continue
        d, m = xs[-1], ys[-1]
        if prod(xs) * m > _MAX_TABLE:
            continue

        def run(t, body=body, x=x):
            env, cmemo = {x: t}, {}
            for n in body:
                args, kwargs = fx.node.map_arg(
                    (n.args, n.kwargs), lambda arg: env[arg] if arg in env else const_value(gm, arg, cmemo)
                )
                env[n] = n.target(*args, **kwargs)
            return env[body[-1]]

        dtype = x.meta["tensor_meta"].dtype
        with torch.no_grad():
            bias = run(torch.zeros(xs, dtype=dtype))
            table = torch.stack(
                [run(torch.nn.functional.one_hot(torch.full(xs[:-1], k), d).to(dtype)) - bias for k in range(d)], -2
            )  # (..., n, d, m)
        rows = prod(xs[:-1])
        t = add_constant(gm, table.reshape(rows, d, m), end, "einsum_table")
        with graph.inserting_before(end):
            y = reshape(graph, x, (rows, 1, d))
            y = emit(graph, aten.bmm.default, y, t)
            y = reshape(graph, y, ys)
            if bool(bias.abs().max() > 0):
                y = emit(graph, aten.add.Tensor, y, add_constant(gm, bias, end, "einsum_bias"))
        end.replace_all_uses_with(y)
        matches.append(f"einsum {node.args[0]} on {list(xs)} -> {list(ys)}: table {[rows, d, m]} + bmm")
    return matches
