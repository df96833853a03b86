"""Export each small reference model of ``examples/byom_models.py`` (Swin, MaxViT, HaloNet, SASA, GFNet, BoTNet) and
``examples/byom_hier_models.py`` (MViTv2, LeViT, CvT, GCNet, HorNet-GF, BoTNet at 16x16) and
``examples/byom_local_models.py`` (NAT, QnA, ELSA) as a user model (``--model examples/byom_models.py:NAME``) to
onnx-fp32, tflite-fp32 and coreml-fp32 and print one markdown row per (family, target): lint clean, the
artifact's largest tensor rank, hostile ops of the captured program before and after the graph passes, the passes
applied, and parity against the user's unmodified module on the bundled sample images (max abs diff, argmax
agreement). A target whose export fails is listed with its error. A benchmark, not a test: its numbers go into
docs/byom.md.

    python benchmarks/byom_table.py [--families swin,gfnet] [--targets onnx-fp32,tflite-fp32] [--json out.json]
        [--no-passes] [--drop-passes NAME,...] [--new-backends] [--calib-data DIR]

``--no-passes`` exports the unrewritten programs (the graph pass list emptied for this run): the baseline the
passes are measured against. ``--new-backends`` adds openvino-fp32 and executorch-fp32 to the targets;
``--targets`` takes any target (int8 ones calibrate on ``--calib-data``, 8 images; no mixed-precision search unless
``--max-miou-drop B``, judged on ``--int8-objective``, e.g. ``agreement``: points of argmax disagreement with fp32).
``--drop-passes`` leaves the named passes out (e.g. the fp16 hazard passes, for a with / without comparison).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import provenance  # benchmarks/provenance.py (this script's folder is on sys.path)

from edgeseg.commands import export as export_cmd
from edgeseg.errors import EdgesegError
from edgeseg.io import atomic_write_bytes

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAMILIES = {  # family -> the example file defining it
    **dict.fromkeys(("swin", "maxvit", "halonet", "sasa", "gfnet", "botnet"), "byom_models.py"),
    **dict.fromkeys(("mvit", "levit", "cvt", "gcnet", "hornet", "botnet16"), "byom_hier_models.py"),
    **dict.fromkeys(("nat", "qna", "elsa"), "byom_local_models.py"),
}
TARGETS = ("onnx-fp32", "tflite-fp32", "coreml-fp32")
NEW_BACKEND_TARGETS = ("openvino-fp32", "executorch-fp32")


def _ops(census: dict) -> str:
    parts = [f"{k.split('.')[0]} x{v}" for k, v in census["hostile_ops"].items()]
    if census["rank_over_4"]:
        parts.append(f"rank>4 x{len(census['rank_over_4'])}")
    return ", ".join(parts) or "none"


def activation_max_rank(folder: Path, m: dict) -> int | None:
    """An OpenVINO IR's largest rank over its non-constant outputs: GroupConvolution holds its weights as a 5-D
    constant (groups, out, in, kh, kw) whatever the model, which the linter's max rank counts."""
    if m["format"] != "openvino":
        return None
    import openvino as ov

    model = ov.Core().read_model(str(folder / m["file"]))
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() != "Constant"]
    return max(len(op.get_output_partial_shape(i)) for op in ops for i in range(op.get_output_size()))


