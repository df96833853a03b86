"""Pipeline functions: what each CLI command does, without the terminal.

The layers read top-down: ``cli`` -> ``pipeline`` -> models / data / eval / train / rewrite / exporters /
runtimes / lint (quantize and bench come with their issues). Nothing below reaches up here. Progress is
reported through plain callbacks so the CLI can draw rich bars and tests can run silently.
"""

from __future__ import annotations

import dataclasses
import io
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgeseg.data.datasets import DATASETS, DatasetSpec, list_images, list_split, load_split, read_image
from edgeseg.data.transforms import parse_size
from edgeseg.errors import EdgesegError
from edgeseg.eval.evaluate import evaluate_arrays, plan_for, predict_label_map, torch_predictor
from edgeseg.io import atomic_write_bytes, validation_problems
from edgeseg.models import weights as weights_mod
from edgeseg.models.registry import DEFAULT_INPUT, MODELS, count_macs, count_params, create_model, resolve_model_name
from edgeseg.runtimes import read_manifest
from edgeseg.train.trainer import TrainConfig, TrainResult
from edgeseg.train.trainer import train as run_training

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLE_DATA = PACKAGE_DIR / "assets" / "sample" / "camvid"

Progress = Callable[..., None]


@dataclass
class LoadedModel:
    name: str
    dataset: str
    spec: DatasetSpec
    model: torch.nn.Module
    weights: weights_mod.WeightsSource

    def weights_info(self) -> dict:
        w = self.weights
        return {"path": str(w.path), "tag": w.tag, "sha256": w.sha256}


def load_model(model: str, dataset: str | None, weights: str | None) -> LoadedModel:
    """Build a registered model and load weights strictly (a registry tag such as ``camvid``, or a file)."""
    name, dataset = resolve_model_name(model, dataset)
    if not weights:
        tags = ", ".join(weights_mod.registered_tags(name)) or "none shipped"
        raise EdgesegError(f"--weights is required: a .pt state dict or a registered tag for {name} ({tags})")
    source = weights_mod.resolve_weights(name, weights)
    net, spec = create_model(name, dataset)
    weights_mod.load_weights(net, source)
    return LoadedModel(name, dataset, spec, net.eval(), source)


def _parse_optional_size(size: str | None) -> tuple[int, int] | None:
    return parse_size(size) if size else None


@dataclass
class _Source:
    """What eval/predict run: a PyTorch model or an exported artifact, behind one predictor call."""

    predict: Callable
    spec: DatasetSpec
    fit: str | None  # None: fixed-size artifact (pad when the image fits, else resize)
    size: tuple[int, int] | None
    outputs_labels: bool
    info: dict


def _open_source(
    model: str | None,
    dataset: str | None,
    weights: str | None,
    artifact: Path | None,
    fit: str,
    size: str | None,
    upsample: str | None,
    threads: int | None,
) -> _Source:
    if threads:
        torch.set_num_threads(threads)
    if artifact is not None:
        if model or weights or upsample:
            raise EdgesegError("pass either --artifact or --model/--weights/--upsample, not both")
        from edgeseg.runtimes import load_artifact

        art = load_artifact(Path(artifact), threads)
        m = art.manifest
        if size and parse_size(size) != art.input_size:
            raise EdgesegError(
                f"artifact {art.path} has a static input {art.input_size[0]}x{art.input_size[1]}; "
                f"drop --size or export at {size}"
            )
        info = {
            "model": m["model"],
            "dataset": m["dataset"],
            "runtime": art.runtime,
            "target": m["target"],
            "artifact": {"path": str(art.path), "sha256": m["sha256"]},
            "weights": m["weights"],
        }
        return _Source(art.run, DATASETS[m["dataset"]], None, art.input_size, art.outputs_labels, info)
    if not model:
        raise EdgesegError("pass --model (with --weights) or --artifact")
    loaded = load_model(model, dataset, weights)
    net = loaded.model
    if upsample is not None:
        from edgeseg.rewrite import apply_rewrites

        if upsample not in UPSAMPLE_REWRITES:
            raise EdgesegError(f"unknown --upsample {upsample!r}: use {', '.join(UPSAMPLE_REWRITES)}")
        _check_upsample_applies(loaded.name, upsample, default=None)
        net, _ = apply_rewrites(net, [UPSAMPLE_REWRITES[upsample]])
    info = {
        "model": loaded.name,
        "dataset": loaded.dataset,
        "runtime": "pytorch",
        "upsample": upsample or _reference_upsample(loaded.name),
        "weights": loaded.weights_info(),
    }
    return _Source(torch_predictor(net), loaded.spec, fit, _parse_optional_size(size), False, info)


def evaluate(
    model: str | None,
    dataset: str | None,
    weights: str | None,
    data: Path,
    split: str = "val",
    fit: str = "pad",
    size: str | None = None,
    limit: int | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    upsample: str | None = None,
    artifact: Path | None = None,
) -> dict:
    """mIoU, pixel accuracy and per-class IoU over a labelled split, of a model (optionally with a deploy head
    ``upsample`` rewrite: ``bilinear`` measures what the approximation costs) or of an exported ``artifact`` run
    with its runtime here; returns the JSON report."""
    src = _open_source(model, dataset, weights, artifact, fit, size, upsample, threads)
    samples, images, labels = load_split(Path(data), split)
    if limit:
        samples, images, labels = samples[:limit], images[:limit], labels[:limit]
    fit_plan = plan_for(images[0], src.fit, src.size)
    report = progress or (lambda *a, **k: None)
    report("start", total=len(images), fit=fit_plan.describe())
    t0 = time.perf_counter()
    metrics = evaluate_arrays(
        src.predict,
        images,
        labels,
        src.spec,
        src.fit,
        src.size,
        on_step=lambda: report("advance"),
        outputs_labels=src.outputs_labels,
    )
    seconds = time.perf_counter() - t0
    return {
        **src.info,
        "data": str(data),
        "split": split,
        "images": len(images),
        "input": fit_plan.describe(),
        **metrics.as_dict(src.spec.classes),
        "seconds": seconds,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
    }


def colorize(labels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: spec.num_classes] = np.array(spec.palette, dtype=np.uint8)
    return palette[labels]


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def predict(
    model: str | None,
    dataset: str | None,
    weights: str | None,
    images: Path,
    out: Path,
    overlay: bool = False,
    fit: str = "pad",
    size: str | None = None,
    progress: Progress | None = None,
    artifact: Path | None = None,
) -> list[Path]:
    """One 8-bit class-index PNG per image (same stem and size as the input) in ``out``; with ``overlay``, a colour
    overlay in ``out/overlay``. Runs a model or an exported artifact. Each file is written atomically."""
    src = _open_source(model, dataset, weights, artifact, fit, size, None, None)
    files = list_images(Path(images))
    report = progress or (lambda *a, **k: None)
    report("start", total=len(files))
    out = Path(out)
    written = []
    for path in files:
        image = read_image(path)
        plan = plan_for(image, src.fit, src.size)
        labels = predict_label_map(src.predict, image, plan, src.outputs_labels).to(torch.uint8).numpy()
        target = out / f"{path.stem}.png"
        atomic_write_bytes(target, _png_bytes(labels))
        written.append(target)
        if overlay:
            blend = (0.5 * image + 0.5 * colorize(labels, src.spec)).astype(np.uint8)
            atomic_write_bytes(out / "overlay" / f"{path.stem}.png", _png_bytes(blend))
        report("advance", file=path.name, input=plan.describe())
    return written


def models_table(size: str | None = None) -> list[dict]:
    """Every registered model x dataset: classes, params and GMACs at the dataset's default (or given) size."""
    rows = []
    fixed = _parse_optional_size(size)
    for name, entry in MODELS.items():
        tags = weights_mod.registered_tags(name)
        for dataset in entry.datasets:
            spec = DATASETS[dataset]
            with torch.device("meta"):
                params = count_params(entry.build(dataset, spec.num_classes))
            input_size = fixed or DEFAULT_INPUT[dataset]
            rows.append(
                {
                    "model": name,
                    "dataset": dataset,
                    "classes": spec.num_classes,
                    "params_m": params / 1e6,
                    "input": f"{input_size[0]}x{input_size[1]}",
                    "gmacs": count_macs(name, dataset, input_size) / 1e9,
                    "weights": ", ".join(t for t, rec in tags.items() if rec.get("dataset") == dataset),
                }
            )
    return rows


def train(cfg: TrainConfig, progress: Progress | None = None, resume: bool = False) -> TrainResult:
    resolve_model_name(cfg.model, cfg.dataset)  # fail fast on a bad name, before loading data
    return run_training(cfg, progress=progress, resume=resume)


def publish_weights(run: Path, tag: str, command: str | None = None, hardware: str | None = None) -> dict:
    """Register ``run/best.pt`` as shipped weights: fp16 file + index entry with mIoU, epochs, command, hash.

    The recorded val mIoU is measured again on the published fp16 file (not copied from training), so
    ``edgeseg eval --weights TAG`` reproduces it.
    """
    run = Path(run)
    log_path = run / "train.json"
    if not log_path.is_file() or not (run / "best.pt").is_file():
        raise EdgesegError(f"{run} is not a finished training run (needs best.pt and train.json)")
    log = json.loads(log_path.read_text())
    cfg = log["config"]
    model_name, dataset = resolve_model_name(cfg["model"], cfg["dataset"])
    curve = [
        {"epoch": h["epoch"], "loss": round(h["loss"], 4), "val_miou": round(h["val_miou"], 4)}
        for h in log["history"]
        if "val_miou" in h
    ]
    record = {
        "dataset": dataset,
        "epochs": len(log["history"]),
        "best_epoch": log["best_epoch"],
        "command": command or _train_command(cfg),
        "train_config": cfg,
        "train_seconds": round(sum(h["seconds"] for h in log["history"]), 1),  # training steps; evals excluded
        "hardware": hardware
        or f"{platform.processor() or platform.machine()}, {log['threads']} threads, {log['device']}",
        "curve": curve,
    }
    target = weights_mod.publish(run / "best.pt", model_name, tag, record)
    result = evaluate(model_name, dataset, tag, Path(cfg["data"]), split=cfg["val_split"])
    record = weights_mod.update_record(
        model_name,
        tag,
        val_miou=result["miou"],
        val_split=cfg["val_split"],
        val_pixel_accuracy=result["pixel_accuracy"],
        val_iou=result["iou"],
    )
    return {"file": str(target), **record}


RARE_CAMVID_CLASSES = ("pole", "sign", "pedestrian", "bicyclist")


