"""ExecuTorch vs TFLite (both XNNPACK) for EfficientViT-Seg, side by side in one process.

For each model (shipped CamVid weights, 384x480): exports executorch-fp32 / -int8 and tflite-fp32 / -int8, takes
executorch-fp32's parity against PyTorch from its export (max abs diff, argmax agreement on CamVid val images),
evaluates every artifact and the PyTorch reference on CamVid val, then times the four artifacts round-robin
(``stats.interleave``: one call each in turn, the first rotating) at each thread count, and reports medians and the
ExecuTorch / TFLite ratio per pass (median, min, max) with the load average before and after. ExecuTorch's
delegation (partitions, ops left to the portable kernels) and an ETDump profile (1 thread) of its programs say
where its time goes. ``--extra`` models (untrained weights) are exported to executorch-fp32 for their delegation
only. A benchmark, not a test: the numbers go into docs/executorch.md (benchmarks/render_docs.py).

    python benchmarks/executorch_table.py --data ../shared/data/camvid --json out/executorch.json

``--op-table executorch=FOLDER tflite=FOLDER`` puts an ExecuTorch int8 program's per-op time (its ETDump profile)
beside a TFLite int8 model's, per kernel category, at 1 thread. LiteRT's Python interpreter exposes no per-op time
inside XNNPACK, so each TFLite operator is cut out into a one-op model (its constants kept, its activations as
inputs; a PAD together with the convolution it feeds, which XNNPACK fuses) and invoked alone with XNNPACK: the
kernels' own cost, without the neighbours' cache state, so their sum is not the whole model's time (the table gives
both).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import provenance  # benchmarks/provenance.py (this script's folder is on sys.path)

from edgeseg.backends import load_artifact
from edgeseg.bench.host import inference_call
from edgeseg.bench.stats import interleave
from edgeseg.commands import evaluate as evaluate_cmd
from edgeseg.commands import export as export_cmd
from edgeseg.io import atomic_write_bytes

TARGETS = ("executorch-fp32", "executorch-int8", "tflite-fp32", "tflite-int8")


def _load() -> list[float] | None:
    return provenance.load_average()


def _per_pass(num: list[float], den: list[float]) -> dict:
    ratios = [a / b for a, b in zip(num, den)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def time_side_by_side(folders: dict[str, Path], threads: int, runs: int, warmup: int) -> dict:
    """Medians and ranges per artifact, and per pass (same round, same load) the ExecuTorch / TFLite ratio of each
    precision and ExecuTorch's int8 / fp32 ratio."""
    calls = {}
    for label, folder in folders.items():
        calls[label] = inference_call(load_artifact(folder, threads=threads))
    before = _load()
    (samples,) = interleave(list(calls.values()), runs, warmup)
    after = _load()
    by = dict(zip(calls, samples))
    out = {"threads": threads, "runs": runs, "warmup": warmup, "load_before": before, "load_after": after}
    out["median_ms"] = {k: statistics.median(v) for k, v in by.items()}
    out["range_ms"] = {k: [min(v), max(v)] for k, v in by.items()}
    for precision in ("fp32", "int8"):
        et, tfl = by.get(f"executorch-{precision}"), by.get(f"tflite-{precision}")
        if et and tfl:
            out[f"ratio_{precision}"] = _per_pass(et, tfl)
    first = next(iter(by))  # every artifact against the first one given, pass by pass
    out["ratio_to_first"] = {k: _per_pass(v, by[first]) for k, v in by.items() if k != first}
    for label in by:  # "executorch-int8<suffix>" against "executorch-fp32<suffix>" (e.g. two builds side by side)
        suffix = label.removeprefix("executorch-int8")
        if label.startswith("executorch-int8") and by.get(f"executorch-fp32{suffix}"):
            out[f"ratio_et_int8_fp32{suffix}"] = _per_pass(by[label], by[f"executorch-fp32{suffix}"])
    return out


def profile_summary(folder: Path, runs: int) -> dict:
    p = export_cmd.op_profile(folder, threads=1, runs=runs, warmup=2)
    return {
        "run_ms": p["run_ms"],
        "explained": p["explained"],
        "partitions": p["partitions"],
        "top_op_types": [
            {"op_type": r["op_type"], "count": r["count"], "ms": r["ms"], "share": r["share"], "path": r["path"]}
            for r in p["by_type"][:8]
        ],
        "off_path": p["off_path"],
    }


