"""Graph-level rewrite passes on the ``torch.export`` program of any model (a user's own included).

Where ``edgeseg.rewrite`` swaps modules of edgeseg's own families by class, these passes match ATen patterns
wherever they occur in a captured program (in the spirit of ai-edge-torch's FX passes): window partitions,
head reshapes, rolls, unfolds, constant gathers and FFT filters (``passes``); einsums, slice assignments and rank > 4
broadcasts, expands and concatenations (``hier_passes``); constant subgraphs, padded and clamped local windows and
rank > 4 chains (``local_passes``); the fp16 / int8 hazards (``hazard_passes``), whatever the module that wrote
them is called. ``rewrite_graph`` captures the model, applies each pass to a copy, verifies the
copy against the program before the pass on random inputs (zero borders and large values included) and keeps it
only when it is exact within the pass's tolerance; every match, every refusal, each pass's diff and the final
program's max abs diff against the unmodified model are recorded for the manifest and ``edgeseg rewrites``. The
result is ``ep.module()``'s GraphModule, an ``nn.Module`` the exporters re-export.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from edgeseg.errors import EdgesegError
from edgeseg.rewrite.graph import hazard_passes, hier_passes, local_passes, passes
from edgeseg.rewrite.graph.core import DATA_DEPENDENT, census, finish, op_name, propagate, source_line


@dataclass(frozen=True)
class GraphPass:
    """A graph pass: ``run(gm)`` rewrites every match of its pattern in place and describes each match.

    ``tolerance``: the max abs diff allowed against the unmodified model, relative to its largest output value
    (0 for pure data movement, which must be bit-exact). ``formats``: the export formats that want it.
    ``wants``: the exports, as ``format-precision`` (``onnx-fp16``), it is applied for; None: every export (an
    export names its format and precision to ``rewrite_graph``; a pass it does not want is recorded as skipped)."""

    name: str
    run: Callable
    summary: str
    triggers: tuple = ()  # ATen ops its pattern starts at: a graph without any is skipped without a copy
    formats: tuple[str, ...] = ("onnx", "tensorrt", "tflite", "coreml")
    tolerance: float = 0.0
    wants: tuple[str, ...] | None = None

    def wanted(self, fmt: str | None, precision: str | None) -> bool:
        """Whether an export to ``fmt`` at ``precision`` wants it (no format or precision: only passes for every
        export)."""
        return self.wants is None or (fmt is not None and precision is not None and f"{fmt}-{precision}" in self.wants)

    @property
    def doc(self) -> str:
        return " ".join((self.run.__doc__ or "").split())


_A = torch.ops.aten
GRAPH_PASSES: tuple[GraphPass, ...] = (
    GraphPass(
        "unfold-as-conv",
        passes.unfold_to_conv,
        "Tensor.unfold window pairs -> one-hot grouped conv",
        (_A.unfold.default,),
    ),
    GraphPass(
        "im2col-as-conv", passes.im2col_to_conv, "F.unfold (im2col) -> one-hot grouped conv", (_A.im2col.default,)
    ),
    GraphPass("roll-as-slices", passes.roll_to_slices, "torch.roll -> slice + concat", (_A.roll.default,)),
    GraphPass(
        "fft-filter-as-conv",
        passes.fft_filter_to_conv,
        "rfft2 * W -> irfft2 -> circular depthwise conv",
        (_A.fft_rfft2.default, _A.fft_rfftn.default),
        tolerance=1e-5,
    ),
    GraphPass(
        "constant-gather-fold",
        passes.fold_constant_gathers,
        "gathers of constants -> constants",
        (_A.index.Tensor, _A.index_select.default, _A.gather.default, _A.take.default),
    ),
    GraphPass(
        "einsum-region-as-matmul",
        passes.einsum_region_to_matmul,
        "einsum + rel_to_abs / expand chain (BoTNet rel logits) -> position-wise table + bmm",
        (_A.einsum.default,),
        tolerance=1e-5,
    ),
    GraphPass(
        "select-rank-lower",
        passes.select_rank_lower,
        "5-D qkv reshape + permute + select -> rank 4",
        (_A.permute.default,),
    ),
    GraphPass(
        "permute-rank-lower",
        passes.permute_rank_lower,
        "6-D/5-D window partition/reverse -> rank-4 swaps",
        (_A.permute.default,),
    ),
    GraphPass(
        "unit-dims-rank-lower",
        passes.unit_dims_rank_lower,
        "5-D broadcast op with unit dims -> rank 4",
        (_A.add.Tensor, _A.sub.Tensor, _A.mul.Tensor, _A.div.Tensor),
    ),
    GraphPass(  # before einsum-as-bmm: an einsum of constants becomes a constant, not a bmm at run time
        "constant-subgraph-fold",
        local_passes.fold_constant_subgraphs,
        "constant computations with rank > 4 or hostile ops -> constants",
        (_A.einsum.default, _A.expand.default, _A.view.default, _A.reshape.default, _A.permute.default),
    ),
    GraphPass(
        "einsum-as-bmm",
        hier_passes.einsum_to_bmm,
        "two-operand einsum -> rank-4 permutes + bmm",
        (_A.einsum.default,),
        tolerance=1e-5,
    ),
    GraphPass(
        "slice-assign-as-cat",
        hier_passes.slice_assign_to_cat,
        "in-place write into slices (x[a:] = y, x[a:] += y) -> slices + concat",
        tuple(hier_passes.INPLACE),
    ),
    GraphPass(
        "broadcast-rank-lower",
        hier_passes.broadcast_rank_lower,
        "rank > 4 elementwise broadcast region -> merged dims, rank <= 4",
        tuple(hier_passes.ELEMENTWISE),
    ),
    GraphPass(
        "expand-rank-lower",
        hier_passes.expand_rank_lower,
        "rank > 4 expand [+ permute] -> reshape + expand of rank <= 4",
        (_A.expand.default,),
    ),
    GraphPass(
        "cat-rank-lower",
        hier_passes.cat_rank_lower,
        "rank > 4 cat / stack of views -> rank-3 cat",
        (_A.cat.default, _A.stack.default),
    ),
    # local-window families (NAT, QnA, ELSA): the general case of what the passes above leave
    GraphPass(
        "pad-as-slices",
        local_passes.pad_to_slices,
        "replicate / reflect / circular pad (NAT clamped windows) -> slices + concat",
        tuple(local_passes.PAD_OPS) + (_A.pad.default,),
    ),
    GraphPass(
        "constant-index-as-slices",
        local_passes.constant_index_to_slices,
        "gathers of activations by a constant index (NATTEN-style clamped windows) -> slices + concat",
        (_A.index.Tensor, _A.index_select.default),
    ),
    GraphPass(
        "rank-lower",
        local_passes.rank_lower,
        "rank > 4 data movement, elementwise ops, reductions, softmax, matmul (NAT 5-D attention) -> rank <= 4",
        (_A.view.default, _A.reshape.default, _A._unsafe_view.default, _A.permute.default, _A.unsqueeze.default),
        tolerance=1e-5,
    ),
    GraphPass("alias-drop", hier_passes.alias_drop, "alias (full slices) -> its input", (_A.alias.default,)),
    GraphPass(
        "matvec-as-row-matmul",
        hier_passes.matvec_to_row_matmul,
        "matrix x column matmul -> row x matrix (TFLite)",
        (_A.matmul.default, _A.bmm.default),
        tolerance=1e-5,
    ),
)


# The fp16 / int8 hazards edgeseg's module swaps fix in its own families (``edgeseg.rewrite.common``), found by
# pattern: after the rank passes, so they see the final graph; LayerNorm is folded before it is kept in fp32.
_FP16_GRAPHS = ("onnx-fp16", "tensorrt-fp16")  # the targets whose graph itself is half precision
GRAPH_PASSES += (
    GraphPass(
        "layernorm-fold",
        hazard_passes.fold_layernorms,
        "decomposed LayerNorm (x-mean)/sqrt(var+eps)*w+b -> one layer_norm",
        (_A.mean.dim,),
        tolerance=1e-5,
    ),
    GraphPass(
        "layernorm-to-matmul",
        hazard_passes.layernorm_to_matmul,
        "layer_norm over the last dim -> fp32 matmul means: NNAPI and Core ML NeuralNetwork lack LayerNormalization",
        (_A.layer_norm.default,),
        formats=("onnx",),
        tolerance=1e-5,
        wants=("onnx-fp16",),
    ),
    GraphPass(
        "layernorm-fp32",
        hazard_passes.layernorm_fp32,
        "LayerNorm (op or decomposed) computed in fp32 in half-precision graphs",
        (_A.layer_norm.default, _A.mean.dim),
        formats=("onnx", "tensorrt"),
        wants=_FP16_GRAPHS,
    ),
    GraphPass(
        "softmax-fp32",
        hazard_passes.softmax_fp32,
        "attention scores -> softmax -> @ v computed in fp32 in half-precision graphs",
        (_A.softmax.int, _A._softmax.default),
        formats=("onnx", "tensorrt"),
        wants=_FP16_GRAPHS,
    ),
    GraphPass(
        "normaliser-fp32",
        hazard_passes.normaliser_fp32,
        "x / x.sum(dim, keepdim=True) normalisers computed in fp32 in half-precision graphs",
        (_A.div.Tensor, _A.reciprocal.default),
        formats=("onnx", "tensorrt"),
        wants=_FP16_GRAPHS,
    ),
    GraphPass(
        "gelu-erfc-rational",
        hazard_passes.gelu_erfc_rational,
        "erf GELU from relu/mul/add/div/sigmoid (exact to fp32): NNAPI and Core ML NeuralNetwork lack Erf",
        (_A.gelu.default,),
        formats=("onnx",),
        tolerance=1e-5,
        wants=("onnx-fp16",),
    ),
    GraphPass(
        "hardswish-to-clamp",
        hazard_passes.hardswish_to_clamp,
        "Hardswish as add/clamp/mul: TFLite's XNNPACK has no int8 HARD_SWISH, ORT mobile EPs lack HardSwish "
        "(ExecuTorch's XNNPACK runs int8 Hardswish as one kernel: there the split form is slower)",
        (_A.hardswish.default,),
        formats=("tflite", "onnx"),
        tolerance=1e-5,
        wants=("tflite-int8", "onnx-fp16"),
    ),
)


def probe_inputs(shape: tuple[int, ...], n: int = 3) -> list[torch.Tensor]:
    """Random inputs with borders: normal noise, a large-valued image with a zero border (padding), uniform."""
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(shape, generator=g)
    x2 = 8 * torch.randn(shape, generator=g)
    x2[..., :3, :] = 0
    x2[..., :, -5:] = 0
    x3 = torch.rand(shape, generator=g) * 2 - 1
    return [x1, x2, x3][:n]


def capture(model: nn.Module, example: torch.Tensor, what: str, backend: str):
    """``torch.export`` of ``model``; a failure is one line naming the construct, the user's source line where the
    traceback has one, and the backend (torch's own multi-line logs of the failure are silenced)."""
    quiet = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("torch")]
    levels = [log.level for log in quiet]
    try:
        for log in quiet:
            log.setLevel(logging.CRITICAL)
        # torch prints the partial graph of a failed capture to stderr: the one-line error below replaces it
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            return torch.export.export(model, (example,), strict=False)
    except Exception as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        frames = [
            f
            for f in traceback.extract_tb(exc.__traceback__)
            if "site-packages" not in f.filename and "/edgeseg/" not in f.filename
        ]
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}: {frames[-1].line}" if frames else ""
        raise EdgesegError(
            f"{what} cannot be captured for {backend}{where}: {type(exc).__name__}: {first[:240]} (static graphs "
            "only: remove data-dependent control flow / shapes, custom kernels and Python-side state from forward)"
        ) from None
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)