def shipped_weights_rows() -> list[dict]:
    """One row per shipped weights file: what the README table and ``edgeseg weights list`` show.

    Every number comes from the registry (measured on the published fp16 file at publish time).
    """
    rows = []
    for model_name, tags in weights_mod.read_index().items():
        for tag, rec in tags.items():
            spec = DATASETS[rec["dataset"]]
            iou = rec.get("val_iou") or {}  # class name -> IoU
            rows.append(
                {
                    "model": model_name,
                    "tag": tag,
                    "val_miou": rec.get("val_miou"),
                    "rare_iou": {c: iou.get(c) for c in RARE_CAMVID_CLASSES if c in spec.classes},
                    "epochs": rec["epochs"],
                    "best_epoch": rec.get("best_epoch"),
                    "train_minutes": rec["train_seconds"] / 60,
                    "hardware": rec["hardware"],
                    "file": rec["file"],
                    "bytes": rec.get("bytes"),
                    "sha256": rec["sha256"],
                }
            )
    return rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def shipped_weights_markdown() -> str:
    """The README's shipped-weights table, generated from the registry (a test keeps the README in sync)."""
    lines = [
        "| model | tag | val mIoU | pole | sign | pedestrian | bicyclist | epochs (best) | training time | hardware |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in shipped_weights_rows():
        rare = [_pct(r["rare_iou"].get(c)) for c in RARE_CAMVID_CLASSES]
        lines.append(
            f"| {r['model']} | {r['tag']} | {_pct(r['val_miou'])} | " + " | ".join(rare) + " | "
            f"{r['epochs']} ({r['best_epoch']}) | {r['train_minutes']:.0f} min | {r['hardware']} |"
        )
    return "\n".join(lines)


def _train_command(cfg: dict) -> str:
    return (
        f"edgeseg train --model {cfg['model']} --dataset {cfg['dataset']} --data {cfg['data']} "
        f"--epochs {cfg['epochs']} --batch-size {cfg['batch_size']} --crop {cfg['crop'][0]}x{cfg['crop'][1]} "
        f"--lr {cfg['lr']} "
        + (f"--warmup-epochs {cfg['warmup_epochs']} " if cfg.get("warmup_epochs", 3.0) != 3.0 else "")
        + f"--loss {cfg['loss']} --eval-every {cfg['eval_every']} --seed {cfg['seed']} "
        + (f"--threads {cfg['threads']} " if cfg.get("threads") else "")
        + f"--out {cfg['out']}"
    )


# --------------------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------------------


def _package_versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = "not installed"
    return out


def _require_packages(target, *modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise EdgesegError(f"target {target.name} needs {', '.join(missing)}: pip install 'edgeseg[{target.extra}]'")


# INT8 budget: mIoU points lost vs fp32 on HOLDOUT_IMAGES train images that calibration did not use.
DEFAULT_MAX_MIOU_DROP = 0.5
HOLDOUT_IMAGES = 32  # 16 was too noisy to hold B1 tflite-int8 to 0.5: it said 0.48 where val said 0.51
# how each format's int8 meets --max-miou-drop; part of the export and sweep cache keys, so artifacts built
# before a format gained its search are rebuilt
INT8_SEARCH = {
    "onnx": "per-layer search (ORT QDQ)",
    "tensorrt": "per-layer search (ORT QDQ)",
    "tflite": "per-layer search (PT2E switches)",
    "coreml": "held-out check only",
}

UPSAMPLE_REWRITES = {
    "matmul": "bicubic-as-matmul",
    "conv": "bicubic-as-conv",
    "resize": "upsample-fp32",
    "bilinear": "bicubic-to-bilinear",
}
# Exact bicubic as two matmuls: faster than the conv form in TFLite (no layout transposes) and ONNX Runtime, same
# numbers (README "Export").
DEFAULT_UPSAMPLE = "matmul"


def target_rewrites(model_name: str, tgt, upsample: str = DEFAULT_UPSAMPLE) -> tuple[str, ...]:
    """The rewrites ``export`` applies for target ``tgt``: the target's, for this model's family (EfficientViT: plus
    its head upsampling)."""
    from edgeseg.rewrite import rewrites_for

    return rewrites_for(tuple(tgt.rewrites) + (UPSAMPLE_REWRITES[upsample],), MODELS[model_name].family)


def _has_upsample_choice(model_name: str) -> bool:
    """Whether ``--upsample`` means anything for the model: only EfficientViT's head resizes bicubic."""
    from edgeseg.rewrite import rewrites_for

    return bool(rewrites_for(tuple(UPSAMPLE_REWRITES.values()), MODELS[model_name].family))


def _reference_upsample(model_name: str) -> str:
    return "reference (bicubic resize)" if _has_upsample_choice(model_name) else "reference (bilinear resize)"


def _check_upsample_applies(model_name: str, upsample: str | None, default: str | None) -> None:
    if upsample != default and not _has_upsample_choice(model_name):
        raise EdgesegError(
            f"--upsample {upsample} applies to EfficientViT's bicubic head; {model_name}'s head already resizes "
            "bilinear: drop --upsample"
        )


@dataclass
class _Built:
    info: dict
    runner: object | None  # a Predictor that runs the artifact here, for parity; None where it cannot run here
    parity_runtime: str  # what measured parity, or why nothing could
    lint: object  # edgeseg.lint.LintReport


@dataclass
class _Int8Request:
    calib: object  # edgeseg.quantize.calibration.CalibrationSet (with its held-out slice)
    max_miou_drop: float | None  # mIoU points on the held-out slice; None: quantize all the policy allows
    spec: DatasetSpec
    progress: Callable[[str], None] | None = None


def _build_artifact(
    tgt, module, example, tmp: Path, output_name: str, opset: int, int8: _Int8Request | None = None
) -> tuple[str, _Built]:
    """Export ``module`` for ``tgt`` into ``tmp``; return the model file name and what was built.

    INT8 targets take ``int8``: the fp32 graph is exported, then quantized with the backend's attention-aware
    policy and calibration set; with a budget, ONNX and TFLite graphs go through the mixed-precision search and
    Core ML's is checked against it."""
    from edgeseg import lint as lint_mod

    if tgt.format in ("onnx", "tensorrt"):
        from edgeseg.exporters.onnx import export_onnx
        from edgeseg.runtimes.onnxruntime import OnnxRuntimeModel

        file = "model.onnx"
        if tgt.precision == "int8":
            fp32 = tmp / "model.fp32.onnx"
            info = export_onnx(module, example, fp32, opset, output_name)
            info["quantization"] = _quantize_onnx_artifact(tgt, fp32, tmp / file, int8, tuple(example.shape[-2:]))
            fp32.unlink()
        else:
            info = export_onnx(module, example, tmp / file, opset, output_name)
        built = _Built(
            info,
            OnnxRuntimeModel(tmp / file),
            f"onnxruntime {_package_versions('onnxruntime')['onnxruntime']} (CPU)",
            lint_mod.lint_onnx(tmp / file, tgt.rules),
        )
        if tgt.format == "tensorrt":
            from edgeseg.exporters.tensorrt import build_engine, trtexec_command
            from edgeseg.runtimes.tensorrt import tensorrt_status

            ok, why = tensorrt_status()
            command = trtexec_command(file, "model.engine")
            (tmp / "build_engine.sh").write_text(
                f'#!/bin/sh\n# strongly typed build of the TensorRT-ready ONNX\ncd "$(dirname "$0")" && {command}\n'
            )
            built.info["trtexec"] = command
            if ok:
                built.info.update(build_engine(tmp / file, tmp / "model.engine"))
            else:
                built.info["engine"] = None
                built.info["engine_not_built"] = why
            built.parity_runtime += " on the TensorRT-ready ONNX (engine parity needs TensorRT + CUDA)"
        return file, built
    if tgt.format == "tflite":
        from edgeseg.exporters.tflite import export_tflite
        from edgeseg.runtimes.litert import LiteRtModel

        file = "model.tflite"
        size = tuple(example.shape[-2:])
        calib_inputs = int8.calib.inputs(size) if tgt.precision == "int8" else None
        searched, scorer, choose_float = [], None, None
        if tgt.precision == "int8" and int8.max_miou_drop is not None:
            from edgeseg.quantize.search import search_pt2e

            scorer = _holdout_scorer(int8, module, size)

            def choose_float(switches, convert) -> list[str]:
                realize = lambda names: LiteRtModel(convert(names))  # noqa: E731
                searched.append(search_pt2e(switches, scorer, int8.max_miou_drop, realize, int8.progress))
                return searched[0].nodes_to_exclude

        info = export_tflite(
            module, example, tmp / file, tgt.precision, output_name == "logits", calib_inputs, choose_float
        )
        runner = LiteRtModel(tmp / file)
        if tgt.precision == "int8":
            from edgeseg.quantize.policy import POLICIES

            info["quantization"] = {
                "policy": POLICIES["tflite"].as_dict(),
                "int8_nodes": runner.int8_ops(),
                "mixed_precision": None if scorer is None else _pt2e_search_report(searched[0]),
            }
        return file, _Built(
            info,
            runner,
            f"ai-edge-litert {_package_versions('ai-edge-litert')['ai-edge-litert']} (XNNPACK)",
            lint_mod.lint_tflite(tmp / file, tgt.rules),
        )
    if tgt.format == "coreml":
        from edgeseg.exporters.coreml import export_coreml
        from edgeseg.runtimes.coreml import CoreMLModel, coreml_runtime_available

        file = "model.mlpackage"
        calib_inputs = int8.calib.inputs(tuple(example.shape[-2:])) if tgt.precision == "int8" else None
        info, mlmodel, simulated = export_coreml(module, example, tmp / file, tgt.precision, output_name, calib_inputs)
        runner, note = None, "none: Core ML prediction needs macOS"
        if coreml_runtime_available():
            runner, note = CoreMLModel(tmp / file, output_name), "coremltools predict (macOS)"
        elif simulated is not None:
            # the int8 numerics Core ML is given, run here by PyTorch: not Core ML itself, and labelled so
            runner = torch_predictor(simulated)
            note = "simulated: the PT2E int8 graph converted to Core ML, run by PyTorch (Core ML needs macOS)"
        if tgt.precision == "int8":
            from edgeseg.quantize.policy import POLICIES

            info["quantization"] = {
                "policy": POLICIES["coreml"].as_dict(),
                "int8_nodes": info.pop("int8_ops"),
                "mixed_precision": None
                if int8.max_miou_drop is None or runner is None
                else _holdout_check(int8, runner, tuple(example.shape[-2:]), module),
            }
        return file, _Built(info, runner, note, lint_mod.lint_coreml(mlmodel, tgt.rules))
    raise EdgesegError(f"no exporter for format {tgt.format}")


def _holdout_scorer(int8: _Int8Request, reference, size: tuple[int, int]):
    from edgeseg.quantize.search import HoldoutScorer

    c = int8.calib
    return HoldoutScorer(
        reference, c.holdout_images, c.holdout_labels, size, int8.spec.num_classes, int8.spec.ignore_index
    )


def _quantize_onnx_artifact(tgt, fp32: Path, out: Path, int8: _Int8Request, size: tuple[int, int]) -> dict:
    """QDQ int8 with the target's policy; with a budget, through the mixed-precision search."""
    from edgeseg.quantize.onnx_int8 import prepare_onnx, quantization_facts, quantize_onnx
    from edgeseg.quantize.policy import POLICIES
    from edgeseg.quantize.search import search_onnx
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeModel

    policy, calib = POLICIES[tgt.format], int8.calib
    inputs = calib.inputs(size)
    if int8.max_miou_drop is None:
        return {"policy": policy.as_dict(), **quantize_onnx(fp32, out, inputs, policy, calib.method)}
    prepared = prepare_onnx(fp32, out.with_name("model.prep.onnx"))
    try:
        scorer = _holdout_scorer(int8, OnnxRuntimeModel(fp32), size)
        result = search_onnx(
            prepared, out, inputs, policy, calib.method, scorer, OnnxRuntimeModel, int8.max_miou_drop, int8.progress
        )
    finally:
        prepared.unlink(missing_ok=True)
    return {
        "policy": policy.as_dict(),
        **quantization_facts(out, calib.method, result.nodes_to_exclude),
        "mixed_precision": result.as_dict(),
    }


def _pt2e_search_report(result) -> dict:
    return {
        **result.as_dict(),
        "within_budget": result.drop_final <= result.budget,
        "sensitivity_scored_on": "the PT2E int8 graph run by PyTorch (the numerics the converter is given)",
        "probes_scored_on": "converted .tflite artifacts run by ai-edge-litert; the last is this artifact",
    }


def _holdout_check(int8: _Int8Request, runner, size: tuple[int, int], reference) -> dict:
    """Core ML int8 has no per-layer search yet: measure its held-out drop against the budget and say so."""
    scorer = _holdout_scorer(int8, reference, size)
    miou, snr = scorer.score(runner)
    drop = scorer.miou_reference - miou
    return {
        "budget": int8.max_miou_drop,
        "holdout_images": len(scorer.inputs),
        "miou_fp32": scorer.miou_reference,
        "miou_final": miou,
        "drop_final": round(drop, 3),
        "snr_db": round(snr, 2),
        "within_budget": drop <= int8.max_miou_drop,
        "float_layers": [],
        "note": "per-layer search runs for ONNX, TensorRT and TFLite int8; Core ML int8 is budget-checked only",
    }


_TARGET_PACKAGES = {
    "onnx": ("onnx", "onnxruntime", "onnxslim", "onnxscript"),
    "tensorrt": ("onnx", "onnxruntime", "onnxslim", "onnxscript"),
    "tflite": ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"),
    "coreml": ("coremltools",),
}
# INT8 targets that quantize with PT2E need litert-torch's quantizer as well
_INT8_PACKAGES = {"coreml": ("litert_torch", "torchao")}


def export(
    model: str,
    dataset: str | None,
    weights: str | None,
    target: str,
    size: str | None = None,
    out: Path = Path("artifacts"),
    with_argmax: bool = False,
    opset: int = 18,
    parity_data: Path | None = None,
    parity_images: int = 20,
    force: bool = False,
    upsample: str = DEFAULT_UPSAMPLE,
    calib_data: Path | None = None,
    calib_size: int = 64,
    calib_method: str = "percentile",
    max_miou_drop: float | None = DEFAULT_MAX_MIOU_DROP,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Rewrite, export, check parity against the PyTorch reference on real images, lint; returns the manifest.

    The artifact folder ``out/<model>-<dataset>-<target>-<HxW>[-argmax]`` holds the model file, ``manifest.json``
    and ``lint.json``. It is built in a temporary folder and renamed, so a failed export leaves nothing behind.
    ``upsample`` picks the head's upsampling: ``matmul`` (exact bicubic as two matmuls, default), ``conv`` (exact
    bicubic as pad + depthwise convolution), ``resize`` (the bicubic Resize op) or ``bilinear`` (approximation;
    costs mIoU). INT8 targets calibrate on ``calib_data``; with
    ``max_miou_drop`` (mIoU points on a held-out slice) ONNX and TFLite graphs keep the fewest layers float that
    meet it.
    """
    from edgeseg import __version__
    from edgeseg.data.transforms import check_input_size
    from edgeseg.eval.parity import compare
    from edgeseg.exporters.artifact import (
        artifact_bytes,
        artifact_sha256,
        cache_key,
        cached_manifest,
        staging,
        write_manifest,
    )
    from edgeseg.io import sha256_file
    from edgeseg.rewrite import DeployWrapper, apply_rewrites
    from edgeseg.targets import get_target, require_exporter

    tgt = require_exporter(get_target(target))
    if upsample not in UPSAMPLE_REWRITES:
        raise EdgesegError(f"unknown --upsample {upsample!r}: use {', '.join(UPSAMPLE_REWRITES)}")
    _require_packages(
        tgt, *_TARGET_PACKAGES[tgt.format], *(_INT8_PACKAGES.get(tgt.format, ()) if tgt.precision == "int8" else ())
    )
    if opset < 17:
        raise EdgesegError(f"--opset {opset} is too old: use 17 or newer (18 is the default)")
    loaded = load_model(model, dataset, weights)
    _check_upsample_applies(loaded.name, upsample, default=DEFAULT_UPSAMPLE)
    input_size = check_input_size(parse_size(size)) if size else DEFAULT_INPUT[loaded.dataset]
    h, w = input_size
    suffix = ("-argmax" if with_argmax else "") + ("" if upsample == DEFAULT_UPSAMPLE else f"-{upsample}")
    if tgt.precision == "int8" and calib_method != "percentile":
        suffix += f"-{calib_method}"  # artifacts calibrated differently live side by side
    folder = Path(out) / f"{loaded.name}-{loaded.dataset}-{tgt.name}-{h}x{w}{suffix}"
    weights_sha = loaded.weights.sha256 or sha256_file(loaded.weights.path)
    parity_root = Path(parity_data) if parity_data else SAMPLE_DATA
    rewrites = target_rewrites(loaded.name, tgt, upsample)
    versions = _package_versions("torch", *(p.replace("_", "-") for p in _TARGET_PACKAGES[tgt.format]))
    calib = None
    if tgt.precision == "int8":
        from edgeseg.quantize.calibration import select_calibration

        if calib_data is None:
            raise EdgesegError(
                f"{tgt.name} needs calibration images: pass --calib-data DIR with train/images and train/labels "
                "(e.g. ../shared/data/camvid)"
            )
        if tgt.format in ("tflite", "coreml") and calib_method != "percentile":
            raise EdgesegError(
                f"{tgt.name} calibrates with PT2E's histogram observer: --calib-method is for onnx-int8 and trt-int8"
            )
        if with_argmax and max_miou_drop is not None:
            raise EdgesegError(
                "the mixed-precision search scores logits: export INT8 without --with-argmax, or pass "
                "--max-miou-drop off"
            )
        holdout = HOLDOUT_IMAGES if max_miou_drop is not None else 0
        calib = select_calibration(Path(calib_data), loaded.spec, calib_size, calib_method, holdout=holdout)
        if tgt.format in ("tflite", "coreml"):
            calib = dataclasses.replace(calib, method="histogram (PT2E observer)")
    key = cache_key(
        weights=weights_sha,
        model=loaded.name,
        dataset=loaded.dataset,
        target=tgt.name,
        size=input_size,
        argmax=with_argmax,
        opset=opset,
        rewrites=rewrites,
        edgeseg=__version__,
        versions=versions,
        parity=(str(parity_root.resolve()), parity_images),
        calibration=None if calib is None else (calib.sha256, calib.method),
        max_miou_drop=None if calib is None else max_miou_drop,
        int8_search=None if calib is None or max_miou_drop is None else INT8_SEARCH[tgt.format],
    )
    if not force:
        cached = cached_manifest(folder, key)
        if cached is not None:
            return {**cached, "cached": True, "folder": str(folder)}

    _, images, labels = load_split(parity_root, "val")
    images, labels = images[:parity_images], labels[:parity_images]
    deploy, applied = apply_rewrites(loaded.model, rewrites)
    # fp16 targets other than TFLite/Core ML carry precision in the graph (strongly typed); TFLite and Core ML
    # take the fp32 graph and apply their own fp16 schemes with the attention core kept fp32.
    graph_fp16 = tgt.precision == "fp16" and tgt.format in ("onnx", "tensorrt")
    dtype = torch.float16 if graph_fp16 else torch.float32
    wrapper = DeployWrapper(deploy.to(dtype), dtype, with_argmax).eval()
    example = torch.zeros(1, 3, h, w)
    output_name = "labels" if with_argmax else "logits"

    stride = getattr(loaded.model, "output_stride", 8)  # logits stride: EfficientViT 8, LVT / SegFormer 4
    t0 = time.perf_counter()
    with staging(folder) as tmp:
        int8 = None if calib is None else _Int8Request(calib, max_miou_drop, loaded.spec, progress)
        file, built = _build_artifact(tgt, wrapper, example, tmp, output_name, opset, int8)
        export_seconds = time.perf_counter() - t0
        if built.runner is not None:
            parity = compare(
                torch_predictor(loaded.model),
                built.runner,
                images,
                input_size,
                with_argmax,
                labels,
                loaded.spec.num_classes,
                loaded.spec.ignore_index,
            ).as_dict()
        else:
            parity = {
                "images": 0,
                "max_abs_diff": None,
                "snr_db": None,
                "argmax_agreement": None,
                "miou_reference": None,
                "miou_candidate": None,
            }
        lint = built.lint
        file_path = tmp / file
        manifest = {
            "edgeseg": __version__,
            "model": loaded.name,
            "dataset": loaded.dataset,
            "classes": list(loaded.spec.classes),
            "weights": {**loaded.weights_info(), "sha256": weights_sha},
            "target": tgt.name,
            "format": tgt.format,
            "precision": tgt.precision,
            "runtime": tgt.runtime,
            "input": {
                "name": "image",
                "shape": [1, 3, h, w],
                "dtype": "float32",
                "preprocess": "RGB/255, ImageNet mean/std, pad bottom/right to the input size",
            },
            "output": (
                {"name": "labels", "shape": [1, h, w], "dtype": "int32"}
                if with_argmax
                else {
                    "name": "logits",
                    "shape": [1, loaded.spec.num_classes, h // stride, w // stride],
                    "dtype": "float32",
                }
            ),
            "rewrites": applied,
            "upsample": upsample if _has_upsample_choice(loaded.name) else _reference_upsample(loaded.name),
            **built.info,
            **({} if calib is None else {"calibration": calib.manifest()}),
            "parity": {
                "reference": "PyTorch fp32 (official numerics)",
                "runtime": built.parity_runtime,
                "data": str(parity_root),
                "split": "val",
                **parity,
            },
            "lint": {"rules": lint.rules, "clean": lint.clean, "errors": lint.errors, "warnings": lint.warnings},
            "export_seconds": round(export_seconds, 2),
            "versions": versions,
            "cache_key": key,
            "file": file,
            "sha256": artifact_sha256(file_path),
            "bytes": artifact_bytes(file_path),
        }
        write_manifest(tmp, manifest)
        (tmp / "lint.json").write_text(json.dumps(lint.as_dict(), indent=2) + "\n")
    return {**manifest, "cached": False, "folder": str(folder)}


def quantize(
    model: str,
    dataset: str | None,
    weights: str | None,
    target: str,
    calib_data: Path,
    calib_size: int = 64,
    calib_method: str = "percentile",
    max_miou_drop: float | None = DEFAULT_MAX_MIOU_DROP,
    **export_options,
) -> dict:
    """``export`` restricted to INT8 targets (what ``edgeseg quantize`` runs)."""
    from edgeseg.targets import get_target

    if get_target(target).precision != "int8":
        raise EdgesegError(f"{target} is not an INT8 target: use `edgeseg export` for it, or an *-int8 target here")
    return export(
        model,
        dataset,
        weights,
        target,
        calib_data=calib_data,
        calib_size=calib_size,
        calib_method=calib_method,
        max_miou_drop=max_miou_drop,
        **export_options,
    )


def profile(artifact: Path, threads: int = 2, runs: int = 20, warmup: int = 5) -> dict:
    """Per-kernel and per-op-type time of an exported artifact with its runtime here (``edgeseg.bench.opprofile``)."""
    from edgeseg.bench.opprofile import profile_artifact

    if threads < 1 or runs < 1 or warmup < 0:
        raise EdgesegError("--threads and --runs must be at least 1 and --warmup at least 0")
    folder, manifest = read_manifest(Path(artifact))
    report = profile_artifact(folder, manifest, threads, runs, warmup).as_dict()
    report["target"] = manifest["target"]
    return report


def lint(artifact: Path, target: str | None = None) -> dict:
    """Lint an .onnx / .tflite / .mlpackage (or an artifact folder) against a target's rule set (default: the
    manifest's target, else the file format's own)."""
    from edgeseg import lint as lint_mod
    from edgeseg.targets import get_target

    artifact = Path(artifact)
    if artifact.is_dir() and artifact.suffix != ".mlpackage":
        folder, manifest = read_manifest(artifact)
        target = target or manifest["target"]
        artifact = folder / manifest["file"]
    if not artifact.exists():
        raise EdgesegError(f"artifact not found: {artifact}")
    by_suffix = {
        ".onnx": ("onnx-fp32", lint_mod.lint_onnx),
        ".tflite": ("tflite-fp32", lint_mod.lint_tflite),
        ".mlpackage": ("coreml-fp32", lint_mod.lint_coreml),
    }
    if artifact.suffix not in by_suffix:
        raise EdgesegError(f"cannot lint {artifact.name}: expected .onnx, .tflite or .mlpackage")
    default_target, lint_fn = by_suffix[artifact.suffix]
    rules = get_target(target or default_target).rules
    if artifact.suffix != ".onnx" and rules != get_target(default_target).rules:
        raise EdgesegError(f"{artifact.suffix} files are linted with the {get_target(default_target).rules} rules")
    return {"artifact": str(artifact), **lint_fn(artifact, rules).as_dict()}


# --------------------------------------------------------------------------------------------------------------
# Bench on device profiles
# --------------------------------------------------------------------------------------------------------------

# Parity gate per precision (argmax agreement with the fp32 PyTorch reference on the parity images).
PARITY_MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.99, "int8": 0.95}


@dataclass
class RemoteOptions:
    """Command-line overrides of a profile's ``reach`` (None keeps the profile's value)."""

    host: str | None = None
    port: int | None = None
    known_hosts: Path | None = None
    identity: Path | None = None
    serial: str | None = None
    benchmark_model: str | None = None

    def apply(self, reach):
        update = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items() if v is not None}
        if self.host and reach.method == "none":
            raise EdgesegError(f"--host: this device is not reached over SSH ({reach.how or 'no way to run there'})")
        return reach.model_copy(update=update)


def _bench_entries(model, dataset, weights, targets, artifacts, profile) -> list[dict]:
    """What to bench: artifact folders given, or the targets (given, else the profile's preferred) to export."""
    from edgeseg.targets import get_target

    if artifacts:
        if model or weights or targets:
            raise EdgesegError("pass either --artifact or --model/--weights/--targets, not both")
        entries = []
        for path in artifacts:
            folder, m = read_manifest(Path(path))
            entries.append({"target": m["target"], "folder": folder, "manifest": m})
        return entries
    if not model:
        raise EdgesegError("pass --model (with --weights) or --artifact")
    names = targets or profile.targets
    for name in names:
        get_target(name)  # unknown names fail before anything runs
    return [{"target": name, "folder": None, "manifest": None} for name in names]


def _measurement(timing, runtime: str, machine: str, method: str, state: dict | None = None, command=None):
    from edgeseg.bench.report import Measurement, Stats

    return Measurement(
        machine=machine,
        runtime=runtime,
        method=method,
        stats=Stats.of(timing.stats),
        stop=timing.stop,
        state=state or {},
        command=command,
    )


def _would_be_command(profile, reach, entry_folder: str, tgt, plan, device_threads: int) -> str:
    from edgeseg.bench.adb import benchmark_model_command
    from edgeseg.bench.ssh import runner_command
    from edgeseg.bench.trtexec import trtexec_bench_command

    rerun = f"edgeseg bench --device {profile.name} --artifact {entry_folder}"
    if reach.method == "ssh":
        on_device = (
            trtexec_bench_command(reach.trtexec, "model.onnx")
            if tgt.format == "tensorrt"
            else runner_command(reach.python, reach.workdir, f"model{tgt.suffix}", 10, plan.max_runs, device_threads)
        )
        return f"{rerun} --host USER@HOST   # runs on the device: {on_device}"
    if reach.method == "adb":
        binary = reach.benchmark_model or "/data/local/tmp/benchmark_model"
        on_device = benchmark_model_command(
            binary,
            "/data/local/tmp/edgeseg/model.tflite",
            device_threads,
            reach.delegate,
            10,
            plan.max_runs,
            reach.cpu_mask,
        )
        return f"{rerun} --serial SERIAL   # runs on the phone: {on_device}"
    return reach.how or rerun


class _DeviceConnection:
    """The SSH session or adb transport to the profile's device, opened on first use; a failure to connect is
    kept as the reason the device column says 'not measured'."""

    def __init__(self, profile, reach):
        self.profile, self.reach = profile, reach
        self.session, self.transport, self.error, self.state = None, None, None, {}

    def ssh(self):
        from edgeseg.bench.ssh import SshSession, SshTarget, device_state

        if self.session is None and self.error is None:
            r = self.reach
            target = SshTarget(
                r.host,
                r.port,
                Path(r.known_hosts) if r.known_hosts else None,
                Path(r.identity) if r.identity else None,
                r.workdir,
            )
            try:
                self.session = SshSession(target).__enter__()
                self.state = device_state(self.session)
            except (EdgesegError, RuntimeError) as exc:
                self.error = str(exc)
                self.close()
        return self.session

    def adb(self):
        from edgeseg.bench.adb import AdbutilsTransport

        if self.transport is None and self.error is None:
            try:
                self.transport = AdbutilsTransport(self.reach.serial)
            except EdgesegError as exc:
                self.error = str(exc)
        return self.transport

    def close(self):
        if self.session is not None:
            session, self.session = self.session, None
            session.__exit__(None, None, None)


def _device_column(conn: _DeviceConnection, folder: Path, manifest: dict, tgt, plan, device_threads: int, command):
    """Measure on the profile's device, or say plainly why not (and what would measure it)."""
    from edgeseg.bench.report import DeviceColumn, Measurement, Stats

    profile, reach = conn.profile, conn.reach
    name = profile.name
    model_file = folder / manifest["file"]
    tag = f"{folder.name}-{manifest['sha256'][:8]}"
    if not profile.reachable():
        why = {
            "ssh": "no host configured (set reach.host in the profile or pass --host USER@HOST)",
            "adb": "no adb serial configured (set reach.serial in the profile or pass --serial)",
        }.get(reach.method, reach.how or "edgeseg cannot run there")
        if reach.method in ("ssh", "adb"):
            why = why.split(" (")[0]
        return DeviceColumn(device=name, note=f"not measured on {name}: {why}", command=command)
    if reach.method == "ssh":
        if tgt.format == "coreml":
            return DeviceColumn(device=name, note=f"not measured on {name}: Core ML runs on Apple devices only")
        session = conn.ssh()
        if session is None:
            return DeviceColumn(device=name, note=f"not measured on {name}: {conn.error}", command=command)
        from edgeseg.bench.ssh import bench_with_runner, bench_with_trtexec

        machine = f"{name} ({reach.host})"
        try:
            if tgt.format == "tensorrt":
                r = bench_with_trtexec(session, model_file, tag, reach.trtexec)
                m = Measurement(
                    machine=machine,
                    runtime=f"TensorRT {r['tensorrt'] or '(version not printed)'} via trtexec",
                    method="trtexec GPU compute time (--useCudaGraph --noDataTransfers --useSpinWait)",
                    stats=Stats.of(r["gpu_compute"]),
                    secondary={"end_to_end": Stats.of(r["end_to_end"])},
                    state=conn.state,
                    command=r["command"],
                )
            else:
                r = bench_with_runner(
                    session, model_file, tag, reach.python, plan.warmup, plan.max_runs, device_threads
                )
                m = Measurement(
                    machine=machine,
                    runtime=r["runtime"],
                    method=f"edgeseg runner on the device, {r['threads']} threads, fixed {r['stats'].n} runs",
                    stats=Stats.of(r["stats"]),
                    state={**conn.state, "runner_machine": r["remote_machine"]},
                    command=r["command"],
                )
        except RuntimeError as exc:
            return DeviceColumn(device=name, note=f"not measured on {name}: {exc}", command=command)
        return DeviceColumn(device=name, measured=m)
    if reach.method == "adb":
        if tgt.format != "tflite":
            return DeviceColumn(device=name, note=f"not measured on {name}: the adb path runs .tflite only")
        if not reach.benchmark_model:
            return DeviceColumn(
                device=name,
                note=f"not measured on {name}: no benchmark_model path (--benchmark-model)",
                command=command,
            )
        transport = conn.adb()
        if transport is None:
            return DeviceColumn(device=name, note=f"not measured on {name}: {conn.error}", command=command)
        from edgeseg.bench.adb import bench_over_adb

        try:
            r = bench_over_adb(
                transport,
                model_file,
                reach.benchmark_model,
                device_threads,
                reach.delegate,
                plan.warmup,
                plan.max_runs,
                reach.cpu_mask,
            )
        except RuntimeError as exc:
            return DeviceColumn(device=name, note=f"not measured on {name}: {exc}", command=command)
        m = Measurement(
            machine=f"{name} (adb {reach.serial})",
            runtime=r["runtime"],
            method="TFLite benchmark_model (mean/std; median only where the build prints it)",
            stats=Stats.of(r["stats"]),
            state=r["device_state"],
            command=r["command"],
        )
        return DeviceColumn(device=name, measured=m)
    return DeviceColumn(device=name, note=f"not measured on {name}: {reach.how}", command=command)


def _bench_estimate(profile, profiles: Path | None, folder: Path, manifest: dict):
    """(estimate, None) for an artifact on a device bench could not reach, or (None, why not)."""
    from edgeseg.estimate.roofline import estimate

    try:
        hw, notes = _estimator_data(profile, profiles, manifest["target"])
        cost, desc = _artifact_cost(folder, manifest)
    except EdgesegError as exc:
        return None, str(exc)
    except Exception as exc:  # an estimator failure is this column's note, not the end of the bench
        return None, f"estimate failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
    est = estimate(cost, hw, profile.name, manifest["target"], manifest["precision"], desc)
    return est.model_copy(update={"notes": notes}), None


def failure_reason(exc: BaseException, crashed: str = "export crashed") -> str:
    """A failure as the one-line reason a bench or sweep row carries: a user error's own message, or the first
    line of anything else behind ``crashed``."""
    if isinstance(exc, EdgesegError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return f"{crashed}: {type(exc).__name__}: {first}"


def failed_target_result(target: str, device: str, reason: str, model: str | None = None, size: str | None = None):
    from edgeseg.bench.report import DeviceColumn, TargetResult

    return TargetResult(
        target=target, model=model, size=size, status="failed", reasons=[reason], device=DeviceColumn(device=device)
    )


def artifact_runs_here(target: str) -> bool:
    """Whether this machine has the runtime to run an artifact of ``target`` (Core ML predicts on macOS only)."""
    from edgeseg.runtimes.coreml import coreml_runtime_available
    from edgeseg.targets import get_target

    return get_target(target).format != "coreml" or coreml_runtime_available()


def _node_stands_in(profile) -> str | None:
    """Why this machine does not look like the device it times for (a Ray node advertising a device), if so."""
    machine = platform.machine().lower()
    if profile.kind in ("jetson", "raspberry-pi") and machine not in ("aarch64", "arm64"):
        return (
            f"this node is {machine}, not the {profile.kind}'s aarch64: it stands in for {profile.name} "
            "(check which node advertises the resource)"
        )
    return None


def bench_artifact(
    folder: Path,
    manifest: dict,
    profile,
    conn: _DeviceConnection | None,
    *,
    miou: float | None,
    miou_images: int | None,
    plan,
    threads: int,
    profiles: Path | None = None,
    measure_here: bool = True,
    on_device_node: bool = False,
    progress: Progress | None = None,
):
    """One artifact on one device profile: the checks (lint, parity, mIoU floor, budget), latency here when
    ``measure_here`` (or the profile is this machine), and the device column: measured on the device (SSH / adb
    through ``conn``), or, with ``on_device_node``, in this process because it runs on the device (a Ray node that
    advertises it); else "not measured" with the would-be command and a labelled estimate."""
    from edgeseg.bench.host import machine_info
    from edgeseg.bench.host import measure_here as time_here
    from edgeseg.bench.report import ArtifactInfo, DeviceColumn, ParityInfo, TargetResult
    from edgeseg.targets import get_target

    report = progress or (lambda *a, **k: None)
    tgt = get_target(manifest["target"])
    folder = Path(folder)
    h, w = manifest["input"]["shape"][2:]
    reasons: list[str] = []
    p = manifest["parity"]
    parity = ParityInfo(
        images=p["images"],
        argmax_agreement=p["argmax_agreement"],
        max_abs_diff=p["max_abs_diff"],
        snr_db=p["snr_db"],
        runtime=p["runtime"],
    )
    lint_clean = manifest["lint"]["clean"]
    if not lint_clean:
        reasons.append(f"lint: {manifest['lint']['errors']} error(s) (edgeseg lint {folder})")
    gate = PARITY_MIN_AGREEMENT[tgt.precision]
    if p["argmax_agreement"] is not None and p["argmax_agreement"] < gate:
        reasons.append(f"parity: argmax agreement {100 * p['argmax_agreement']:.2f} % < {100 * gate:.1f} %")
    if miou is not None and miou < profile.miou_floor:
        reasons.append(f"mIoU {100 * miou:.2f} below the floor {100 * profile.miou_floor:.1f}")
    artifact = ArtifactInfo(
        folder=str(folder),
        file=manifest["file"],
        sha256=manifest["sha256"],
        bytes=manifest["bytes"],
        cached=bool(manifest.get("cached", True)),
        lint_clean=lint_clean,
    )
    runs_here = artifact_runs_here(tgt.name)
    device_threads = threads if profile.kind == "host" else profile.threads
    reach = profile.reach
    host_m = device_m = None
    if runs_here and (measure_here or profile.kind == "host" or on_device_node):
        here_threads = device_threads if on_device_node else threads
        info = machine_info(here_threads)
        report("target", target=tgt.name, step="latency here" if not on_device_node else f"on {profile.name}")
        timing, runtime, load = time_here(folder, here_threads, plan)
        if on_device_node:
            import socket

            machine = (
                f"Ray node {socket.gethostname()} advertising {profile.name} ({info['cpu']}, "
                f"{info['cpus_usable']} usable CPUs, {here_threads} threads)"
            )
            device_m = _measurement(timing, runtime, machine, "in-process timer on the device node", load)
        else:
            machine = f"this machine ({info['cpu']}, {info['cpus_usable']} usable CPUs, {threads} threads)"
            host_m = _measurement(
                timing, runtime, machine, "in-process timer around the runtime's inference call", load
            )
    would_be = _would_be_command(profile, reach, str(folder), tgt, plan, device_threads)
    if profile.kind == "host" and not on_device_node:
        device_col = (
            DeviceColumn(device=profile.name, measured=host_m)
            if host_m
            else DeviceColumn(device=profile.name, note=f"not measured on {profile.name}: {tgt.runtime}")
        )
    elif device_m is not None:
        device_col = DeviceColumn(device=profile.name, measured=device_m, note=_node_stands_in(profile))
    else:
        report("target", target=tgt.name, step=f"on {profile.name}")
        if conn is None:
            conn = _DeviceConnection(profile, reach)
        device_col = _device_column(conn, folder, manifest, tgt, plan, device_threads, would_be)
        if device_col.measured is None:
            report("target", target=tgt.name, step=f"estimate for {profile.name}")
            device_col.estimate, why = _bench_estimate(profile, profiles, folder, manifest)
            if why:
                device_col.note = f"{device_col.note}; no estimate: {why}" if device_col.note else why
    dm = device_col.measured
    if dm is not None:
        lat = dm.stats.median_ms if dm.stats.median_ms is not None else dm.stats.mean_ms
        if lat > profile.budget_ms:
            where = "" if profile.kind == "host" and not on_device_node else f" on {profile.name}"
            reasons.append(f"median {lat:.1f} ms{where} over the {profile.budget_ms} ms budget")
    if not runs_here and host_m is None:
        device_col.note = device_col.note or f"mIoU and latency need {tgt.runtime.removeprefix('needs ')}"
    return TargetResult(
        target=tgt.name,
        model=manifest["model"],
        size=f"{h}x{w}",
        status="failed_check" if reasons else "passed",
        reasons=reasons,
        artifact=artifact,
        parity=parity,
        miou=miou,
        miou_images=miou_images if miou is not None else None,
        host=host_m,
        device=device_col,
    )


def _device_info(profile):
    from edgeseg.bench.report import DeviceInfo

    reach = profile.reach
    return DeviceInfo(
        name=profile.name,
        title=profile.title,
        kind=profile.kind,
        runtime=profile.runtime,
        reach=reach.method + (f" {reach.host}" if reach.host else "") + (f" {reach.serial}" if reach.serial else ""),
        budget_ms=profile.budget_ms,
        miou_floor=profile.miou_floor,
    )


def _example_predictions(folder: Path, data: Path, split: str, count: int, threads: int) -> list[dict]:
    from edgeseg.data.datasets import list_split, read_label
    from edgeseg.runtimes import load_artifact

    art = load_artifact(folder, threads)
    spec = DATASETS[art.manifest["dataset"]]
    out = []
    samples = list_split(data, split)
    # spread over the split: consecutive video frames (CamVid) would show the same street three times
    picks = sorted({round(i * (len(samples) - 1) / max(count - 1, 1)) for i in range(min(count, len(samples)))})
    for sample in [samples[i] for i in picks]:
        image = read_image(sample.image)
        labels = predict_label_map(art.run, image, plan_for(image, None, art.input_size), art.outputs_labels)
        label = read_label(sample.label)
        out.append(
            {
                "name": sample.stem,
                "image": image,
                "label": colorize(np.where(label < spec.num_classes, label, 0).astype(np.uint8), spec)
                * (label < spec.num_classes)[..., None].astype(np.uint8),
                "prediction": colorize(labels.to(torch.uint8).numpy(), spec),
            }
        )
    return out


def bench(
    device: str,
    model: str | None = None,
    dataset: str | None = None,
    weights: str | None = None,
    targets: list[str] | None = None,
    artifacts: list[Path] | None = None,
    data: Path = SAMPLE_DATA,
    split: str = "val",
    limit: int | None = None,
    size: str | None = None,
    profiles: Path | None = None,
    out: Path = Path("artifacts"),
    report_dir: Path | None = None,
    calib_data: Path | None = None,
    parity_images: int = 20,
    threads: int = 2,
    plan=None,
    remote: RemoteOptions | None = None,
    examples: int = 3,
    command: str | None = None,
    progress: Progress | None = None,
) -> dict:
    """Export what is missing (artifact cache), then for each target: status, size, parity, mIoU on ``data`` with
    the artifact itself, latency measured here (``threads`` pinned, warm-up, runs until the median is stable) and
    on the profile's device when it can be reached (SSH: trtexec or edgeseg's runner; adb: benchmark_model).
    A device that cannot be reached is marked "not measured", with the command that would measure it. Writes
    bench.json, bench.md and report.html to ``report_dir``; returns the report and the paths."""
    import datetime
    import importlib.util

    from edgeseg import __version__
    from edgeseg.bench.host import machine_info
    from edgeseg.bench.profiles import get_profile
    from edgeseg.bench.report import (
        BenchReport,
        DataInfo,
        ModelInfo,
        TimingInfo,
        write_reports,
    )
    from edgeseg.bench.stats import TimingPlan
    from edgeseg.targets import get_target

    if importlib.util.find_spec("matplotlib") is None:
        raise EdgesegError("bench writes report.html with matplotlib plots: pip install 'edgeseg[bench]'")
    plan = plan or TimingPlan()
    profile = get_profile(device, profiles)
    reach = (remote or RemoteOptions()).apply(profile.reach)
    profile = profile.model_copy(update={"reach": reach})
    entries = _bench_entries(model, dataset, weights, targets, artifacts, profile)
    data = Path(data)
    list_split(data, split)  # a bad --data fails here, with its one-line reason, before any export
    if threads < 1:
        raise EdgesegError(f"--threads {threads}: use 1 or more")
    if size:
        from edgeseg.data.transforms import check_input_size

        check_input_size(parse_size(size))  # a bad --size is the user's error, not each target's failure
    loaded = load_model(model, dataset, weights) if model else None
    if calib_data is None and (data / "train" / "images").is_dir():
        calib_data = data
    parity_data = data if (data / "val" / "images").is_dir() else None
    host = machine_info(threads)
    report = progress or (lambda *a, **k: None)
    report("start", total=len(entries))

    conn = _DeviceConnection(profile, reach)
    results, miou_images = [], None
    try:
        for entry in entries:
            tgt = get_target(entry["target"])
            report("target", target=tgt.name, step="export")
            manifest, folder = entry["manifest"], entry["folder"]
            if manifest is None:
                try:
                    manifest = export(
                        loaded.name,
                        loaded.dataset,
                        weights,
                        tgt.name,
                        size,
                        out,
                        parity_data=parity_data,
                        parity_images=parity_images,
                        calib_data=calib_data,
                    )
                except Exception as exc:  # an exporter crash is this target's result, not the end of the bench
                    results.append(failed_target_result(tgt.name, profile.name, failure_reason(exc)))
                    report("advance")
                    continue
                folder = Path(manifest["folder"])
            miou = None
            if artifact_runs_here(tgt.name):
                report("target", target=tgt.name, step="mIoU")
                ev = evaluate(None, None, None, data, split, limit=limit, threads=threads, artifact=folder)
                miou, miou_images = ev["miou"], ev["images"]
            results.append(
                bench_artifact(
                    folder,
                    manifest,
                    profile,
                    conn,
                    miou=miou,
                    miou_images=miou_images,
                    plan=plan,
                    threads=threads,
                    profiles=profiles,
                    measure_here=True,
                    progress=report,
                )
            )
            report("advance")
    finally:
        conn.close()

    examples_list, examples_note = [], ""
    runnable = [r for r in results if r.miou is not None and r.artifact is not None]
    if runnable and examples > 0:
        best = max(runnable, key=lambda r: r.miou)
        examples_list = _example_predictions(Path(best.artifact.folder), data, split, examples, threads)
        examples_note = (
            f"{best.target} (highest mIoU here) on {len(examples_list)} {split} images spread over {data}: "
            + ", ".join(e["name"] for e in examples_list)
        )
    first_manifest = next((e["manifest"] for e in entries if e["manifest"]), None)
    if loaded is not None:
        model_info = ModelInfo(name=loaded.name, dataset=loaded.dataset, weights=loaded.weights_info())
    elif first_manifest is not None:
        model_info = ModelInfo(
            name=first_manifest["model"], dataset=first_manifest["dataset"], weights=first_manifest["weights"]
        )
    else:
        model_info = None
    bench_report = BenchReport(
        edgeseg=__version__,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        command=command,
        device=_device_info(profile),
        model=model_info,
        data=DataInfo(path=str(data), split=split, images=miou_images),
        host=host,
        timing=TimingInfo.of(plan, threads),
        results=results,
    )
    name = model_info.name if model_info else "artifacts"
    folder_out = Path(report_dir) if report_dir else Path("bench") / f"{name}-{profile.name}"
    paths = write_reports(folder_out, bench_report, examples_list, examples_note)
    return {"report": bench_report, "paths": paths}


# --------------------------------------------------------------------------------------------------------------
# Check: the CI regression gate
# --------------------------------------------------------------------------------------------------------------


def _row_plan(config, config_path: Path) -> list[dict]:
    """Every row the config asks for (model x target x device, and given artifacts x device), checked up front:
    unknown models, targets, devices and missing artifact folders fail before anything is exported."""
    from edgeseg.bench.profiles import get_profile
    from edgeseg.check import resolve_path, thresholds_for
    from edgeseg.data.transforms import check_input_size

    plan = []
    for i, m in enumerate(config.models):
        name, dataset = resolve_model_name(m.name, m.dataset)
        size = check_input_size(parse_size(m.size)) if m.size else DEFAULT_INPUT[dataset]
        th = thresholds_for(config, m.thresholds, f"models.{i}", config_path)
        for target in m.targets:
            for device in m.devices:
                plan.append(
                    {
                        "entry": m,
                        "model": name,
                        "dataset": dataset,
                        "size": size,
                        "target": target,
                        "profile": get_profile(device),
                        "thresholds": th,
                        "folder": None,
                    }
                )
    for i, a in enumerate(config.artifacts):
        folder = resolve_path(config_path, a.path)
        try:
            folder, mf = read_manifest(folder)
        except EdgesegError as exc:
            raise EdgesegError(f"check config {config_path}: field 'artifacts.{i}.path': {exc}") from None
        th = thresholds_for(config, a.thresholds, f"artifacts.{i}", config_path)
        shape = mf["input"]["shape"]
        for device in a.devices:
            plan.append(
                {
                    "entry": None,
                    "model": mf["model"],
                    "dataset": mf["dataset"],
                    "size": (int(shape[2]), int(shape[3])),
                    "target": mf["target"],
                    "profile": get_profile(device),
                    "thresholds": th,
                    "folder": folder,
                    # the PyTorch reference: the shipped tag where it was one (paths differ between machines)
                    "weights": mf["weights"].get("tag") or mf["weights"]["path"],
                }
            )
    return plan


def check(
    config_path: Path,
    baseline_path: Path | None = None,
    update_baseline: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Run the regression gate of ``config_path`` (see ``edgeseg.check``): export (cached) or take the given
    artifacts, evaluate each row here, compare with the baseline and, with ``update_baseline``, record the new
    baseline (only when every row passes its absolute gates). Returns the report and the baseline written."""
    from edgeseg import __version__
    from edgeseg import check as chk
    from edgeseg.bench.host import machine_info
    from edgeseg.runtimes import load_artifact
    from edgeseg.targets import get_target

    config_path = Path(config_path)
    config = chk.load_config(config_path)
    baseline_path = Path(baseline_path) if baseline_path else config_path.with_name("baseline.json")
    baseline = chk.read_baseline(baseline_path, update_baseline)
    data = SAMPLE_DATA if config.data == "sample" else chk.resolve_path(config_path, config.data)
    calib_data = chk.resolve_path(config_path, config.calib_data) if config.calib_data else None
    out = chk.resolve_path(config_path, config.out)
    rows = _row_plan(config, config_path)
    ids = [f"{r['model']}/{r['target']}/{r['size'][0]}x{r['size'][1]}/{r['profile'].name}" for r in rows]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise EdgesegError(f"check config {config_path}: row {dupes[0]} is listed twice (one row per id)")
    _, images, labels = load_split(data, config.split)
    if config.limit:
        images, labels = images[: config.limit], labels[: config.limit]
    report = progress or (lambda *a, **k: None)
    report("start", total=len(rows))

    t_start = time.perf_counter()
    models: dict[tuple, LoadedModel] = {}
    references: dict[tuple, float] = {}
    exports: dict[tuple, dict | str] = {}  # manifest, or why the export failed
    evaluations: dict[str, tuple] = {}  # folder -> (miou, runtime, why not run)
    ratios: dict[tuple, object] = {}
    results = []
    for row, row_id in zip(rows, ids):
        t0 = time.perf_counter()
        tgt, th, profile = get_target(row["target"]), row["thresholds"], row["profile"]
        weights = row["entry"].weights if row["entry"] else row["weights"]
        report("row", row=row_id, step="export")
        if row["folder"] is None:
            e = row["entry"]
            key = (row["model"], row["dataset"], weights, row["target"], row["size"], e.export.model_dump_json())
            if key not in exports:
                try:
                    exports[key] = export(
                        row["model"],
                        row["dataset"],
                        weights,
                        row["target"],
                        f"{row['size'][0]}x{row['size'][1]}",
                        out,
                        with_argmax=e.export.with_argmax,
                        opset=e.export.opset,
                        parity_data=data,
                        parity_images=config.parity_images,
                        upsample=e.export.upsample,
                        calib_data=calib_data,
                        calib_size=e.export.calib_size,
                        calib_method=e.export.calib_method,
                        max_miou_drop=e.export.max_miou_drop,
                    )
                except EdgesegError as exc:
                    exports[key] = f"export failed: {exc}"
                except Exception as exc:  # an exporter crash fails this row, not the whole check
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                    exports[key] = f"export crashed: {type(exc).__name__}: {first}"
            manifest = exports[key]
            if isinstance(manifest, str):
                results.append(
                    chk.RowResult(
                        row_id,
                        row["model"],
                        row["target"],
                        profile.name,
                        {},
                        None,
                        None,
                        None,
                        None,
                        {},
                        [chk.Gate("export", "failed", manifest)],
                        time.perf_counter() - t0,
                    )
                )
                report("advance")
                continue
            folder = Path(manifest["folder"])
        else:
            folder, manifest = read_manifest(row["folder"])
        lint_report = lint(folder)
        artifact = {
            "folder": str(folder),
            "file": manifest["file"],
            "sha256": manifest["sha256"],
            "bytes": manifest["bytes"],
            "cached": bool(manifest.get("cached", True)),
        }
        report("row", row=row_id, step="mIoU")
        if str(folder) not in evaluations:
            try:
                art = load_artifact(folder, config.threads)
            except EdgesegError as exc:
                evaluations[str(folder)] = (None, None, str(exc))
            else:
                metrics = evaluate_arrays(
                    art.run, images, labels, DATASETS[row["dataset"]], None, art.input_size, None, art.outputs_labels
                )
                evaluations[str(folder)] = (metrics.miou, art.runtime, None)
        miou, runtime, why_not_run = evaluations[str(folder)]
        ref_key = (row["model"], row["dataset"], weights, row["size"])
        if why_not_run is None and ref_key not in references:
            report("row", row=row_id, step="PyTorch reference")
            mkey = (row["model"], row["dataset"], weights)
            if mkey not in models:
                models[mkey] = load_model(row["model"], row["dataset"], weights)
            loaded = models[mkey]
            ref = evaluate_arrays(torch_predictor(loaded.model), images, labels, loaded.spec, None, row["size"])
            references[ref_key] = ref.miou
        miou_ref = references.get(ref_key)
        p = manifest["parity"]
        parity = {
            "argmax_agreement": p["argmax_agreement"],
            "snr_db": chk.finite(p["snr_db"]),
            "images": p["images"],
            "runtime": p["runtime"],
        }
        floor = th.miou_floor if th.miou_floor is not None else profile.miou_floor
        agreement_min = (
            th.min_argmax_agreement if th.min_argmax_agreement is not None else PARITY_MIN_AGREEMENT[tgt.precision]
        )
        gates = chk.absolute_gates(th, lint_report, parity, agreement_min, miou, miou_ref, floor, why_not_run)
        ratio = None
        entry = baseline.rows.get(row_id) if baseline else None
        base_folder = baseline.artifact_folder(row_id) if baseline else None
        wants_time = (
            not update_baseline
            and why_not_run is None
            and th.max_latency_ratio is not None
            and entry is not None
            and entry["artifact"]["sha256"] != artifact["sha256"]
            and base_folder is not None
        )
        if wants_time:
            report("row", row=row_id, step="latency vs baseline")
            pair = (str(folder), str(base_folder))
            if pair not in ratios:
                ratios[pair] = chk.latency_ratio(folder, base_folder, config.threads, config.timing)
            ratio = ratios[pair]
        base_gates = chk.baseline_gates(th, row_id, artifact, baseline, update_baseline, ratio)
        if ratio is not None and profile.kind != "host":
            for g in base_gates:
                if g.name == "latency":
                    g.detail += f" (timed on this machine, not on {profile.name})"
        result = chk.RowResult(
            row_id,
            row["model"],
            row["target"],
            profile.name,
            artifact,
            runtime,
            miou,
            miou_ref,
            len(images) if miou is not None else None,
            parity,
            gates + base_gates,
            time.perf_counter() - t0,
            None
            if ratio is None
            else {
                "ratio": ratio.ratio,
                "spread": ratio.spread,
                "rounds": ratio.rounds,
                "current_median_ms": ratio.current_ms,
                "baseline_median_ms": ratio.baseline_ms,
                "runtime": ratio.runtime,
                "note": "this run only, on this machine; not stored in the baseline",
            },
        )
        results.append(result)
        report("advance")

    written = None
    if update_baseline:
        absolute_failures = [r for r in results if not r.passed]
        if not absolute_failures:
            written = chk.write_baseline(baseline_path, results, __version__, config_path)
    check_report = chk.CheckReport(
        config=str(config_path),
        baseline=str(baseline_path),
        updated_baseline=written is not None,
        data=str(data),
        images=len(images),
        rows=results,
        seconds=time.perf_counter() - t_start,
        machine=machine_info(config.threads),
    )
    return {"report": check_report, "baseline_written": written}


# --------------------------------------------------------------------------------------------------------------
# Latency estimates (devices that are not attached)
# --------------------------------------------------------------------------------------------------------------

ESTIMATE_GRAPHS = Path("artifacts") / "estimate-graphs"
PUBLISHED_FIGURES = PACKAGE_DIR / "assets" / "published" / "efficientvit-seg.yaml"
# The published EfficientViT-Seg figures were measured on the official graph: the head's bicubic Resize op.
PUBLISHED_UPSAMPLE = "resize"


def estimation_graph(
    model: str,
    dataset: str | None,
    target: str,
    size: str | tuple[int, int],
    upsample: str = DEFAULT_UPSAMPLE,
    cache: Path = ESTIMATE_GRAPHS,
) -> tuple[Path, str]:
    """The ONNX graph ``target`` would get for ``model`` at ``size`` (its rewrites applied; random weights: only
    the structure matters), exported in fp32 and cached. Returns (path, description)."""
    import hashlib

    from edgeseg.data.transforms import check_input_size
    from edgeseg.exporters.onnx import export_onnx
    from edgeseg.rewrite import DeployWrapper, apply_rewrites
    from edgeseg.targets import get_target

    tgt = get_target(target)
    name, dataset = resolve_model_name(model, dataset)
    if upsample.startswith("reference"):  # a manifest of a model whose head has no upsampling choice (LVT, ...)
        upsample = DEFAULT_UPSAMPLE
    elif upsample not in UPSAMPLE_REWRITES:
        raise EdgesegError(f"unknown --upsample {upsample!r}: use {', '.join(UPSAMPLE_REWRITES)}")
    _check_upsample_applies(name, upsample, default=DEFAULT_UPSAMPLE)
    h, w = check_input_size(parse_size(size) if isinstance(size, str) else tuple(size))
    rewrites = target_rewrites(name, tgt, upsample)  # the rewrites export would apply
    from edgeseg import __version__

    key = hashlib.sha256(repr((rewrites, torch.__version__, __version__)).encode()).hexdigest()[:10]
    path = Path(cache) / f"{name}-{dataset}-{h}x{w}-{key}.onnx"
    desc = f"{name} ({dataset} head) {h}x{w}, rewrites {', '.join(rewrites)}; ONNX opset 18, structure only"
    if path.is_file():
        return path, desc
    net, _ = create_model(name, dataset)
    deploy, _ = apply_rewrites(net, rewrites)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial.onnx")
    try:
        export_onnx(DeployWrapper(deploy).eval(), torch.zeros(1, 3, h, w), tmp, 18, "logits")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, desc


def graph_cost_for(target: str, onnx_path: Path, from_float: bool):
    """Kernels of ``onnx_path`` under the fusion rules of ``target``'s runtime; a float graph standing in for a
    lower-precision target takes that precision (int8: Conv/MatMul kernels, the attention core stays float)."""
    from edgeseg.estimate.graph import FORMAT_RUNTIME, graph_cost
    from edgeseg.targets import get_target

    tgt = get_target(target)
    cost = graph_cost(onnx_path, FORMAT_RUNTIME[tgt.format])
    if from_float and tgt.precision == "int8":
        rest = "fp16" if tgt.format in ("tensorrt", "coreml") else "fp32"
        cost = cost.with_precision("int8", anchors_only=True, rest=rest)
    elif from_float and tgt.precision != "fp32":
        cost = cost.with_precision(tgt.precision)
    return cost


def _artifact_cost(folder: Path, manifest: dict, cache: Path = ESTIMATE_GRAPHS):
    """(cost, description) of an exported artifact: its own ONNX where it has one, else the estimation graph of
    the same model, target, size and upsampling."""
    folder = Path(folder)
    onnx_file = folder / "model.onnx"
    if manifest["format"] in ("onnx", "tensorrt") and onnx_file.is_file():
        return graph_cost_for(manifest["target"], onnx_file, from_float=False), f"{onnx_file} (the artifact's graph)"
    _, _, h, w = manifest["input"]["shape"]
    path, desc = estimation_graph(
        manifest["model"], manifest["dataset"], manifest["target"], (h, w), manifest.get("upsample", "conv"), cache
    )
    return graph_cost_for(manifest["target"], path, from_float=True), desc


def _estimator_data(profile, profiles: Path | None, target: str):
    """(estimator data with a calibration usable for ``target``, notes) or a one-line error."""
    from edgeseg.bench.profiles import get_profile

    hw = profile.estimator
    if hw is None:
        raise EdgesegError(
            f"device {profile.name} has no estimator data: add an `estimator:` section (peak_gflops, memory_gbps "
            "with their sources) to its profile"
        )
    notes = []
    if hw.calibration_for(target) is None and hw.borrow_calibration:
        lender = get_profile(hw.borrow_calibration, profiles).estimator
        if lender is not None and lender.calibration_for(target) is not None:
            hw = hw.model_copy(update={"calibrations": lender.calibrations})
            notes.append(
                f"efficiencies borrowed from {hw.borrow_calibration} (same architecture), peaks and bandwidth of "
                f"{profile.name}; not validated on {profile.name}"
            )
    found = hw.calibration_for(target)
    if found is None:
        raise EdgesegError(
            f"device {profile.name} has no calibration for {target}: run `edgeseg calibrate --device {profile.name} "
            f"--from bench.json` (measurements of {target} there) and pass --profiles with the written folder"
        )
    if found[0] != target:
        notes.append(f"efficiencies fitted for {found[0]}, applied to {target}")
    return hw, notes


def estimate_latency(
    device: str,
    model: str | None = None,
    dataset: str | None = None,
    target: str | None = None,
    size: str | None = None,
    artifact: Path | None = None,
    upsample: str = DEFAULT_UPSAMPLE,
    profiles: Path | None = None,
    cache: Path = ESTIMATE_GRAPHS,
) -> dict:
    """The estimated latency (labelled "estimate") of a model or artifact on ``device``, from its graph and the
    device profile's calibrated roofline."""
    from edgeseg.bench.profiles import get_profile
    from edgeseg.estimate.roofline import estimate
    from edgeseg.targets import get_target

    profile = get_profile(device, profiles)
    if artifact is not None:
        if model or target:
            raise EdgesegError("pass either --artifact or --model/--target, not both")
        folder, manifest = read_manifest(Path(artifact))
        target = manifest["target"]
        hw, notes = _estimator_data(profile, profiles, target)
        cost, desc = _artifact_cost(folder, manifest, cache)
    else:
        if not model or not target:
            raise EdgesegError("estimate needs --model and --target (or --artifact FOLDER)")
        tgt = get_target(target)
        hw, notes = _estimator_data(profile, profiles, tgt.name)
        name, dataset = resolve_model_name(model, dataset)
        input_size = parse_size(size) if size else DEFAULT_INPUT[dataset]
        path, desc = estimation_graph(name, dataset, tgt.name, input_size, upsample, cache)
        cost = graph_cost_for(tgt.name, path, from_float=True)
    est = estimate(cost, hw, profile.name, target, get_target(target).precision, desc)
    est = est.model_copy(update={"notes": notes})
    return {"estimate": est, "cost": cost.as_dict()}


def published_points(profile, file: Path, cache: Path) -> tuple[dict[str, list], str, str]:
    from edgeseg.estimate.calibrate import Point
    from edgeseg.estimate.schema import PublishedFigures
    from edgeseg.io import load_yaml_schema

    data = load_yaml_schema(Path(file), PublishedFigures, "published-figures file", "source, devices")
    entry = data.devices.get(profile.name)
    if entry is None:
        raise EdgesegError(
            f"{file} has no figures for {profile.name} (it has: {', '.join(data.devices)}); calibrate from "
            "bench.json measured on the device instead"
        )
    target = entry.target
    points = []
    for fig in entry.figures:
        path, _ = estimation_graph(fig.model, entry.dataset, target, fig.size, PUBLISHED_UPSAMPLE, cache)
        points.append(Point(f"{fig.model} {fig.size} {target}", graph_cost_for(target, path, from_float=True), fig.ms))
    source = f"{data.source} ({entry.conditions}): {len(points)} figures"
    graph = (
        f"{target} graphs of the official head (bicubic Resize, as measured there), {entry.dataset} head, "
        "edgeseg's other rewrites; kernels fused as the runtime does"
    )
    return {target: points}, source, graph


def _bench_points(report_path: Path, profile, cache: Path) -> dict[str, list]:
    from pydantic import ValidationError

    from edgeseg.bench.report import BenchReport
    from edgeseg.estimate.calibrate import Point

    try:
        text = Path(report_path).read_text()
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise EdgesegError(f"--from {report_path}: not a readable JSON file ({exc})") from None
    try:
        report = BenchReport.model_validate(data)
    except ValidationError as exc:
        raise EdgesegError(f"--from {report_path}: not a bench.json ({validation_problems(exc)})") from None
    if report.device.name != profile.name:
        raise EdgesegError(
            f"--from {report_path} was measured for device {report.device.name}, not {profile.name}: calibrate "
            f"--device {report.device.name}"
        )
    out: dict[str, list] = {}
    for r in report.results:
        m = r.device.measured or (r.host if report.device.kind == "host" else None)
        if m is None or r.artifact is None:
            continue
        ms = m.stats.median_ms if m.stats.median_ms is not None else m.stats.mean_ms
        folder = Path(r.artifact.folder)
        if not (folder / "manifest.json").is_file():
            raise EdgesegError(
                f"--from {report_path}: artifact folder {folder} is gone; the estimator needs its graph (re-export)"
            )
        folder, manifest = read_manifest(folder)
        cost, _ = _artifact_cost(folder, manifest, cache)
        h, w = manifest["input"]["shape"][2:]
        out.setdefault(r.target, []).append(Point(f"{manifest.get('model', folder.name)} {h}x{w} {r.target}", cost, ms))
    return out


def calibrate_device(
    device: str,
    sources: list[str],
    profiles: Path | None = None,
    out: Path = Path("profiles"),
    cache: Path = ESTIMATE_GRAPHS,
) -> dict:
    """Fit ``device``'s efficiency factors to measurements: bench.json files measured there, and/or
    ``published`` (the shipped EfficientViT-Seg figures) or a figures YAML of that shape. Writes a copy of the
    profile with the calibrations (and their source and leave-one-out error) to ``out/<device>.yaml``."""
    import yaml

    from edgeseg.bench.profiles import DeviceProfile, get_profile, load_profiles
    from edgeseg.estimate.calibrate import calibrate as fit_calibration
    from edgeseg.estimate.schema import EstimatorData

    if not sources:
        raise EdgesegError("calibrate needs --from: bench.json files measured on the device, or 'published'")
    profile = get_profile(device, profiles)
    if profile.estimator is None:
        raise EdgesegError(
            f"device {profile.name} has no estimator data: add an `estimator:` section (peak_gflops, memory_gbps "
            "with their sources) to its profile first"
        )
    points: dict[str, list] = {}
    described: list[str] = []
    graphs: dict[str, str] = {}
    for src in sources:
        if src == "published" or src.endswith((".yaml", ".yml")):
            file = PUBLISHED_FIGURES if src == "published" else Path(src)
            if not file.is_file():
                raise EdgesegError(f"--from {src}: no such file")
            got, text, graph = published_points(profile, file, cache)
            described.append(text)
            graphs.update({t: graph for t in got})
        else:
            if not Path(src).is_file():
                raise EdgesegError(f"--from {src}: no such file (pass bench.json files or 'published')")
            got = _bench_points(Path(src), profile, cache)
            graphs.update({t: f"{t} artifacts' own graphs, kernels fused as the runtime does" for t in got})
            if not got:
                raise EdgesegError(f"--from {src}: no latency measured on {profile.name} in it")
            described.append(f"bench {src}: {sum(len(v) for v in got.values())} measurements")
        for t, pts in got.items():
            points.setdefault(t, []).extend(pts)
    source = "; ".join(described)
    hw: EstimatorData = profile.estimator
    calibrations = dict(hw.calibrations)
    rows = {}
    for target, pts in points.items():
        cal, held = fit_calibration(pts, hw, source, graphs[target])
        calibrations[target] = cal
        rows[target] = [{"label": h.label, "measured_ms": h.measured_ms, "estimated_ms": h.estimated_ms} for h in held]
    _, path = load_profiles(profiles)[profile.name]
    data = yaml.safe_load(Path(path).read_text())
    data["estimator"]["calibrations"] = {
        t: c.model_dump(mode="json", exclude_none=True) for t, c in calibrations.items()
    }
    DeviceProfile.model_validate(data)  # what is written loads back
    out = Path(out)
    target_file = out / f"{profile.name}.yaml"
    if target_file.resolve() == Path(path).resolve() and str(path).startswith(str(PACKAGE_DIR)):
        raise EdgesegError(f"--out {out}: that is edgeseg's shipped profile folder; write the copy elsewhere")
    header = f"# {profile.name}: copy of {path} with estimator calibrations written by `edgeseg calibrate`\n"
    atomic_write_bytes(target_file, (header + yaml.safe_dump(data, sort_keys=False, width=110)).encode())
    return {"device": profile.name, "file": str(target_file), "calibrations": calibrations, "held_out": rows}


# --------------------------------------------------------------------------------------------------------------
# Sweep: the models x targets x devices x sizes matrix, in this process or on a Ray cluster
# --------------------------------------------------------------------------------------------------------------


def sweep_artifact_job(job, data: str, split: str, limit, calib_data, parity_images: int, threads: int, out=None):
    """Export one (model, weights, target, size), then its mIoU with the artifact's runtime. With ``out`` the
    artifact is written there (this process shares the sweep's folder); without, it is built in a temporary
    folder and returned as a tar archive with its sha256 (a Ray worker sends it through the object store)."""
    import shutil
    import tempfile

    from edgeseg.sweep.executors import job_origin
    from edgeseg.sweep.store import pack_artifact

    t0 = time.perf_counter()
    data = Path(data)
    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="edgeseg-sweep-"))
    # The same thread count wherever the job runs: float reductions (the PyTorch reference of int8 calibration and
    # the mixed-precision search) round differently with another count, and a Ray worker starts with 1 thread.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        manifest = export(
            job.model,
            job.dataset,
            job.weights,
            job.target,
            job.size,
            work,
            parity_data=data if (data / "val" / "images").is_dir() else None,
            parity_images=parity_images,
            calib_data=Path(calib_data) if calib_data else None,
        )
        folder = Path(manifest["folder"])
        miou = images = None
        if artifact_runs_here(job.target):
            ev = evaluate(None, None, None, data, split, limit=limit, threads=threads, artifact=folder)
            miou, images = ev["miou"], ev["images"]
        result = {
            "manifest": {k: v for k, v in manifest.items() if k != "folder"},
            "folder": folder.name,
            "miou": miou,
            "miou_images": images,
            "seconds": round(time.perf_counter() - t0, 2),
            **job_origin(),
        }
        if out is None:
            result["archive"], result["archive_sha256"] = pack_artifact(folder)
        return result
    finally:
        torch.set_num_threads(torch_threads)
        if out is None:
            shutil.rmtree(work, ignore_errors=True)