CATEGORIES = (
    "int8 1x1 conv (GEMM)",
    "int8 depthwise conv",
    "int8 3x3 / grouped conv",
    "hardswish",
    "transpose / reshape (layout)",
    "quantize / dequantize",
    "float matmul (attention bmm, head upsampling)",
    "elementwise add (residual)",
    "attention others (relu, sum, clamp / max, div)",
    "slice / concat / pad",
    "other",
)


def et_category(name: str) -> str:
    """The category of an ETDump kernel name (``Convolution (NHWC, QC8) DWConv #3``)."""
    rules = (
        (("QC8W) GEMM",), 0), (("DWConv",), 1), (("QC8) IGEMM", "QC8) GEMM"), 2), (("Invalid Unary",), 3),
        (("Transpose", "Static Reshape", "Copy"), 4), (("Convert",), 5), (("F32) GEMM",), 6), (("Add",), 7),
        (("Clamp", "Divide", "Multiply", "Max"), 8), (("Slice", "Concat", "Pad"), 9),
    )  # fmt: skip
    return next((CATEGORIES[i] for keys, i in rules if any(k in name for k in keys)), CATEGORIES[-1])


def tflite_op_times(model_file: Path, runs: int, warmup: int = 3) -> list[dict]:
    """Median invoke time of each operator of a TFLite model cut out into a one-op model, XNNPACK, 1 thread."""
    import time

    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    model = schema.ModelT.InitFromPackedBuf(model_file.read_bytes(), 0)
    graph, ops = model.subgraphs[0], model.subgraphs[0].operators
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    dtypes = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}

    def op_name(op) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        return names[max(code.builtinCode, code.deprecatedBuiltinCode)]

    def constant(t: int) -> bool:
        data = model.buffers[graph.tensors[t].buffer].data
        return data is not None and len(data) > 0

    def cut(group: list) -> bytes:
        made = {t for op in group for t in op.outputs}
        inputs = sorted({t for op in group for t in op.inputs if t >= 0 and not constant(t) and t not in made})
        sub = schema.SubGraphT()
        sub.tensors, sub.operators, sub.name = graph.tensors, group, "op"
        sub.inputs, sub.outputs = np.array(inputs, np.int32), np.array(group[-1].outputs, np.int32)
        one = schema.ModelT()
        one.version, one.operatorCodes, one.buffers = model.version, model.operatorCodes, model.buffers
        one.subgraphs = [sub]
        builder = flatbuffers.Builder(1 << 20)
        builder.Finish(one.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    def median_ms(content: bytes) -> float:
        interpreter = Interpreter(model_content=content, num_threads=1)
        interpreter.allocate_tensors()
        rng = np.random.default_rng(0)
        for d in interpreter.get_input_details():
            integer = np.issubdtype(d["dtype"], np.integer)
            x = rng.integers(-100, 100, d["shape"]) if integer else rng.standard_normal(d["shape"])
            interpreter.set_tensor(d["index"], x.astype(d["dtype"]))
        samples = []
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            interpreter.invoke()
            if i >= warmup:
                samples.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(samples)

    rows, i = [], 0
    while i < len(ops):
        group = [ops[i]]
        if op_name(ops[i]) == "PAD" and i + 1 < len(ops) and ops[i].outputs[0] in list(ops[i + 1].inputs):
            group.append(ops[i + 1])  # XNNPACK fuses a constant pad into the convolution reading it
        last = group[-1]
        category = tflite_category(graph, group, [op_name(o) for o in group], constant)
        out = graph.tensors[last.outputs[0]]
        rows.append({
            "index": i, "op": "+".join(op_name(o) for o in group), "dtype": dtypes[out.type],
            "shape": [int(d) for d in out.shape], "category": category, "ms": median_ms(cut(group)),
        })  # fmt: skip
        i += len(group)
    return rows


def tflite_category(graph, group: list, names: list[str], constant) -> str:
    op, name = group[-1], names[-1]
    if name == "DEPTHWISE_CONV_2D":
        return CATEGORIES[1]
    if name == "CONV_2D":
        w, x = graph.tensors[op.inputs[1]].shape, graph.tensors[op.inputs[0]].shape
        return CATEGORIES[0] if (w[1], w[2], w[3]) == (1, 1, x[3]) else CATEGORIES[2]
    if name == "MUL":  # hardswish-as-clamp: x * clamp(x + 3, 0, 6) * 1/6
        return CATEGORIES[3]
    if name == "ADD":
        return CATEGORIES[3] if any(t >= 0 and constant(t) for t in op.inputs) else CATEGORIES[7]
    table = {
        "TRANSPOSE": 4, "RESHAPE": 4, "QUANTIZE": 5, "DEQUANTIZE": 5, "BATCH_MATMUL": 6, "FULLY_CONNECTED": 6,
        "RELU": 8, "SUM": 8, "MAXIMUM": 8, "DIV": 8, "SLICE": 9, "CONCATENATION": 9, "PAD": 9,
    }  # fmt: skip
    return CATEGORIES[table[name]] if name in table else CATEGORIES[-1]


def op_table(et_folder: Path, tflite_folder: Path, runs: int) -> dict:
    """Per category: operator counts and summed ms of the ExecuTorch program (ETDump, 1 thread) and of the TFLite
    model (one-op models, 1 thread), with each side's whole-model median."""
    from collections import Counter

    before = _load()
    et = export_cmd.op_profile(et_folder, threads=1, runs=runs, warmup=3)
    tfl_rows = tflite_op_times(tflite_folder / "model.tflite", runs)
    tfl_call = inference_call(load_artifact(tflite_folder, threads=1))
    ((tfl_whole,),) = interleave([tfl_call], runs, 3)
    after = _load()
    table = {c: {"et_ops": Counter(), "et_ms": 0.0, "tflite_ops": Counter(), "tflite_ms": 0.0} for c in CATEGORIES}
    for k in et["kernels"]:
        row = table[et_category(k["name"])]
        row["et_ops"][k["op_type"]] += 1
        row["et_ms"] += k["ms"]
    for r in tfl_rows:
        row = table[r["category"]]
        row["tflite_ops"][f"{r['op']} {r['dtype']}"] += 1
        row["tflite_ms"] += r["ms"]
    rows = [{"category": c, **{k: dict(v) if isinstance(v, Counter) else v for k, v in t.items()}}
            for c, t in table.items() if t["et_ops"] or t["tflite_ops"]]  # fmt: skip
    return {
        "executorch": str(et_folder),
        "tflite": str(tflite_folder),
        "runs": runs,
        "load_before": before,
        "load_after": after,
        "et_run_mean_ms": et["run_mean_ms"],
        "et_kernels_ms": sum(k["ms"] for k in et["kernels"]),
        "tflite_whole_median_ms": statistics.median(tfl_whole),
        "tflite_one_op_sum_ms": sum(r["ms"] for r in tfl_rows),
        "categories": rows,
        "tflite_ops": tfl_rows,
    }


def op_table_markdown(doc: dict) -> str:
    et_total, tfl_total = doc["et_kernels_ms"], doc["tflite_one_op_sum_ms"]

    def ops(counts: dict) -> str:
        return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"

    lines = [
        "| kernel category | ExecuTorch (XNNPACK operators) | ET ms | ET share | TFLite (operators) | TFLite ms | "
        "TFLite share |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in doc["categories"]:
        lines.append(
            f"| {r['category']} | {ops(r['et_ops'])} | {r['et_ms']:.2f} | {100 * r['et_ms'] / et_total:.1f} % | "
            f"{ops(r['tflite_ops'])} | {r['tflite_ms']:.2f} | {100 * r['tflite_ms'] / tfl_total:.1f} % |"
        )
    et_n = sum(sum(r["et_ops"].values()) for r in doc["categories"])
    tfl_n = sum(sum(r["tflite_ops"].values()) for r in doc["categories"])
    lines.append(f"| total | {et_n} operators | {et_total:.2f} | | {tfl_n} operators | {tfl_total:.2f} | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["efficientvit-b0", "efficientvit-b1"])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--size", default="384x480")
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument(
        "--max-miou-drop", default="off", help="int8 mixed-precision budget (points) or 'off' (quantize all)"
    )
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--limit", type=int, default=None, help="val images for mIoU (default: all)")
    ap.add_argument("--parity-images", type=int, default=10)
    ap.add_argument("--extra", nargs="*", default=["lvt", "segformer-b0"], help="exported with --weights random")
    ap.add_argument(
        "--time-only",
        nargs="*",
        default=None,
        metavar="TARGET=FOLDER",
        help="only time these exported artifacts side by side (labels: executorch-fp32, tflite-fp32, ...)",
    )
    ap.add_argument(
        "--op-table",
        nargs=2,
        default=None,
        metavar="LABEL=FOLDER",
        help="executorch=FOLDER tflite=FOLDER: per-op time by kernel category, 1 thread (--runs per op)",
    )
    ap.add_argument("--out", type=Path, default=Path("out/executorch"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    started = provenance.start()
    if args.op_table is not None:
        folders = dict(item.split("=", 1) for item in args.op_table)
        doc = {"op_table": op_table(Path(folders["executorch"]), Path(folders["tflite"]), args.runs)}
        doc["provenance"] = provenance.finish(started)
        if args.json:
            atomic_write_bytes(args.json, json.dumps(doc, indent=2, default=str).encode())
        t = doc["op_table"]
        print(op_table_markdown(t))
        print(
            f"ExecuTorch: kernels {t['et_kernels_ms']:.2f} ms of a {t['et_run_mean_ms']:.2f} ms mean execute; "
            f"TFLite: one-op models {t['tflite_one_op_sum_ms']:.2f} ms, whole model {t['tflite_whole_median_ms']:.2f} "
            f"ms median; load {t['load_before']} / {t['load_after']}"
        )
        return
    if args.time_only is not None:
        folders = {label: Path(folder) for label, folder in (item.split("=", 1) for item in args.time_only)}
        doc = {"time_only": {str(f): label for label, f in folders.items()}, "cpu_count": os.cpu_count()}
        doc["latency"] = [time_side_by_side(folders, threads, args.runs, 3) for threads in args.threads]
        doc["provenance"] = provenance.finish(started)
        if args.json:
            atomic_write_bytes(args.json, json.dumps(doc, indent=2, default=str).encode())
        print(json.dumps(doc["latency"], indent=1, default=str))
        return
    budget = None if args.max_miou_drop == "off" else float(args.max_miou_drop)
    common = dict(out=args.out, parity_data=args.data, parity_images=args.parity_images)
    int8 = dict(calib_data=args.data, calib_size=args.calib_size, max_miou_drop=budget)
    doc: dict = {"size": args.size, "max_miou_drop": budget, "models": {}, "extra": {}}
    for model in args.models:
        built = {}
        for target in TARGETS:
            print(f"export {model} {target}", flush=True)
            extra = int8 if target.endswith("int8") else {}
            built[target] = export_cmd.export(model, "camvid", "camvid", target, args.size, **common, **extra)
        row: dict = {"artifacts": {}, "eval": {}}
        for target, m in built.items():
            row["artifacts"][target] = {
                "folder": m["folder"],
                "bytes": m["bytes"],
                "export_seconds": m["export_seconds"],
                "parity": m["parity"],
                "lint_warnings": m["lint"]["warnings"],
                "delegation": m.get("delegation"),
                "mixed_precision": (m.get("quantization") or {}).get("mixed_precision"),
            }
        print(f"eval {model}", flush=True)
        ref = evaluate_cmd.evaluate(model, "camvid", "camvid", args.data, size=args.size, limit=args.limit, threads=2)
        row["eval"]["pytorch-fp32"] = {"miou": ref["miou"], "images": ref["images"]}
        for target, m in built.items():
            ev = evaluate_cmd.evaluate(None, None, None, args.data, artifact=Path(m["folder"]), limit=args.limit,
                                       threads=2)  # fmt: skip
            row["eval"][target] = {"miou": ev["miou"], "images": ev["images"], "runtime": ev.get("runtime")}
        folders = {t: Path(m["folder"]) for t, m in built.items()}
        row["latency"] = []
        for threads in args.threads:
            print(f"time {model} {threads} thread(s)", flush=True)
            row["latency"].append(time_side_by_side(folders, threads, args.runs, 3))
        row["profile"] = {t: profile_summary(folders[t], args.runs) for t in TARGETS if t.startswith("executorch")}
        doc["models"][model] = row
    for model in args.extra:
        print(f"export {model} executorch-fp32 (random weights)", flush=True)
        m = export_cmd.export(model, "camvid", "random", "executorch-fp32", None, **common)
        doc["extra"][model] = {
            "size": m["input"]["shape"][2:],
            "delegation": m["delegation"],
            "parity": m["parity"],
            "lint": m["lint"],
            "rewrites": m["rewrites"],
        }
    doc["threads_note"] = (
        "ExecuTorch's thread pool is process-wide (executorch.extension.pybindings.portable_lib."
        "_unsafe_reset_threadpool); each program resets it to its own count before it runs"
    )
    doc["cpu_count"] = os.cpu_count()
    doc["provenance"] = provenance.finish(started)
    if args.json:
        atomic_write_bytes(args.json, json.dumps(doc, indent=2, default=str).encode())
    print(json.dumps({k: v["latency"] for k, v in doc["models"].items()}, indent=1, default=str))


if __name__ == "__main__":
    main()