def row(
    family: str,
    target: str,
    out: Path,
    calib_data: Path | None = None,
    max_miou_drop: float | None = None,
    int8_objective: str = "mean",
) -> dict:
    int8 = (
        {"calib_data": calib_data, "calib_size": 8, "max_miou_drop": max_miou_drop, "int8_objective": int8_objective}
        if target.endswith("int8")
        else {}
    )
    try:
        spec = f"{EXAMPLES / FAMILIES[family]}:{family}"
        m = export_cmd.export(spec, None, None, target, out=out, parity_images=5, force=True, **int8)
    except EdgesegError as exc:
        return {"family": family, "target": target, "error": str(exc)}
    lint_file = Path(m["folder"]) / "lint.json"
    lint = json.loads(lint_file.read_text()) if lint_file.is_file() else {}
    g = m["graph_passes"]
    return {
        "family": family,
        "target": target,
        "lint_clean": m["lint"]["clean"],
        "lint_errors": m["lint"]["errors"],
        "artifact_max_rank": lint.get("max_rank"),
        "artifact_activation_max_rank": activation_max_rank(Path(m["folder"]), m),
        "program_max_rank_before": g["before"]["max_rank"],
        "program_max_rank_after": g["after"]["max_rank"],
        "hostile_before": _ops(g["before"]),
        "hostile_after": _ops(g["after"]),
        "passes": {p["name"]: len(p["matches"]) for p in g["passes"] if p["applied"]},
        "max_abs_diff": m["parity"]["max_abs_diff"],
        "argmax_agreement": m["parity"]["argmax_agreement"],
        "parity_runtime": m["parity"]["runtime"],
        "parity_images": m["parity"]["images"],
        "export_seconds": m["export_seconds"],
        **_int8_facts(m),
        "residency": [
            f"{r['accelerator']} {r['nodes_supported']}/{r['nodes_total']}"
            + (f" {r['partitions']}p" if r.get("partitions") else "")
            for r in m.get("residency", [])
        ],
    }


def _int8_facts(m: dict) -> dict:
    """For an INT8 artifact: the ops left int8 and, after a mixed-precision search, what it kept float."""
    q = m.get("quantization")
    if not q:
        return {}
    mp = q.get("mixed_precision") or {}
    return {
        "int8_nodes": q.get("int8_nodes"),
        "search": {
            k: mp.get(k)
            for k in ("objective", "budget", "holdout_images", "miou_int8_all", "miou_final", "within_budget")
        }
        if mp
        else None,
        "float_layers": [f["layer"] for f in mp.get("float_layers", [])],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-passes", action="store_true", help="baseline: export without the graph passes")
    ap.add_argument("--drop-passes", default="", help="export without these graph passes (comma-separated)")
    ap.add_argument("--new-backends", action="store_true", help=f"also {', '.join(NEW_BACKEND_TARGETS)}")
    ap.add_argument("--calib-data", type=Path, help="calibration images for int8 targets (train/images, labels)")
    ap.add_argument("--max-miou-drop", type=float, help="int8: search the fewest float layers within this budget")
    ap.add_argument("--int8-objective", default="mean", help="int8 search budget: mean, worst-class or agreement")
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    if args.new_backends:
        targets += [t for t in NEW_BACKEND_TARGETS if t not in targets]
    import edgeseg.rewrite.graph as graph

    if args.no_passes:
        graph.GRAPH_PASSES = ()
    if args.drop_passes:  # e.g. the fp16 hazard passes, for a with / without comparison
        dropped = set(args.drop_passes.split(","))
        graph.GRAPH_PASSES = tuple(p for p in graph.GRAPH_PASSES if p.name not in dropped)
    started = provenance.start()
    rows = []
    print(
        "| family | target | lint | rank (program before -> after; artifact) | hostile ops before | after | "
        "passes | max abs diff | argmax agree |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            for target in targets:
                r = row(family, target, Path(tmp), args.calib_data, args.max_miou_drop, args.int8_objective)
                rows.append(r)
                if "error" in r:
                    error = r["error"].replace("|", "/").replace("\n", " ")[:300]
                    print(f"| {family} | {target} | export failed: {error} | | | | | | |", flush=True)
                    continue
                lint = "clean" if r["lint_clean"] else f"{r['lint_errors']} errors"
                rank = f"{r['program_max_rank_before']} -> {r['program_max_rank_after']}; {r['artifact_max_rank']}"
                if r["artifact_activation_max_rank"] is not None:
                    rank += f" (activations {r['artifact_activation_max_rank']})"
                passes = ", ".join(f"{k} x{v}" for k, v in r["passes"].items())
                diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}"
                agree = "-" if r["argmax_agreement"] is None else f"{100 * r['argmax_agreement']:.2f} %"
                print(
                    f"| {family} | {target} | {lint} | {rank} | {r['hostile_before']} | {r['hostile_after']} | "
                    f"{passes} | {diff} | {agree} |",
                    flush=True,
                )
    if args.json:
        doc = {"rows": rows, "no_passes": args.no_passes, "provenance": provenance.finish(started)}
        atomic_write_bytes(args.json, json.dumps(doc, indent=2).encode())


if __name__ == "__main__":
    main()
