"""ONNX graph -> kernels: the units a runtime actually launches, with their compute and memory traffic.

Shapes come from ONNX shape inference, so nothing is run (a 1024x2048 graph is parsed in seconds). Nodes are
grouped into kernels by the runtime's fusion rules (each backend's ``fusion``): a Conv or MatMul/Gemm anchor
absorbs a folded BatchNormalization, a bias Add, the activations the runtime fuses and, where the runtime does
it, a residual Add; TensorRT also fuses chains of pointwise ops into one kernel. Q/DQ pairs of a QDQ graph are
absorbed into the kernel they feed (it then runs in int8). Shape-only ops (Reshape, Squeeze, ...) are views: no kernel.

Per kernel: FLOPs (a multiply-accumulate counts 2), bytes moved (weights + activations entering and leaving the
kernel, each at the kernel's element size) and the op class the device's efficiency factor is looked up by.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

OP_CLASSES = ("conv", "dwconv", "matmul", "elementwise", "reduce", "resize", "data")
ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}

ANCHORS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"}
VIEWS = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Shape", "Constant", "Dropout", "Size"}
ELEMENTWISE = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Neg",
    "Abs",
    "Exp",
    "Log",
    "Erf",
    "Tanh",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Clip",
    "Gelu",
    "Max",
    "Min",
    "Where",
    "Equal",
    "Less",
    "Greater",
    "Not",
    "And",
    "Cast",
    "Floor",
    "Ceil",
    "Round",
    "QuantizeLinear",
    "DequantizeLinear",
    "Mish",
    "Softplus",
    "Elu",
    "Selu",
}
REDUCE = {
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL2",
    "Softmax",
    "LogSoftmax",
    "LayerNormalization",
    "BatchNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "ArgMax",
    "ArgMin",
    "GlobalAveragePool",
    "AveragePool",
    "MaxPool",
    "TopK",
    "CumSum",
}
RESIZE = {"Resize", "Upsample"}
POINTWISE = ELEMENTWISE - {"QuantizeLinear", "DequantizeLinear"}
# FLOPs per output element of elementwise/reduce ops that cost more than one operation
_FLOPS_PER_ELEMENT = {
    "HardSwish": 4,
    "HardSigmoid": 3,
    "Gelu": 8,
    "Erf": 8,
    "Sigmoid": 4,
    "Tanh": 4,
    "Exp": 4,
    "Softmax": 5,
    "LogSoftmax": 6,
    "LayerNormalization": 8,
    "BatchNormalization": 2,
    "InstanceNormalization": 8,
    "GroupNormalization": 8,
    "QuantizeLinear": 3,
    "DequantizeLinear": 2,
    "Clip": 2,
    "Cast": 1,
}


@dataclass(frozen=True)
class FusionRules:
    """What one runtime fuses into a Conv/MatMul kernel, and whether it fuses pointwise chains."""

    name: str
    activations: frozenset[str]  # activation op types folded into the preceding Conv/MatMul
    residual_add: bool  # Conv + Add(other activation) -> one kernel
    pointwise_chains: bool  # connected pointwise ops (and those after an anchor) -> one kernel
    source: str  # where these rules come from
    concat_elided: bool = False  # producers write straight into the concatenation's buffer


# Activations every runtime folds into the preceding Conv/MatMul (each backend declares its ``FusionRules``).
COMMON_ACTIVATIONS = frozenset({"Relu", "Clip"})


def fusion_rules(name: str) -> FusionRules:
    """The fusion rules a registered backend declares under ``name`` (``onnxruntime``, ``tensorrt``, ...)."""
    from edgeseg.backends import BACKENDS

    known = {b.fusion.name: b.fusion for b in BACKENDS.values() if b.fusion is not None}
    if name not in known:
        raise ValueError(f"unknown runtime {name!r} (valid: {', '.join(known)})")
    return known[name]


@dataclass
class Kernel:
    name: str  # the anchor (or first) node's name
    ops: list[str]  # op types fused into it, in order
    op_class: str
    precision: str  # fp32 | fp16 | int8
    flops: float
    weight_elements: int
    activation_elements: int  # entering + leaving the kernel
    int8_weights: bool = False  # weights stored int8 (a QDQ graph) while the kernel may compute in float

    @property
    def bytes(self) -> float:
        el = ELEMENT_BYTES[self.precision]
        w = 1 if self.int8_weights else el
        return float(self.weight_elements * w + self.activation_elements * el)


@dataclass
class GraphCost:
    """Kernels of one graph under one runtime's fusion rules."""

    kernels: list[Kernel]
    runtime: str
    input_shape: list[int]
    nodes: int
    source: str = ""  # the file or model it came from
    notes: list[str] = field(default_factory=list)

    @property
    def flops(self) -> float:
        return float(sum(k.flops for k in self.kernels))

    @property
    def bytes(self) -> float:
        return float(sum(k.bytes for k in self.kernels))

    def by_class(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for k in self.kernels:
            d = out.setdefault(k.op_class, {"kernels": 0, "flops": 0.0, "bytes": 0.0})
            d["kernels"] += 1
            d["flops"] += k.flops
            d["bytes"] += k.bytes
        return out

    def with_precision(self, precision: str, anchors_only: bool = False, rest: str = "fp32") -> GraphCost:
        """The same kernels run at ``precision`` (e.g. a TensorRT fp16 build of an fp32 graph). With
        ``anchors_only`` (int8 from a float graph) Conv/MatMul kernels take ``precision`` and the rest ``rest``."""
        ks = []
        for k in self.kernels:
            p = precision if not anchors_only or k.op_class in ("conv", "dwconv", "matmul") else rest
            ks.append(Kernel(**{**asdict(k), "precision": p}))
        return GraphCost(ks, self.runtime, self.input_shape, self.nodes, self.source, list(self.notes))

    def as_dict(self) -> dict:
        return {
            "runtime": self.runtime,
            "input_shape": self.input_shape,
            "nodes": self.nodes,
            "kernels": len(self.kernels),
            "gflops": self.flops / 1e9,
            "mbytes": self.bytes / 1e6,
            "precisions": dict(Counter(k.precision for k in self.kernels)),
            "by_class": self.by_class(),
        }


def _numel(shape) -> int:
    return int(np.prod(shape)) if shape else 1


class _Shapes:
    def __init__(self, model):
        from onnx import numpy_helper

        g = model.graph
        self.shape: dict[str, list[int]] = {}
        self.dtype: dict[str, int] = {}
        for vi in list(g.value_info) + list(g.input) + list(g.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
                self.shape[vi.name] = dims
            self.dtype[vi.name] = t.elem_type
        self.initializers: dict[str, np.ndarray | None] = {}
        for init in g.initializer:
            self.shape[init.name] = list(init.dims)
            self.dtype[init.name] = init.data_type
            self.initializers[init.name] = None
        self._init_protos = {i.name: i for i in g.initializer}
        self._numpy = numpy_helper
        for node in g.node:
            if node.op_type == "Constant" and node.output:
                for a in node.attribute:
                    if a.name == "value":
                        self.shape[node.output[0]] = list(a.t.dims)
                        self.initializers[node.output[0]] = None
                        self._init_protos[node.output[0]] = a.t

    def known(self, name: str) -> bool:
        s = self.shape.get(name)
        return s is not None and all(d >= 0 for d in s)

    def numel(self, name: str) -> int:
        if not name:
            return 0
        s = self.shape.get(name)
        if s is None or any(d < 0 for d in s):
            raise ValueError(f"tensor {name!r} has no static shape after shape inference")
        return _numel(s)

    def is_const(self, name: str) -> bool:
        return name in self.initializers

    def value(self, name: str) -> np.ndarray:
        return self._numpy.to_array(self._init_protos[name])


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _node_flops(node, s: _Shapes) -> float:
    op = node.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose"):
        w = node.input[3] if op == "QLinearConv" else node.input[1]
        ws = s.shape[w]  # (Cout, Cin/groups, kh, kw)
        macs_per_out = _numel(ws[1:])
        if op == "ConvTranspose":
            return 2.0 * s.numel(node.input[0]) * ws[1] * _numel(ws[2:])
        return 2.0 * s.numel(node.output[0]) * macs_per_out
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul", "Gemm"):
        a = node.input[0]
        k = s.shape[a][-1] if not (op == "Gemm" and _attr(node, "transA", 0)) else s.shape[a][0]
        return 2.0 * s.numel(node.output[0]) * k
    if op in RESIZE:
        mode = _attr(node, "mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        taps = {"nearest": 1, "linear": 4, "cubic": 16}.get(mode, 4)
        return 2.0 * taps * s.numel(node.output[0])
    if op in REDUCE and op.startswith("Reduce") or op in ("ArgMax", "ArgMin", "GlobalAveragePool"):
        return float(s.numel(node.input[0]))
    if op in ("AveragePool", "MaxPool"):
        k = _attr(node, "kernel_shape", [1])
        return float(s.numel(node.output[0]) * _numel(k))
    if op in VIEWS:
        return 0.0
    if op in ELEMENTWISE or op in REDUCE:
        out = max((s.numel(o) for o in node.output if o), default=0)
        return float(_FLOPS_PER_ELEMENT.get(op, 1) * out)
    return 0.0  # data movement: Transpose, Concat, Slice, Pad, Gather, Split, ...


def _op_class(node, s: _Shapes) -> str:
    op = node.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose"):
        w = node.input[3] if op == "QLinearConv" else node.input[1]
        group = _attr(node, "group", 1)
        return "dwconv" if group > 1 and s.shape[w][1] == 1 else "conv"
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul", "Gemm"):
        return "matmul"
    if op in ELEMENTWISE:
        return "elementwise"
    if op in REDUCE:
        return "reduce"
    if op in RESIZE:
        return "resize"
    return "data"


def load_graph(path: Path):
    """The ONNX model at ``path`` with inferred shapes (data propagation on, so Reshape targets resolve)."""
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    return onnx.shape_inference.infer_shapes(model, data_prop=True)


def _float_precision(elem_type: int | None) -> str:
    return "fp16" if elem_type == 10 else "fp32"  # onnx.TensorProto.FLOAT16 == 10


def graph_kernels(model, runtime: FusionRules | str, source: str = "") -> GraphCost:
    """Group the nodes of ``model`` (an inferred ``onnx.ModelProto``) into kernels by a runtime's fusion rules
    (a backend's ``fusion``, or its name)."""
    rules = fusion_rules(runtime) if isinstance(runtime, str) else runtime
    runtime = rules.name
    s = _Shapes(model)
    g = model.graph
    nodes = [n for n in g.node if n.op_type != "Constant"]
    producer = {o: n for n in nodes for o in n.output if o}
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            if i:
                consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}
    notes: list[str] = []

    def only_consumer(tensor: str):
        c = consumers.get(tensor, [])
        return c[0] if len(c) == 1 and tensor not in graph_outputs else None

    def weight_source(name: str) -> tuple[bool, bool]:
        """(is a constant, stored as int8) following a DequantizeLinear of a constant."""
        if s.is_const(name):
            return True, False
        p = producer.get(name)
        if p is not None and p.op_type == "DequantizeLinear" and s.is_const(p.input[0]):
            return True, True
        return False, False

    # DequantizeLinear nodes feeding only anchors, and Q->DQ pairs in front of anchors, are absorbed.
    absorbed: set[int] = set()
    int8_anchor: set[int] = set()
    for n in nodes:
        if n.op_type not in ANCHORS:
            continue
        quant_inputs = 0
        for i in n.input:
            p = producer.get(i)
            if p is None or p.op_type != "DequantizeLinear":
                continue
            if all(c.op_type in ANCHORS for c in consumers.get(i, [])):
                absorbed.add(id(p))
                if not s.is_const(p.input[0]):
                    quant_inputs += 1
                    q = producer.get(p.input[0])
                    if q is not None and q.op_type == "QuantizeLinear":
                        absorbed.add(id(q))
        if quant_inputs:
            int8_anchor.add(id(n))

    used: set[int] = set()
    kernels: list[Kernel] = []
    for n in nodes:
        if id(n) in used or id(n) in absorbed:
            continue
        if n.op_type in VIEWS:
            used.add(id(n))
            continue
        group = [n]
        used.add(id(n))
        if rules.pointwise_chains and (n.op_type in ANCHORS or n.op_type in POINTWISE):
            region = _pointwise_region(n, consumers, producer, used, s, rules, graph_outputs)
            if region is not None:
                group = region
        elif n.op_type in POINTWISE and _has_erf_downstream(n, consumers):
            region = _pointwise_region(n, consumers, producer, used, s, rules, graph_outputs, erf_only=True)
            if region is not None:
                group = region
        if len(group) == 1 and n.op_type in ANCHORS:
            cur = n
            residual_taken = False
            while True:
                nxt = only_consumer(cur.output[0])
                if nxt is None or id(nxt) in used:
                    break
                op = nxt.op_type
                others = [i for i in nxt.input if i and i != cur.output[0]]
                if op == "BatchNormalization":
                    pass
                elif op == "Add" and others and all(s.is_const(i) for i in others):
                    pass  # bias
                elif op == "Add" and rules.residual_add and not residual_taken and others:
                    residual_taken = True
                elif op in rules.activations and all(s.is_const(i) for i in others):
                    pass
                elif op == "QuantizeLinear" and id(n) in int8_anchor:
                    pass  # requantization of the output is part of the int8 kernel
                else:
                    break
                group.append(nxt)
                used.add(id(nxt))
                cur = nxt
        for m in group:
            used.add(id(m))
        if rules.concat_elided and n.op_type == "Concat":
            continue
        kernels.append(_kernel(group, s, int8_anchor, producer, weight_source))
    if absorbed:
        notes.append(f"{len(absorbed)} Q/DQ nodes absorbed into int8 kernels")
    inp = g.input[0].name if g.input else ""
    return GraphCost(kernels, runtime, s.shape.get(inp, []), len(nodes), source, notes)


def _has_erf_downstream(n, consumers, depth: int = 3) -> bool:
    """A decomposed GELU (x/sqrt2 -> Erf -> +1 -> *x -> *0.5): every runtime runs it as one GELU kernel."""
    frontier = [n]
    for _ in range(depth):
        if any(m.op_type == "Erf" for m in frontier):
            return True
        frontier = [c for m in frontier for o in m.output for c in consumers.get(o, [])]
    return any(m.op_type == "Erf" for m in frontier)


def _pointwise_region(start, consumers, producer, used, s: _Shapes, rules: FusionRules, graph_outputs, erf_only=False):
    """The connected pointwise ops that depend only on ``start`` (plus constants, ``start``'s own inputs and, with
    ``rules.residual_add``, one other tensor for a residual Add), if exactly one of their tensors leaves the region.
    None where no such region beyond ``start`` exists."""
    region = [start]
    inside = {o for o in start.output if o}
    external = {i for i in start.input if i and not s.is_const(i)}
    residual_used = start.op_type not in ANCHORS  # only a Conv/MatMul kernel takes a residual Add
    grew = True
    while grew:
        grew = False
        for t in list(inside):
            for c in consumers.get(t, []):
                if id(c) in used or c in region or c.op_type not in POINTWISE:
                    continue
                new_ext = [i for i in c.input if i and i not in inside and i not in external and not s.is_const(i)]
                if new_ext:
                    if residual_used or c.op_type != "Add" or len(new_ext) != 1 or not rules.residual_add:
                        continue
                    residual_used = True
                    external.add(new_ext[0])
                region.append(c)
                inside.update(o for o in c.output if o)
                grew = True
    if len(region) == 1:
        return None
    if erf_only and not any(m.op_type == "Erf" for m in region):
        return None
    members = {id(m) for m in region}
    leaving = {t for t in inside if t in graph_outputs or any(id(c) not in members for c in consumers.get(t, []))}
    if len(leaving) != 1:
        return None
    # order: the node producing the leaving tensor last (its outputs are the kernel's outputs)
    last = next(m for m in region if leaving & set(m.output))
    return [m for m in region if m is not last] + [last]


def _kernel(group, s: _Shapes, int8_anchor: set[int], producer, weight_source) -> Kernel:
    inside = {o for n in group for o in n.output if o}
    flops = sum(_node_flops(n, s) for n in group)
    weights = acts = 0
    int8_w = False
    seen: set[str] = set()
    for n in group:
        for i in n.input:
            if not i or i in inside or i in seen:
                continue
            seen.add(i)
            is_w, w_int8 = weight_source(i)
            if is_w:
                src = producer[i].input[0] if w_int8 else i
                if s.known(src):
                    weights += s.numel(src)
                int8_w = int8_w or w_int8
            elif s.known(i):
                p = producer.get(i)
                # a DQ in front of this kernel that was absorbed reads its int8 input
                acts += s.numel(p.input[0] if p is not None and p.op_type == "DequantizeLinear" else i)
    last = group[-1]
    acts += sum(s.numel(o) for o in last.output if o and s.known(o))
    anchor = group[0]
    if id(anchor) in int8_anchor:
        precision = "int8"
    else:
        out = anchor.output[0] if anchor.output else ""
        precision = _float_precision(s.dtype.get(out))
    # small constant tensors (scales, shapes) of non-anchor ops are not weights worth counting as traffic
    if anchor.op_type not in ANCHORS and weights and weights < 64:
        weights = 0
    return Kernel(
        name=anchor.name or anchor.op_type,
        ops=[n.op_type for n in group],
        op_class=_op_class(anchor, s),
        precision=precision,
        flops=float(flops),
        weight_elements=int(weights),
        activation_elements=int(acts),
        int8_weights=int8_w and precision != "int8",
    )


def graph_cost(path: Path, runtime: FusionRules | str) -> GraphCost:
    """Parse the ONNX file at ``path`` into ``runtime``'s kernels."""
    from edgeseg.errors import EdgesegError, reraise_interrupt

    try:
        model = load_graph(Path(path))
    except Exception as exc:  # onnx raises several types for unreadable / invalid files
        reraise_interrupt(exc)
        raise EdgesegError(f"cannot read ONNX graph {path}: {str(exc).splitlines()[0][:200]}") from None
    try:
        return graph_kernels(model, runtime, source=str(path))
    except ValueError as exc:
        raise EdgesegError(f"cannot estimate {path}: {exc} (the estimator needs static shapes)") from None
