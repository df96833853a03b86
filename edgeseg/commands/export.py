"""export, quantize, profile and lint: rewrite a model for a target, export it (``_build_artifact`` and the
per-format helpers below it), check parity against PyTorch and lint it; INT8 targets calibrate and, with a budget,
go through the mixed-precision search. Also the head-upsampling choices that eval and estimate share."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from edgeseg.commands.evaluate import load_model
from edgeseg.data.datasets import DatasetSpec, load_split
from edgeseg.data.transforms import parse_size
from edgeseg.errors import EdgesegError
from edgeseg.eval.evaluate import torch_predictor
from edgeseg.models.registry import DEFAULT_INPUT, MODELS
from edgeseg.paths import SAMPLE_DATA
from edgeseg.runtimes import read_manifest


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


# --------------------------------------------------------------------------------------------------------------
# One artifact: _build_artifact exports a module for a target; the per-format INT8 helpers follow it
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# The commands: export, quantize, profile, lint (and the packages each format needs)
# --------------------------------------------------------------------------------------------------------------

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