def sweep_bench_job(job, profile, profiles, entry: dict, folder, archive, plan, threads: int, on_device_node: bool):
    """Time one artifact for one device ``profile`` (``bench_artifact``). ``folder``: the artifact where this
    process can read it; else ``archive`` (bytes from the object store) is checked against its hash and unpacked
    here."""
    import shutil
    import tempfile

    from edgeseg.sweep.executors import job_origin
    from edgeseg.sweep.store import unpack_artifact

    t0 = time.perf_counter()
    work = None
    try:
        if folder is None:
            work = Path(tempfile.mkdtemp(prefix="edgeseg-sweep-bench-"))
            folder = unpack_artifact(archive, entry["archive_sha256"], entry["manifest"], work)
        conn = _DeviceConnection(profile, profile.reach)
        try:
            result = bench_artifact(
                Path(folder),
                entry["manifest"],
                profile,
                conn,
                miou=entry["miou"],
                miou_images=entry["miou_images"],
                plan=plan,
                threads=threads,
                profiles=Path(profiles) if profiles else None,
                measure_here=False,
                on_device_node=on_device_node,
            )
        finally:
            conn.close()
        return {
            "result": result.model_dump(mode="json"),
            "seconds": round(time.perf_counter() - t0, 2),
            **job_origin(),
        }
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _sweep_jobs(matrix, base: Path, profiles_dir, data: Path, calib: Path | None, plan):
    """Expand the matrix into artifact jobs and bench jobs (with cache keys); every user error is raised here,
    before anything runs: unknown model, weights, device or target, a bad size."""
    from edgeseg import __version__
    from edgeseg.bench.profiles import get_profile
    from edgeseg.data.transforms import check_input_size
    from edgeseg.sweep.matrix import ArtifactJob, BenchJob, check_devices_have_targets, job_key, tree_identity
    from edgeseg.targets import get_target, require_exporter

    profiles = {}
    for name in matrix.devices:
        profile = get_profile(name, profiles_dir)
        if profile.name in profiles:
            raise EdgesegError(f"sweep matrix: devices list {profile.name} twice (once as {name!r})")
        if matrix.miou_floor is not None:
            profile = profile.model_copy(update={"miou_floor": matrix.miou_floor})
        profiles[profile.name] = profile
    check_devices_have_targets(matrix, {n: p.targets for n, p in profiles.items()})
    for t in matrix.targets:
        require_exporter(get_target(t))
    data_id = tree_identity(data, matrix.split)
    calib_id = (str(calib), tree_identity(calib, "train")) if calib else None
    artifacts, benches = [], []
    for entry in matrix.models:
        weights = entry.weights
        if weights and (weights.endswith((".pt", ".pth", ".bin")) or "/" in weights):
            weights = str((base / Path(weights).expanduser()).resolve())
        loaded = load_model(entry.name, entry.dataset, weights)
        weights_sha = loaded.weights.sha256 or weights_mod.sha256_file(loaded.weights.path)
        for size in matrix.sizes:
            h, w = check_input_size(parse_size(size)) if size else DEFAULT_INPUT[loaded.dataset]
            for target in matrix.targets:
                tgt = get_target(target)
                wanted = [d for d, p in profiles.items() if not matrix.device_targets_only or target in p.targets]
                if not wanted:
                    continue
                key = job_key(
                    kind="artifact",
                    edgeseg=__version__,
                    model=loaded.name,
                    dataset=loaded.dataset,
                    weights=weights_sha,
                    target=target,
                    size=f"{h}x{w}",
                    data=(str(data), matrix.split, data_id, matrix.limit),
                    calib=calib_id if tgt.precision == "int8" else None,
                    int8_search=INT8_SEARCH[tgt.format] if tgt.precision == "int8" else None,
                    parity_images=matrix.parity_images,
                )
                job = ArtifactJob(loaded.name, loaded.dataset, weights, target, f"{h}x{w}", key)
                artifacts.append(job)
                for device in wanted:
                    bkey = job_key(
                        kind="bench",
                        artifact=key,
                        device=profiles[device].model_dump(mode="json"),
                        plan=dataclasses.asdict(plan),
                        threads=matrix.threads,
                    )
                    benches.append(BenchJob(job, device, bkey))
    return artifacts, benches, profiles