def _diff(gm: nn.Module, inputs, refs) -> float:
    worst = 0.0
    with torch.no_grad():
        for x, ref in zip(inputs, refs):
            out = gm(x)
            if out.shape != ref.shape:
                return float("inf")
            worst = max(worst, float((out - ref).abs().max() / max(1.0, float(ref.abs().max()))))
    return worst


def rewrite_graph(
    model: nn.Module,
    shape: tuple[int, ...],
    what: str = "the model",
    backend: str = "any",
    only: tuple[str, ...] | None = None,
    fmt: str | None = None,
    precision: str | None = None,
) -> tuple[nn.Module, dict]:
    """Capture ``model`` at input ``shape``, apply the graph passes that keep it exact (those an export to ``fmt`` at
    ``precision`` wants; both None: every pass); the rewritten module and a report: per pass its matches, whether
    it was applied and the relative max abs diff; the census (max rank, rank > 4 nodes, hostile ops) before and
    after. A data-dependent op is an EdgesegError naming it."""
    inputs = probe_inputs(shape)
    with torch.no_grad():
        refs = [model(x) for x in inputs]
    ep = capture(model, inputs[0], what, backend)
    gm = ep.module()
    propagate(gm, inputs[0])
    for node in gm.graph.nodes:
        name = op_name(node) if node.op == "call_function" else ""
        if any(name.startswith(k) for k in DATA_DEPENDENT):
            where = source_line(node)
            raise EdgesegError(
                f"{what}: {name} (a data-dependent shape or value{', at ' + where if where else ''}) cannot be "
                f"exported to {backend} with static shapes: compute it with fixed-size ops (masks, where) instead"
            )
    report = {"before": census(gm), "passes": []}
    stage = refs  # the outputs of the program as the passes so far left it: each pass is judged on its own change
    for gp in GRAPH_PASSES:
        if only is not None and gp.name not in only:
            continue
        record = {"name": gp.name, "matches": [], "applied": False, "max_rel_diff": None}
        if not gp.wanted(fmt, precision):
            record["skipped"] = f"not for {f'{fmt}-{precision}' if fmt else 'this report'} (for {', '.join(gp.wants)})"
            report["passes"].append(record)
            continue
        if not any(n.target in gp.triggers for n in gm.graph.nodes):
            report["passes"].append(record)
            continue
        candidate = copy.deepcopy(gm)
        propagate(candidate, inputs[0])
        try:
            record["matches"] = gp.run(candidate)
            if record["matches"]:
                finish(candidate)
                diff = _diff(candidate, inputs, stage)
                record["max_rel_diff"] = diff
                if diff <= gp.tolerance:
                    gm, record["applied"] = candidate, True
                    if diff > 0:
                        with torch.no_grad():
                            stage = [gm(x) for x in inputs]
                else:
                    record["refused"] = f"not exact: max relative diff {diff:.3g} > {gp.tolerance:g}"
        except Exception as exc:  # a pass that cannot handle a match is not applied, and says why
            record["refused"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        report["passes"].append(record)
    propagate(gm, inputs[0])
    report["after"] = census(gm)
    report["max_rel_diff"] = _diff(gm, inputs, refs)
    # a plain GraphModule: ep.module()'s own class refuses train()/eval(), which DeployWrapper and exporters call
    return torch.fx.GraphModule(gm, gm.graph, class_name="GraphRewritten"), report


def applied_passes(report: dict) -> dict[str, int]:
    """``{pass name: matches}`` of the passes a report applied (the manifest's ``rewrites`` record)."""
    return {p["name"]: len(p["matches"]) for p in report["passes"] if p["applied"]}
