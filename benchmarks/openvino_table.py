"""OpenVINO beside edgeseg's other artifacts on this x86 CPU: latency side by side in one process, val mIoU, and
the fraction of the CPU's int8 / bf16 / fp32 peak each reaches. A benchmark, not a test.

For each model (EfficientViT-B0 and -B1, shipped weights, 384x480) it exports (cached) tflite-fp32, tflite-int8,
onnx-fp32, onnx-int8, openvino-fp32, openvino-bf16 and openvino-int8, and builds two configurations that are not
edgeseg targets: NNCF with default settings on edgeseg's openvino-fp32 IR (the 64 class-balanced calibration
images; the constant-first MatMuls ignored, without which the CPU plugin cannot compile it; the plugin's default
precision, bf16 on this CPU) and edgeseg's openvino-int8 IR with its float rest in bf16. All are timed round-robin
(``edgeseg.bench.stats.interleave``) at 1 and 2 threads for ``--rounds`` rounds; the latency is the median of the
rounds' medians and the ratio against tflite-fp32 is the median of the per-round ratios (range in brackets).
mIoU: every image of the val split (CamVid: 101), each configuration run with its runtime here.

Peaks (per core, measured on this machine's CPU with a VNNI / AVX512_BF16 / FMA microbenchmark, issue 22):
985 int8 GOP/s, 460 bf16 GFLOP/s, 249 fp32 GFLOP/s. FLOPs: edgeseg's estimator over the onnx-fp32 graph
(``edgeseg.estimate.graph.graph_cost``; a multiply-accumulate counts 2).

    python benchmarks/openvino_table.py --data ../shared/data/camvid --json out/openvino-table.json
    python benchmarks/render_docs.py out/openvino-table.json --out docs/generated/openvino-table.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import provenance  # benchmarks/provenance.py (this script's folder is on sys.path)

from edgeseg.backends import load_artifact
from edgeseg.bench.host import inference_call
from edgeseg.bench.stats import interleave
from edgeseg.commands import evaluate as evaluate_cmd
from edgeseg.commands import export as export_cmd
from edgeseg.io import atomic_write_bytes

PEAK_PER_CORE = {"int8": 985.0, "bf16": 460.0, "fp32": 249.0}  # GOP/s, GFLOP/s
TARGETS = ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-bf16", "openvino-int8")
BASELINE = "tflite-fp32"


def export_all(model: str, args) -> dict[str, Path]:
    folders = {}
    for target in args.targets:
        t0 = time.perf_counter()
        kw = {}
        if target.endswith("int8"):
            kw = {"calib_data": args.data, "calib_size": 64}
            kw["max_miou_drop"] = args.openvino_int8_budget if target.startswith("openvino") else args.other_int8_budget
        m = export_cmd.export(model, "camvid", None, target, size=args.size, out=args.out, **kw)
        folders[target] = Path(m["folder"])
        print(f"{model} {target}: {'cached' if m.get('cached') else f'{time.perf_counter() - t0:.0f} s'}", flush=True)
    return folders


def nncf_defaults(model: str, fp32_folder: Path, args) -> Path:
    """NNCF's default quantization of edgeseg's openvino-fp32 IR (constant-first MatMuls ignored: see module doc)."""
    import nncf
    import openvino as ov

    from edgeseg.backends.openvino.int8 import constant_first_matmuls
    from edgeseg.commands.evaluate import load_model
    from edgeseg.data.transforms import parse_size
    from edgeseg.quantize.calibration import select_calibration

    out = args.out / f"{model}-nncf-defaults-{args.size}" / "model.xml"
    if out.is_file():
        return out
    fp32 = ov.Core().read_model(str(fp32_folder / "model.xml"))
    spec = load_model(model, "camvid", None, None).spec
    calib = select_calibration(Path(args.data), spec, 64, "minmax", holdout=0).inputs(parse_size(args.size))
    q = nncf.quantize(
        fp32,
        nncf.Dataset([x.numpy() for x in calib]),
        subset_size=len(calib),
        ignored_scope=nncf.IgnoredScope(names=constant_first_matmuls(fp32)),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(q, str(out))
    return out


class OpenVinoConfig:
    """A configuration that is not an edgeseg artifact: an IR compiled with a given precision hint."""

    def __init__(self, xml: Path, hint_precision: str, note: str):
        self.xml, self.hint_precision, self.note = xml, hint_precision, note

    def load(self, threads: int):
        from edgeseg.backends.openvino.runtime import OpenVinoModel

        model = OpenVinoModel(self.xml, self.hint_precision, threads)
        return model, f"OpenVINO CPU plugin ({self.note}; hint {model.effective['INFERENCE_PRECISION_HINT']})"


def open_config(cfg, threads: int):
    """(predictor, timing call, runtime) of an artifact folder or an OpenVinoConfig."""
    import numpy as np
    import torch

    if isinstance(cfg, OpenVinoConfig):
        model, runtime = cfg.load(threads)
        x = torch.from_numpy(np.random.default_rng(0).standard_normal(model.input_shape).astype(np.float32))
        return model, model.timing_call(x), runtime
    art = load_artifact(cfg, threads=threads)
    return art.run, inference_call(art), art.runtime


def miou_of(cfg, args, spec) -> float:
    from edgeseg.data.datasets import load_split
    from edgeseg.data.transforms import parse_size
    from edgeseg.eval.evaluate import evaluate_arrays

    if not isinstance(cfg, OpenVinoConfig):
        return evaluate_cmd.evaluate(None, None, None, args.data, artifact=cfg, threads=2)["miou"] * 100
    _, images, labels = load_split(Path(args.data), "val")
    predict, _, _ = open_config(cfg, 2)
    return evaluate_arrays(predict, images, labels, spec, "pad", parse_size(args.size)).miou * 100


def precision_of(name: str) -> str:
    if "int8" in name or "nncf" in name:
        return "int8"
    return "bf16" if "bf16" in name else "fp32"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["efficientvit-b0", "efficientvit-b1"])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--size", default="384x480")
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), help="edgeseg targets (tflite-fp32 always)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--other-int8-budget", type=float, default=None, help="tflite/onnx int8 budget (default: none)")
    ap.add_argument(
        "--openvino-int8-budget", type=float, default=0.5, help="openvino-int8 --max-miou-drop (-1: none, no search)"
    )
    ap.add_argument("--out", type=Path, default=Path("out/openvino-table"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--export-only", action="store_true", help="build the artifacts and stop (warm the cache)")
    args = ap.parse_args()
    args.targets = [BASELINE] + [t for t in args.targets if t != BASELINE]
    if args.openvino_int8_budget < 0:
        args.openvino_int8_budget = None
    started = provenance.start()
    from edgeseg.commands.evaluate import load_model
    from edgeseg.estimate.graph import graph_cost

    doc = {"models": {}, "peak_per_core": PEAK_PER_CORE, "size": args.size, "rounds": args.rounds}
    doc["settings"] = {
        "runs": args.runs,
        "warmup": args.warmup,
        "threads": args.threads,
        "tflite_onnx_int8_max_miou_drop": args.other_int8_budget,
        "openvino_int8_max_miou_drop": args.openvino_int8_budget,
        "calib_size": 64,
    }
    for model in args.models:
        folders = export_all(model, args)
        configs = dict(folders)
        if "openvino-int8" in folders:
            configs["openvino-int8 IR, float rest bf16"] = OpenVinoConfig(
                folders["openvino-int8"] / "model.xml", "bf16", "edgeseg openvino-int8 IR"
            )
        configs["nncf int8 defaults"] = OpenVinoConfig(
            nncf_defaults(model, folders["openvino-fp32"], args), "bf16", "NNCF defaults"
        )
        if args.export_only:
            continue
        onnx_fp32 = args.out / f"{model}-camvid-onnx-fp32-{args.size}" / "model.onnx"
        flops = graph_cost(onnx_fp32, "onnxruntime").flops
        spec = load_model(model, "camvid", None, None).spec
        rows = {name: {"precision": precision_of(name)} for name in configs}
        for name, cfg in configs.items():
            rows[name]["miou"] = miou_of(cfg, args, spec)
            print(f"{model} {name}: val mIoU {rows[name]['miou']:.2f}", flush=True)
        for threads in args.threads:
            opened = {name: open_config(cfg, threads) for name, cfg in configs.items()}
            load_before = os.getloadavg()
            samples = interleave([o[1] for o in opened.values()], args.runs, args.warmup, args.rounds)
            load_after = os.getloadavg()
            per_round = {name: [statistics.median(r[i]) for r in samples] for i, name in enumerate(opened)}
            for name in opened:
                ms = statistics.median(per_round[name])
                ratios = [b / m for b, m in zip(per_round[BASELINE], per_round[name])]
                gops = flops / (ms * 1e-3) / 1e9
                rows[name][f"t{threads}"] = {
                    "ms": ms,
                    "rounds_ms": per_round[name],
                    "vs_tflite_fp32": statistics.median(ratios),
                    "vs_range": [min(ratios), max(ratios)],
                    "gops": gops,
                    "peak_fraction": {p: gops / (v * threads) for p, v in PEAK_PER_CORE.items()},
                    "runtime": opened[name][2],
                    "load_average": [load_before, load_after],
                }
                print(f"{model} {threads}t {name}: {ms:.2f} ms, {statistics.median(ratios):.2f}x", flush=True)
            del opened
        doc["models"][model] = {"flops": flops, "rows": rows}
    if args.json and not args.export_only:
        doc["provenance"] = provenance.finish(started)
        atomic_write_bytes(args.json, json.dumps(doc, indent=2).encode())


if __name__ == "__main__":
    main()
