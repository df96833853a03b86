"""rewrites: every rewrite edgeseg has (the families' module swaps and the graph passes), and for one model the
graph-pass patterns it matches, whether each pass kept the model exact, and the census before and after."""

from __future__ import annotations

from edgeseg.backends import get_target
from edgeseg.commands.evaluate import load_model
from edgeseg.data.transforms import check_input_size, parse_size
from edgeseg.models.registry import default_input, deploy_rewrites, is_user_model, size_multiple
from edgeseg.rewrite import REWRITES
from edgeseg.rewrite.graph import GRAPH_PASSES, rewrite_graph


def catalogue() -> dict:
    """Every module rewrite and graph pass, with what it matches and the formats that want it."""
    return {
        "module_rewrites": [
            {
                "name": r.name,
                "pattern": r.pattern.__name__,
                "families": list(r.families) or ["any"],
                "formats": list(r.formats or ["all"]),
                "summary": r.summary,
            }
            for r in REWRITES.values()
        ],
        "graph_passes": [
            {
                "name": p.name,
                "summary": p.summary,
                "formats": list(p.formats),
                "targets": list(p.wants or ["all"]),
                "tolerance": p.tolerance,
                "doc": p.doc,
            }
            for p in GRAPH_PASSES
        ],
    }


def rewrites(
    model: str | None = None,
    dataset: str | None = None,
    weights: str | None = None,
    size: str | None = None,
    target: str = "onnx-fp32",
) -> dict:
    """The catalogue; with ``model``, also what each graph pass matched in it (captured at ``size``) and, for a
    built-in model, the module rewrites its export to ``target`` applies (its exports use those, not the graph
    passes)."""
    report = catalogue()
    if model is None:
        return report
    tgt = get_target(target)
    loaded = load_model(model, dataset, weights or ("random" if ":" not in model else None))
    user = is_user_model(loaded.name)
    h, w = (
        check_input_size(parse_size(size), *size_multiple(loaded.name))
        if size
        else default_input(loaded.name, loaded.dataset)
    )
    _, graph = rewrite_graph(loaded.model, (1, 3, h, w), loaded.name, tgt.name, fmt=tgt.format, precision=tgt.precision)
    report.update(
        model=loaded.name,
        dataset=loaded.dataset,
        target=tgt.name,
        input=[1, 3, h, w],
        user_model=user,
        export_applies="graph passes" if user else "module rewrites",
        module_rewrites_applied=list(deploy_rewrites(loaded.name, tgt.format, tgt.precision)),
        graph=graph,
    )
    return report
