"""Graph passes for the fp16 / int8 hazards edgeseg's module swaps fix in its own families, found by pattern.

``edgeseg.rewrite.common`` and the family rewrites keep LayerNorm, the softmax attention core and linear-attention
normalisers in fp32 in half-precision graphs, and rewrite GELU and Hardswish for the runtimes that lack them, by
module class. A user's model names its modules as it likes, so these passes match the ATen ops instead: a
``layer_norm`` or its decomposition ``(x - mean) / sqrt(var + eps) * w + b``, a ``softmax`` with the score matmul
before it and the value matmul after it, ``x / x.sum(dim, keepdim=True)``, ``gelu``, ``hardswish``.

The fp32 passes wrap a region of the graph in casts: each tensor entering it is cast to fp32 (``aten.to.dtype``),
each tensor leaving it is cast back to the dtype of the region's input (``aten.type_as``). Both are no-ops in
the fp32 graph the passes are verified on (exact: tolerance 0) and become Cast nodes when the exporter traces the
half-precision model (``onnx-fp16``, ``tensorrt-fp16``): fp16 then never holds the variance, the attention logits
or a token sum. ``fold_layernorms`` also serves INT8: a ``layer_norm`` op is what every INT8 policy keeps float
(ONNX's Conv-only policy, the PT2E quantizers, which annotate mul/add/sub but not ``layer_norm``), where its
decomposition's mul and add would be quantized.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from edgeseg.rewrite.common import GeluErfcRational, HardswishAsClamp, LayerNormMatmulFp32
from edgeseg.rewrite.graph.core import add_constant, aten, const_value, depends_on_input, emit, rank, shape

_counter = [0]


def _dtype(node) -> torch.dtype | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return getattr(meta, "dtype", None)


def _is_float(node) -> bool:
    dtype = _dtype(node)
    return dtype is not None and dtype.is_floating_point


def _fp32_region(gm: fx.GraphModule, region: list[fx.Node]) -> None:
    """Run ``region`` (nodes in graph order) in fp32: every float tensor it reads from outside is cast to fp32
    (once per tensor), every value read outside it is cast back to the dtype of the region's first input-dependent
    input."""
    graph = gm.graph
    inside = set(region)
    outside_inputs = [a for n in region for a in n.all_input_nodes if a not in inside and _is_float(a)]
    like = next((a for a in outside_inputs if depends_on_input(a)), None)
    if like is None:
        return  # constants only: nothing of the input's dtype to follow
    casts: dict[fx.Node, fx.Node] = {}
    for node in region:
        for arg in node.all_input_nodes:
            if arg in inside or not _is_float(arg):
                continue
            if arg not in casts:  # before its first reader in the region (the tensor may be made inside its span)
                with graph.inserting_before(node):
                    casts[arg] = emit(graph, aten.to.dtype, arg, torch.float32)
        node.args, node.kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: casts.get(a, a))
    for node in region:
        outside = [u for u in node.users if u not in inside]
        if not outside or not _is_float(node):
            continue
        with graph.inserting_after(node):
            back = emit(graph, aten.type_as.default, node, like)
        for user in outside:
            user.args, user.kwargs = fx.node.map_arg(
                (user.args, user.kwargs), lambda a, n=node, b=back: b if a is n else a
            )


def _dims(node: fx.Node, arg_index: int = 1) -> list[int] | None:
    dims = node.args[arg_index] if len(node.args) > arg_index else node.kwargs.get("dim")
    if dims is None:
        return None
    dims = [dims] if isinstance(dims, int) else list(dims)
    r = rank(node.args[0])
    return sorted(d % r for d in dims)


def _keepdim(node: fx.Node, arg_index: int = 2) -> bool:
    return bool(node.args[arg_index] if len(node.args) > arg_index else node.kwargs.get("keepdim", False))


def _scalar(node_or_value):
    return node_or_value if isinstance(node_or_value, (int, float)) and not isinstance(node_or_value, bool) else None


def _variance_of(x: fx.Node, centred: list[fx.Node], dims: list[int]) -> fx.Node | None:
    """The biased variance of ``x`` over ``dims`` with keepdim: ``mean((x - m) ** 2)``, ``mean((x - m) * (x - m))``
    (``x - m`` any of ``centred``: an export does not merge repeated subtractions) or ``var(x, dims, correction=0 /
    unbiased=False, keepdim=True)``."""
    for c in centred:
        for sq in c.users:
            squares = (sq.target is aten.pow.Tensor_Scalar and sq.args[1] == 2) or (
                sq.target is aten.mul.Tensor and sq.args[0] is c and sq.args[1] is c
            )
            if not squares:
                continue
            for v in sq.users:
                if v.target is aten.mean.dim and _dims(v) == dims and _keepdim(v):
                    return v
    for v in x.users:
        if v.target is aten.var.correction and _dims(v) == dims and _keepdim(v, 3):
            if v.kwargs.get("correction", v.args[2] if len(v.args) > 2 else 1) == 0:
                return v
        if v.target is aten.var.dim and _dims(v) == dims and _keepdim(v, 3) and v.args[2] is False:
            return v
    return None


def _decomposed_layernorms(gm: fx.GraphModule) -> list[dict]:
    """Every ``(x - mean(x, D)) / sqrt(var(x, D) + eps)`` (or ``* rsqrt(...)``) with keepdim, optionally followed
    by ``* w`` and ``+ b`` with constant ``w`` and ``b``: its input, dims, eps, nodes, output and affine constants."""
    found = []
    for m in list(gm.graph.nodes):
        if m.target is not aten.mean.dim or not _keepdim(m) or not _is_float(m):
            continue
        x, dims = m.args[0], _dims(m)
        centred = [c for c in m.users if c.target is aten.sub.Tensor and c.args[0] is x and c.args[1] is m]
        v = _variance_of(x, centred, dims) if centred else None
        if v is None:
            continue
        for a in v.users:
            eps = _scalar(a.args[1]) if a.target is aten.add.Tensor and a.args[0] is v else None
            if eps is None:
                continue
            for r in a.users:
                if r.target is aten.sqrt.default:
                    ys = [u for u in r.users if u.target is aten.div.Tensor and u.args[0] in centred and u.args[1] is r]
                elif r.target is aten.rsqrt.default:
                    ys = [
                        u
                        for u in r.users
                        if u.target is aten.mul.Tensor and r in u.args[:2] and set(u.args[:2]) & set(centred)
                    ]
                else:
                    continue
                for y in ys:
                    squares = [n for c in centred for n in c.users if v in n.users]
                    nodes = [m, *centred, *squares, v, a, r, y]
                    found.append({"x": x, "dims": dims, "eps": float(eps), "nodes": nodes, "y": y})
    for ln in found:
        ln["weight"] = ln["bias"] = None
        end = ln["y"]
        for kind in ("weight", "bias"):
            op = aten.mul.Tensor if kind == "weight" else aten.add.Tensor
            users = list(end.users)
            if len(users) != 1 or users[0].target is not op:
                break
            user = users[0]
            other = user.args[1] if user.args[0] is end else user.args[0]
            if not isinstance(other, fx.Node) or depends_on_input(other) or shape(user) != shape(end):
                break
            ln[kind], ln["nodes"], end = (user, other), [*ln["nodes"], user], user
    return found


def fold_layernorms(gm: fx.GraphModule) -> list[str]:
    """Pattern: a LayerNorm written out in ATen ops over the trailing dims: ``(x - x.mean(D, keepdim=True)) /
    sqrt(x.var(D, unbiased=False, keepdim=True) + eps)`` (also ``mean((x - m) ** 2)`` variances and ``* rsqrt``),
    then optionally ``* w + b`` with constants ``w``, ``b`` (ConvNeXt / Swin-V2 / user LayerNorms).

    Rewrite: one ``aten.layer_norm(x, shape, w, b, eps)`` (the same function up to fp32 summation order,
    verified). Wanted by every target: ONNX exports one ``LayerNormalization`` (one fused kernel on ONNX Runtime and
    TensorRT), and every INT8 policy keeps it float (variance over channels overflows int8 ranges; the PT2E
    quantizers would quantize the decomposition's mul/add/sub); ``layernorm-fp32`` then keeps it fp32 in
    half-precision graphs. Constraint: no LayerNorm arithmetic in int8. A LayerNorm over other dims (the channels
    of an NCHW map, ConvNeXt's / HorNet's channels-first ``LayerNorm2d``) is moved to the end by a permute, normalised
    by the same op and permuted back (exact data movement: two transposes per LayerNorm in TFLite, where the converter
    does not cancel them, bought for a float LayerNorm in int8 graphs)."""
    matches = []
    graph = gm.graph
    for ln in _decomposed_layernorms(gm):
        x, dims = ln["x"], ln["dims"]
        xs = shape(x)
        if xs is None or any(n not in graph.nodes for n in ln["nodes"]):
            continue
        r = len(xs)
        dims = sorted(d % r for d in dims)
        # the normalised dims moved to the end, in order (identity for a trailing LayerNorm)
        perm = [d for d in range(r) if d not in dims] + dims
        normalized = [int(xs[d]) for d in dims]
        end = ln["nodes"][-1]
        params = []
        for kind in ("weight", "bias"):
            if ln[kind] is None:
                params.append(None)
                continue
            value = const_value(gm, ln[kind][1])
            if value.dim() > r:
                params.append(None)
                continue
            value = value.reshape((1,) * (r - value.dim()) + tuple(value.shape))
            if any(int(value.shape[d]) != 1 for d in range(r) if d not in dims):
                params.append(None)  # it varies over the non-normalised dims
                continue
            value = value.permute(perm).reshape(value.permute(perm).shape[r - len(dims) :])
            params.append(add_constant(gm, value.expand(*normalized).contiguous(), end, f"layernorm_{kind}"))
        if ln["weight"] is not None and params[0] is None or ln["bias"] is not None and params[1] is None:
            end = ln["y"]  # an affine the op cannot hold (per-position weights): kept as the graph had it
            params = [None, None]
        moved = perm != list(range(r))
        with graph.inserting_before(end):
            source = emit(graph, aten.permute.default, x, perm) if moved else x
            y = emit(graph, aten.layer_norm.default, source, normalized, params[0], params[1], ln["eps"])
            if moved:
                y = emit(graph, aten.permute.default, y, [perm.index(d) for d in range(r)])
        end.replace_all_uses_with(y)
        affine = " + affine" if params[0] is not None or params[1] is not None else ""
        where = f" of {list(xs)}" + (f" (dims {dims}, permuted to the end)" if moved else "")
        matches.append(f"layer_norm over {normalized}{where} (eps {ln['eps']:g}{affine}) from {y.name}")
    return matches


def layernorm_fp32(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``aten.layer_norm`` (``nn.LayerNorm``, or one ``layernorm-fold`` made), and a LayerNorm written out
    over a non-trailing dim (ConvNeXt's channels-first ``LayerNorm2d``: ``mean``/``sub``/``pow``/``sqrt``/``div``
    over dim 1).

    Rewrite: the op (or the written-out region) reads fp32 casts of its input, weight and bias, and its output is
    cast back (exact: the casts vanish in fp32). Wanted by half-precision graphs (``onnx-fp16``,
    ``tensorrt-fp16``): the variance of post-attention activations overflows fp16 (TensorRT issue 2564, efficientvit
    issue 142), as ``layernorm-fp32`` does by module class for edgeseg's families. Constraint: no fp16 variance."""
    matches = []
    for node in list(gm.graph.nodes):
        if node.target is aten.layer_norm.default and _is_float(node):
            _fp32_region(gm, [node])
            matches.append(f"layer_norm over {list(node.args[1])} of {list(shape(node.args[0]) or ())} in fp32")
    for ln in _decomposed_layernorms(gm):
        order = {n: i for i, n in enumerate(gm.graph.nodes)}
        _fp32_region(gm, sorted(set(ln["nodes"]), key=order.__getitem__))
        matches.append(f"written-out LayerNorm over dims {ln['dims']} of {list(shape(ln['x']) or ())} in fp32")
    return matches


def layernorm_to_matmul(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``aten.layer_norm`` over the last dim with constant (or no) weight and bias (``nn.LayerNorm``, or one
    ``layernorm-fold`` made), in any transformer block.

    Rewrite: ``edgeseg.rewrite.common.LayerNormMatmulFp32``: mean and variance as matmuls with a constant ``1/C``
    column, then sub / mul / sqrt / div, all in fp32 and cast back (the same function to fp32 rounding, verified).
    Wanted by ``onnx-fp16``, the accelerators' ONNX: ``LayerNormalization`` is in none of the NNAPI and Core ML
    NeuralNetwork EP op tables, so every LayerNorm is a CPU hop between accelerator partitions, as
    ``layernorm-matmul-fp32`` fixes by module class for edgeseg's families. Constraint: no LayerNormalization, no
    fp16 variance."""
    matches = []
    for node in list(gm.graph.nodes):
        if node.target is not aten.layer_norm.default or not _is_float(node):
            continue
        x, normalized = node.args[0], list(node.args[1])
        weight, bias = (list(node.args[2:4]) + [None, None])[:2]
        eps = node.args[4] if len(node.args) > 4 else node.kwargs.get("eps", 1e-5)
        if len(normalized) != 1 or any(isinstance(t, fx.Node) and depends_on_input(t) for t in (weight, bias)):
            continue
        ref = torch.nn.LayerNorm(normalized[0], eps, elementwise_affine=weight is not None, bias=bias is not None)
        with torch.no_grad():
            if weight is not None:
                ref.weight.copy_(const_value(gm, weight))
            if bias is not None:
                ref.bias.copy_(const_value(gm, bias))
        _swap_for_module(gm, node, LayerNormMatmulFp32(ref), "layernorm")
        matches.append(f"layer_norm over {normalized} of {list(shape(x) or ())} -> fp32 matmul means")
    return matches


_SCORE_OPS = {
    aten.add.Tensor,
    aten.sub.Tensor,
    aten.mul.Tensor,
    aten.div.Tensor,
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.permute.default,
    aten.transpose.int,
    aten.clone.default,
    aten.contiguous.default,
    aten.expand.default,
}
_MATMULS = {aten.matmul.default, aten.bmm.default, aten.mm.default, aten.baddbmm.default}
_SOFTMAX = {aten.softmax.int, aten._softmax.default}


def softmax_fp32(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``softmax`` of attention scores: back from it through elementwise ops (scale, relative-position
    bias, masks) and views to the score matmul ``q @ k^T``, forward from it through views to ``attn @ v`` (any
    softmax attention: ViT, Swin, MaxViT, HaloNet, BoTNet, whatever its module is called).

    Rewrite: that region reads fp32 casts of ``q``, ``k``, ``v`` and the biases and its result is cast back (exact:
    the casts vanish in fp32); a softmax without a score matmul before it has its own input and output cast. Wanted
    by half-precision graphs (``onnx-fp16``, ``tensorrt-fp16``): fp16 logits overflow once ``q . k`` exceeds 65504,
    and a fused fp16 softmax's normaliser does too (a known TensorRT fp16 attention failure), as
    ``softmax_attention_fp32`` does by module class. Constraint: no fp16 attention logits or softmax sums."""
    matches = []
    for sm in list(gm.graph.nodes):
        if sm.target not in _SOFTMAX or not _is_float(sm):
            continue
        chain, cur = [sm], sm.args[0]
        while isinstance(cur, fx.Node) and cur.target in _SCORE_OPS and len(cur.users) == 1:
            chain.insert(0, cur)
            live = [a for a in cur.all_input_nodes if depends_on_input(a)]
            if not live:
                break
            cur = live[0]
        scores = cur if isinstance(cur, fx.Node) and cur.target in _MATMULS and len(cur.users) == 1 else None
        if scores is not None:
            chain.insert(0, scores)
        tail, cur = [], sm
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if nxt.target in _MATMULS and nxt.args[0] is cur:
                tail.append(nxt)
                break
            if nxt.target not in _SCORE_OPS or len(nxt.all_input_nodes) != 1:
                break
            tail.append(nxt)
            cur = nxt
        if not tail or tail[-1].target not in _MATMULS:
            tail = []
        region = ([*chain, *tail] if scores is not None else [*chain[chain.index(sm) :], *tail]) or [sm]
        _fp32_region(gm, region)
        what = ("scores matmul -> " if scores is not None else "") + "softmax" + (" -> @ v" if tail else "")
        matches.append(f"{what} over {list(shape(sm) or ())} in fp32 ({sm.name})")
    return matches


_DEN_OPS = {
    aten.add.Tensor,
    aten.clamp.default,
    aten.clamp_min.default,
    aten.view.default,
    aten.reshape.default,
    aten.unsqueeze.default,
    aten.expand.default,
    aten.matmul.default,
    aten.bmm.default,
    aten.transpose.int,
    aten.permute.default,
}
_SUMS = {aten.sum.dim_IntList, aten.sum.default}


def _sum_behind(den: fx.Node, depth: int = 6) -> list[fx.Node] | None:
    """The path from a token ``sum`` to ``den`` through normaliser ops (``+ eps``, ``clamp_min``, views, a matmul
    with queries as in linear attention), or None."""
    path, cur = [], den
    for _ in range(depth):
        if not isinstance(cur, fx.Node):
            return None
        path.insert(0, cur)
        if cur.target in _SUMS and depends_on_input(cur):
            return path
        if cur.target not in _DEN_OPS:
            return None
        nxt = next((a for a in cur.all_input_nodes if depends_on_input(a) and _reaches_sum(a, depth)), None)
        if nxt is None:
            return None
        cur = nxt
    return None


def _reaches_sum(node: fx.Node, depth: int) -> bool:
    if node.target in _SUMS:
        return True
    if depth == 0 or node.target not in _DEN_OPS:
        return False
    return any(_reaches_sum(a, depth - 1) for a in node.all_input_nodes)


def normaliser_fp32(gm: fx.GraphModule) -> list[str]:
    """Pattern: a normaliser ``x / f(x'.sum(dim, keepdim=True))`` (or ``x * reciprocal(...)``), ``f`` made of ``+
    eps``, ``clamp_min``, views and a matmul with the queries: ReLU linear attention (EfficientViT's LiteMLA,
    ``q (k^T v) / (q . sum_m k_m)``), attention-map renormalisations, L1 normalisations.

    Rewrite: the token sum, the ops to the quotient and the quotient read fp32 casts and the result is cast back
    (exact: the casts vanish in fp32). Wanted by half-precision graphs (``onnx-fp16``, ``tensorrt-fp16``): a sum
    over thousands of tokens leaves fp16's range, and with few tokens the denominator can underflow to 0
    (EfficientViT's normaliser, kept fp32 by ``attention-fp32-normaliser`` for edgeseg's family). INT8: every policy
    keeps Div and ReduceSum float. Constraint: no fp16 token sums or normaliser quotients."""
    matches = []
    for node in list(gm.graph.nodes):
        if node.target is aten.div.Tensor and isinstance(node.args[1], fx.Node):
            den, head = node.args[1], [node]
        elif node.target is aten.mul.Tensor and any(
            isinstance(a, fx.Node) and a.target is aten.reciprocal.default for a in node.args[:2]
        ):
            rec = next(a for a in node.args[:2] if isinstance(a, fx.Node) and a.target is aten.reciprocal.default)
            den, head = rec.args[0], [rec, node]
        else:
            continue
        if not _is_float(node) or not depends_on_input(den):
            continue
        path = _sum_behind(den)
        if path is None:
            continue
        order = {n: i for i, n in enumerate(gm.graph.nodes)}
        region = sorted(set(path + head), key=order.__getitem__)
        _fp32_region(gm, region)
        s, op = path[0], node.target.__name__.split(".")[0]
        matches.append(f"{op} by sum over {_dims(s) or 'all'} of {list(shape(s.args[0]) or ())} in fp32")
    return matches


def _swap_for_module(gm: fx.GraphModule, node: fx.Node, module: torch.nn.Module, stem: str) -> fx.Node:
    _counter[0] += 1
    name = f"_edgeseg_{stem}_{_counter[0]}"
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, (node.args[0],))
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def gelu_erfc_rational(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``aten.gelu(x)`` (erf form: ``nn.GELU()``, ``F.gelu``), in any MLP.

    Rewrite: ``edgeseg.rewrite.common.GeluErfcRational``, the same function to 1e-6 from relu, mul, add, sub, div
    and sigmoid, computed in fp32 (verified). Wanted by ``onnx-fp16``, the accelerators' ONNX: the erf GELU exports
    as Erf (or Gelu), which neither ONNX Runtime's NNAPI EP nor its Core ML NeuralNetwork EP takes, so every MLP
    splits the graph, as ``gelu-erfc-rational`` does by module class. Constraint: no Erf / Gelu op."""
    matches = []
    for node in list(gm.graph.nodes):
        if node.target is not aten.gelu.default or node.kwargs.get("approximate", "none") != "none":
            continue
        if len(node.args) > 1 and node.args[1] != "none":
            continue
        xs = shape(node.args[0])
        _swap_for_module(gm, node, GeluErfcRational(), "gelu")
        matches.append(f"gelu (erf) on {list(xs or ())} -> relu/sigmoid rational form")
    return matches


def hardswish_to_clamp(gm: fx.GraphModule) -> list[str]:
    """Pattern: ``aten.hardswish(x)`` (``F.hardswish`` in MobileNetV3 / EfficientViT-style stems; an ``nn.Hardswish``
    module is swapped before capture by the module rewrites for any model, ``hardswish-as-clamp`` / ``-clip``).

    Rewrite: ``edgeseg.rewrite.common.HardswishAsClamp``, ``x * clamp(x + 3, 0, 6) * (1/6)`` with rank-matched
    constants (the same function to fp32 rounding, verified). Wanted by ``tflite-int8`` and ``executorch-int8``
    (XNNPACK has no int8 HARD_SWISH: one delegate partition per activation otherwise) and ``onnx-fp16`` (ONNX
    Runtime's NNAPI and Core ML NeuralNetwork EPs lack HardSwish), as ``hardswish-as-clamp`` / ``hardswish-as-clip``
    do by module class. Constraint: no HardSwish op."""
    matches = []
    for node in list(gm.graph.nodes):
        if node.target is not aten.hardswish.default:
            continue
        xs = shape(node.args[0])
        _swap_for_module(gm, node, HardswishAsClamp(), "hardswish")
        matches.append(f"hardswish on {list(xs or ())} -> add/clamp/mul")
    return matches