def sweep(
    matrix_path: Path,
    out: Path,
    cluster: str | None = None,
    resume: bool = False,
    command: str | None = None,
    progress: Progress | None = None,
) -> dict:
    """Run the sweep matrix: each artifact job (export -> quantize -> mIoU) once, then each bench job (latency
    on a device profile). Jobs in the cache are not redone; a failed job is recorded with its reason and the
    others go on. ``cluster`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) runs them on Ray: artifact jobs on any
    worker, bench jobs on the node advertising the device (else in this process, after every artifact job has
    finished, so its timings are not disturbed). Writes one bench.json / bench.md / report.html per device and
    an index (report.html, sweep.md) to ``out``."""
    import datetime

    from edgeseg import __version__
    from edgeseg.bench.host import machine_info
    from edgeseg.bench.report import BenchReport, DataInfo, ModelInfo, TargetResult, TimingInfo, write_reports
    from edgeseg.bench.stats import TimingPlan
    from edgeseg.sweep.executors import open_executor
    from edgeseg.sweep.matrix import load_matrix, matrix_digest, resolve_path
    from edgeseg.sweep.report import sweep_table, write_index
    from edgeseg.sweep.store import SweepStore, pack_artifact

    matrix, base = load_matrix(matrix_path)
    profiles_dir = resolve_path(matrix.profiles, base)
    data = SAMPLE_DATA if matrix.data in (None, "sample") else resolve_path(matrix.data, base)
    list_split(data, matrix.split)
    calib = resolve_path(matrix.calib_data, base) or (data if (data / "train" / "images").is_dir() else None)
    t = matrix.timing
    if t.max_runs < t.runs:
        raise EdgesegError(f"sweep matrix: timing.max_runs {t.max_runs} < timing.runs {t.runs}")
    plan = TimingPlan(warmup=t.warmup, min_runs=t.runs, max_runs=t.max_runs, max_seconds=t.max_seconds)
    artifacts, benches, profiles = _sweep_jobs(matrix, base, profiles_dir, data, calib, plan)
    digest = matrix_digest(matrix)
    store = SweepStore(Path(out))
    store.check_can_start(digest, resume)

    # a cluster is joined before anything is written, so a wrong address leaves no unfinished sweep behind
    executor = open_executor(cluster) if cluster is not None else None
    report = progress or (lambda *a, **k: None)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    jobs: dict[str, dict] = {}
    state = {"matrix": str(matrix_path), "matrix_digest": digest, "status": "running", "started": started}
    state.update(cluster=cluster or "local", jobs=jobs)
    store.write_state(state)
    report(
        "start",
        artifacts=[a.label for a in artifacts],
        devices=list(profiles),
        cells=[(b.artifact.label, b.device) for b in benches],
    )

    def record(key: str, **fields) -> None:
        jobs[key] = {**jobs.get(key, {}), **fields}
        store.write_state(state)
        report("job", **jobs[key])

    if executor is not None:
        state["executor"] = executor.description

    def ex():
        nonlocal executor
        if executor is None:
            executor = open_executor(cluster)
            state["executor"] = executor.description
        return executor

    args = (str(data), matrix.split, matrix.limit, str(calib) if calib else None, matrix.parity_images, matrix.threads)
    entries: dict[str, dict] = {}  # artifact key -> result (or {"failed": reason})
    rows: dict[str, dict] = {}  # bench key -> bench.json row
    pending: dict = {}
    driver_queue: list = []
    archives: dict[str, object] = {}
    by_artifact: dict[str, list] = {}
    for b in benches:
        by_artifact.setdefault(b.artifact.key, []).append(b)

    def schedule_benches(a) -> None:
        entry = entries[a.key]
        for b in by_artifact[a.key]:
            base_fields = {"type": "bench", "label": a.label, "device": b.device}
            cached = store.cached_bench(b.key)
            if cached is not None:
                rows[b.key] = cached["result"]
                record(b.key, **base_fields, status="cached", node=cached.get("node"), seconds=cached.get("seconds"))
            elif "failed" in entry:
                rows[b.key] = failed_target_result(a.target, b.device, entry["failed"], a.model, a.size).model_dump(
                    mode="json"
                )
                record(b.key, **base_fields, status="skipped", reason="its artifact failed")
            elif cluster is not None and b.device in ex().device_resources():
                if a.key not in archives:
                    archive, sha = pack_artifact(store.artifacts / entry["folder"])
                    entry = {**entry, "archive_sha256": sha}
                    entries[a.key] = entry
                    archives[a.key] = ex().put(archive)
                on_node = profiles[b.device].reach.method != "adb"  # an adb hub reaches its phones; others are it
                handle = ex().submit(
                    sweep_bench_job,
                    b,
                    profiles[b.device],
                    str(profiles_dir) if profiles_dir else None,
                    entry,
                    None,
                    archives[a.key],
                    plan,
                    matrix.threads,
                    on_node,
                    device=b.device,
                )
                pending[handle] = ("bench", b)
                record(b.key, **base_fields, status="queued", where=f"node advertising {b.device}")
            else:
                driver_queue.append(b)
                record(b.key, **base_fields, status="queued", where="this process")

    def finish_artifact(a, result, error) -> None:
        fields = {"type": "artifact", "label": a.label}
        if error is None and "archive" in result:
            try:
                folder = store.receive(result.pop("archive"), result["archive_sha256"], result["manifest"])
                result["folder"] = folder.name
            except EdgesegError as exc:  # corrupted in transit: this job failed, the others go on
                error = exc
        if error is not None:
            entries[a.key] = {"failed": failure_reason(error)}
            record(a.key, **fields, status="failed", reason=entries[a.key]["failed"])
        else:
            entries[a.key] = result
            store.put_artifact(a.key, result)
            record(a.key, **fields, status="done", node=result["node"], seconds=result["seconds"])
        schedule_benches(a)

    def finish_bench(b, result, error) -> None:
        fields = {"type": "bench", "label": b.artifact.label, "device": b.device}
        a = b.artifact
        if error is not None:
            reason = failure_reason(error, "bench failed")
            rows[b.key] = failed_target_result(a.target, b.device, reason, a.model, a.size).model_dump(mode="json")
            record(b.key, **fields, status="failed", reason=reason)
            return
        row = result["result"]
        row["artifact"]["folder"] = str(store.artifacts / entries[a.key]["folder"])  # the driver's copy
        rows[b.key] = row
        store.put_bench(b.key, {**result, "result": row})
        record(b.key, **fields, status="done", node=result["node"], seconds=result["seconds"])

    try:
        for a in artifacts:
            cached = store.cached_artifact(a.key)
            if cached is not None:
                entries[a.key] = cached
                record(
                    a.key,
                    type="artifact",
                    label=a.label,
                    status="cached",
                    node=cached.get("node"),
                    seconds=cached.get("seconds"),
                )
                schedule_benches(a)
            else:
                local_out = str(store.artifacts) if cluster is None else None
                handle = ex().submit(sweep_artifact_job, a, *args, out=local_out)
                pending[handle] = ("artifact", a)
                record(a.key, type="artifact", label=a.label, status="queued")
        while pending or driver_queue:
            exporting = any(kind == "artifact" for kind, _ in pending.values())
            if driver_queue and not exporting:
                b = driver_queue.pop(0)
                record(b.key, status="running", where="this process")
                entry = entries[b.artifact.key]
                try:
                    result = sweep_bench_job(
                        b,
                        profiles[b.device],
                        str(profiles_dir) if profiles_dir else None,
                        entry,
                        store.artifacts / entry["folder"],
                        None,
                        plan,
                        matrix.threads,
                        False,
                    )
                    finish_bench(b, result, None)
                except Exception as exc:  # one bench job's failure is its row, not the end of the sweep
                    finish_bench(b, None, exc)
                continue
            handle, result, error = ex().wait(list(pending))
            kind, job = pending.pop(handle)
            if kind == "artifact":
                finish_artifact(job, result, error)
            else:
                finish_bench(job, result, error)
    finally:
        if executor is not None:
            executor.close()

    # one bench report per device, in matrix order, like `edgeseg bench` writes
    host = machine_info(matrix.threads)
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    single = matrix.models[0] if len(matrix.models) == 1 else None
    model_info = None
    if single is not None and artifacts:
        first = next((e for e in entries.values() if "manifest" in e), None)
        if first is not None:
            m = first["manifest"]
            model_info = ModelInfo(name=m["model"], dataset=m["dataset"], weights=m["weights"])
    images = next((e["miou_images"] for e in entries.values() if e.get("miou_images")), None)
    reports = {}
    for device, profile in profiles.items():
        results = [TargetResult.model_validate(rows[b.key]) for b in benches if b.device == device]
        bench_report = BenchReport(
            edgeseg=__version__,
            created=created,
            command=command,
            device=_device_info(profile),
            model=model_info,
            data=DataInfo(path=str(data), split=matrix.split, images=images),
            host=host,
            timing=TimingInfo.of(plan, matrix.threads),
            results=results,
        )
        write_reports(Path(out) / device, bench_report, [], "")
        reports[device] = bench_report
    failed = sum(1 for j in jobs.values() if j["status"] == "failed")
    state.update(status="finished", finished=created, failed_jobs=failed)
    store.write_state(state)
    table = sweep_table(reports)
    paths = write_index(Path(out), reports, table, state)
    return {"reports": reports, "table": table, "jobs": jobs, "paths": paths, "failed": failed}
