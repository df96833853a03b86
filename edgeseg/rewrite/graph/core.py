"""Graph utilities the passes share: shapes of an FX graph's nodes, constant evaluation, node emission, ranks and
the hostile-op census of a captured program."""

from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx
from torch.fx.passes.shape_prop import ShapeProp

aten = torch.ops.aten

VIEWS = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}
COPIES = {aten.contiguous.default, aten.clone.default}


def propagate(gm: fx.GraphModule, example: torch.Tensor) -> None:
    """Record every node's output shape (``node.meta['tensor_meta']``) from one run on ``example``."""
    with torch.no_grad():
        ShapeProp(gm).propagate(example)


def shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def rank(node) -> int:
    s = shape(node)
    return -1 if s is None else len(s)


def prod(xs) -> int:
    return math.prod(int(x) for x in xs)


def depends_on_input(node: fx.Node, memo: dict | None = None) -> bool:
    """Whether ``node``'s value depends on a placeholder (else it is a constant of the exported weights)."""
    memo = {} if memo is None else memo
    if node in memo:
        return memo[node]
    if node.op == "placeholder":
        memo[node] = True
        return True
    result = any(depends_on_input(a, memo) for a in node.all_input_nodes)
    memo[node] = result
    return result


def const_value(gm: fx.GraphModule, node: fx.Node, memo: dict | None = None):
    """Evaluate a node that depends on no placeholder (weights, buffers, ops on them)."""
    memo = {} if memo is None else memo
    if node in memo:
        return memo[node]
    if node.op == "get_attr":
        value = gm
        for part in node.target.split("."):
            value = getattr(value, part)
    elif node.op == "call_function":
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: const_value(gm, n, memo))
        with torch.no_grad():
            value = node.target(*args, **kwargs)
    else:
        raise ValueError(f"not a constant: {node.format_node()}")
    memo[node] = value
    return value


_counter = [0]


def add_constant(gm: fx.GraphModule, value: torch.Tensor, before: fx.Node, stem: str = "folded") -> fx.Node:
    """A new buffer on ``gm`` holding ``value`` and the get_attr node that reads it."""
    _counter[0] += 1
    name = f"_edgeseg_{stem}_{_counter[0]}"
    gm.register_buffer(name, value.detach().clone().contiguous())
    with gm.graph.inserting_before(before):
        return gm.graph.get_attr(name)


def emit(graph: fx.Graph, target, *args) -> fx.Node:
    return graph.call_function(target, tuple(args))


def reshape(graph: fx.Graph, x: fx.Node, dims) -> fx.Node:
    return emit(graph, aten.reshape.default, x, [int(d) for d in dims])


def finish(gm: fx.GraphModule) -> None:
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()


def source_line(node: fx.Node) -> str:
    """The user's source line that made ``node`` (the last frame of its stack trace), for reports."""
    trace = node.meta.get("stack_trace") or ""
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
    frames = [ln for ln in lines if ln.startswith("File ")]
    if not frames:
        return ""
    frame = frames[-1]
    code = lines[lines.index(frame) + 1] if lines.index(frame) + 1 < len(lines) else ""
    where = frame.split(",")
    return f"{where[0][5:].strip(chr(34)).rsplit('/', 1)[-1]}:{where[1].strip()[5:]}: {code}".strip()


# Ops that deployment backends reject or run off the accelerator (``backend-facts.md``), by kind.
HOSTILE = {
    "roll": "torch.roll (shifted windows)",
    "unfold": "Tensor.unfold (local windows)",
    "im2col": "F.unfold / im2col (local windows)",
    "col2im": "F.fold / col2im",
    "fft_": "torch.fft (DFT)",
    "_fft_": "torch.fft (DFT)",
    "einsum": "einsum",
    "index.Tensor": "gather with a tensor index",
    "gather": "gather",
    "index_put": "scatter (index_put)",
    "scatter": "scatter",
    "nonzero": "data-dependent shape (nonzero)",
    "masked_select": "data-dependent shape (masked_select)",
    "unique": "data-dependent shape (unique)",
    "_local_scalar_dense": "data-dependent value (.item())",
}
DATA_DEPENDENT = ("nonzero", "masked_select", "unique", "_local_scalar_dense")


def op_name(node: fx.Node) -> str:
    target = node.target
    if target is operator.getitem:
        return "getitem"
    name = getattr(target, "__name__", str(target))
    return name if not hasattr(target, "_schema") else str(target).replace("aten.", "")


def census(gm: fx.GraphModule) -> dict:
    """Max tensor rank, the nodes of rank > 4 and the hostile ops of a propagated graph."""
    hostile: dict[str, int] = {}
    high: list[str] = []
    max_rank = 0
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        r = rank(node)
        max_rank = max(max_rank, r)
        name = op_name(node)
        if r > 4:
            high.append(f"{name} {list(shape(node))}")
        for key in HOSTILE:
            if name.startswith(key) or name.split(".")[0] == key.split(".")[0] and key in name:
                if key == "index.Tensor" and not depends_on_input(node):
                    continue
                hostile[name] = hostile.get(name, 0) + 1
                break
    return {"max_rank": max_rank, "rank_over_4": high, "hostile_ops": hostile}
