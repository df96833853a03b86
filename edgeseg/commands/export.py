"""export, op-profile and lint: rewrite a model for a target (the model family's rewrites for the target's
format), hand it to the target's backend (``edgeseg.backends``), check parity against PyTorch on real images and
lint it; INT8 targets calibrate and, with a budget, go through the backend's mixed-precision search."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from edgeseg.artifact import (
    artifact_bytes,
    artifact_sha256,
    cache_key,
    cached_manifest,
    read_manifest,
    source_hash,
    staging,
    write_manifest,
)
from edgeseg.backends import ExportJob, Int8Request, backend_for, backend_for_file, get_target
from edgeseg.commands.evaluate import load_model, reference_upsample
from edgeseg.data.datasets import DATASETS, check_labels, load_split
from edgeseg.data.transforms import check_input_size, parse_size
from edgeseg.errors import EdgesegError, at_least
from edgeseg.eval.evaluate import torch_predictor
from edgeseg.export_request import (
    EXPORT_DEFAULTS,
    EXPORT_SPACE_EXTRA,
    EXPORT_SPACE_FACTOR,
    HOLDOUT_IMAGES,
    MAX_OPSET,
    MIN_OPSET,
    PARITY_IMAGES,
    ExportOptions,
)
from edgeseg.io import output_folder, require_free_space
from edgeseg.lint import lint_onnx
from edgeseg.models.registry import (
    MODELS,
    default_input,
    deploy_rewrites,
    is_user_model,
    size_multiple,
    upsample_choices,
)
from edgeseg.paths import SAMPLE_DATA
from edgeseg.residency import measure

# Code outside the backend and the model family that shapes every artifact's bytes: the rewrite framework and
# the deploy wrapper, and this module (parity, manifest). Their source enters the cache key.
_EXPORT_CODE = ("edgeseg.rewrite", "edgeseg.commands.export", "edgeseg.artifact")


def export_code_hash(model_name: str, backend) -> str:
    """Hash of the source that made an artifact: the backend (and the quantizer modules it names), the model
    family's package (model and rewrites) and the shared export code."""
    family_module = MODELS[model_name].build.__module__  # a family package's __init__: the whole package
    return source_hash(*_EXPORT_CODE, family_module) + backend.code_hash()


def export(
    model: str,
    dataset: str | None,
    weights: str | None,
    target: str,
    size: str | None = None,
    out: Path = Path("artifacts"),
    with_argmax: bool = EXPORT_DEFAULTS.with_argmax,
    opset: int = EXPORT_DEFAULTS.opset,
    parity_data: Path | None = None,
    parity_images: int = PARITY_IMAGES,
    force: bool = False,
    upsample: str = EXPORT_DEFAULTS.upsample,
    calib_data: Path | None = None,
    calib_size: int = EXPORT_DEFAULTS.calib_size,
    calib_method: str = EXPORT_DEFAULTS.calib_method,
    max_miou_drop: float | None = EXPORT_DEFAULTS.max_miou_drop,
    progress: Callable[[str], None] | None = None,
    int8_objective: str = EXPORT_DEFAULTS.int8_objective,
    notice: Callable[[str], None] | None = None,
) -> dict:
    """Rewrite, export, check parity against the PyTorch reference on real images, lint; returns the manifest.

    The artifact folder ``out/<model>-<dataset>-<target>-<HxW>[-argmax]`` holds the model file, ``manifest.json``
    and ``lint.json``. It is built in a temporary folder and renamed, so a failed export leaves nothing behind.
    ``upsample`` picks the head's upsampling where the model has a choice (``edgeseg.export_request``). INT8
    targets calibrate on ``calib_data``; with ``max_miou_drop`` (mIoU points on a held-out slice) the backend
    keeps the fewest layers float that meet it (``int8_objective`` "worst-class": the budget limits the largest
    per-class IoU drop instead of the mIoU drop; "agreement": the share of pixels whose argmax leaves fp32's, for
    models without trained weights or labels of the calibration set's classes). ``weights`` None: the model's
    shipped weights (``notice`` is told which); ``random``: a seeded untrained initialisation, marked so, no mIoU.
    """
    from edgeseg import __version__
    from edgeseg.eval.parity import compare
    from edgeseg.rewrite import DeployWrapper, apply_rewrites

    output_folder(out, "--out")
    tgt = get_target(target)
    backend = backend_for(tgt.format)
    backend.require(tgt)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise EdgesegError(
            f"--opset {opset} is not supported: use {MIN_OPSET} to {MAX_OPSET} ({EXPORT_DEFAULTS.opset} is the default)"
        )
    at_least(parity_images, 1, "--parity-images")
    loaded = load_model(model, dataset, weights, notice)
    rewrites = deploy_rewrites(loaded.name, tgt.format, tgt.precision, upsample)
    user = is_user_model(loaded.name)  # a user's module: graph passes instead of a family's module swaps
    input_size = (
        check_input_size(parse_size(size), *size_multiple(loaded.name))
        if size
        else default_input(loaded.name, loaded.dataset)
    )
    h, w = input_size
    suffix = ("-argmax" if with_argmax else "") + ("" if upsample == EXPORT_DEFAULTS.upsample else f"-{upsample}")
    if tgt.precision == "int8" and calib_method != "percentile":
        suffix += f"-{calib_method}"  # artifacts calibrated differently live side by side
    other_objective = tgt.precision == "int8" and max_miou_drop is not None and int8_objective != "mean"
    if other_objective:
        suffix += f"-{int8_objective}"
    if loaded.untrained:
        suffix += "-random"  # never mistaken for (or cached over) a trained artifact
    folder = Path(out) / f"{loaded.name}-{loaded.dataset}-{tgt.name}-{h}x{w}{suffix}"
    weights_sha = loaded.weights_sha256()
    parity_root = Path(parity_data) if parity_data else SAMPLE_DATA
    versions = backend.versions()
    calib = None
    if tgt.precision == "int8":
        from edgeseg.quantize.calibration import select_calibration

        if calib_data is None:
            raise EdgesegError(
                f"{tgt.name} needs calibration images: pass --calib-data DIR with train/images and train/labels "
                "(e.g. ../shared/data/camvid), or set EDGESEG_CALIB_DATA"
            )
        known = {m for b in _backends_calibrating(calib_method) for m in b.calib_methods}
        if calib_method in known and calib_method not in backend.calib_methods:  # unknown ones: select_calibration
            raise EdgesegError(
                f"{tgt.name} calibrates with {_calibration_name(backend)}: --calib-method {calib_method} is for "
                f"{', '.join(b.name for b in _backends_calibrating(calib_method))} int8"
            )
        if int8_objective not in ("mean", "worst-class", "agreement"):
            raise EdgesegError(f"--int8-objective {int8_objective!r}: use mean, worst-class or agreement")
        if with_argmax and max_miou_drop is not None:
            raise EdgesegError(
                "the mixed-precision search scores logits: export INT8 without --with-argmax, or pass "
                "--max-miou-drop off"
            )
        holdout = HOLDOUT_IMAGES if max_miou_drop is not None else 0
        calib = select_calibration(Path(calib_data), loaded.spec, calib_size, calib_method, holdout=holdout)
        if backend.calib_methods == ("percentile",):
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
        code=export_code_hash(loaded.name, backend),
        versions=versions,
        parity=(str(parity_root.resolve()), parity_images),
        calibration=None if calib is None else (calib.sha256, calib.method),
        max_miou_drop=None if calib is None else max_miou_drop,
        **({"int8_objective": int8_objective} if other_objective else {}),  # default: keys of earlier exports hold
        # a user model's class names and colours (--classes) are the manifest's: other names, another artifact
        **({"classes": [loaded.spec.classes, loaded.spec.palette]} if user else {}),
    )
    if not force:
        cached = cached_manifest(folder, key)
        if cached is not None:
            return {**cached, "cached": True, "folder": str(folder)}

    params = sum(p.numel() for p in loaded.model.parameters())
    require_free_space(folder.parent, EXPORT_SPACE_FACTOR * 4 * params + EXPORT_SPACE_EXTRA, f"the {tgt.name} export")
    samples, images, labels = load_split(parity_root, "val")
    samples, images, labels = samples[:parity_images], images[:parity_images], labels[:parity_images]
    if loaded.dataset in DATASETS:  # a user model's "custom" label set scores no labels: nothing to check
        check_labels(samples, labels, loaded.spec)
    deploy, applied = apply_rewrites(loaded.model, rewrites)
    graph_report = None
    if user:
        from edgeseg.rewrite.graph import applied_passes, rewrite_graph

        deploy, graph_report = rewrite_graph(
            deploy, (1, 3, h, w), loaded.name, tgt.name, fmt=tgt.format, precision=tgt.precision
        )
        applied = {**applied, **applied_passes(graph_report)}
    # backends that carry fp16 in the graph (strongly typed) get a half model; the others take the fp32 graph and
    # apply their own fp16 schemes with the attention core kept fp32.
    dtype = torch.float16 if tgt.precision == "fp16" and backend.graph_fp16 else torch.float32
    wrapper = DeployWrapper(deploy.to(dtype), dtype, with_argmax).eval()
    output_name = "labels" if with_argmax else "logits"

    stride = getattr(loaded.model, "output_stride", 8)  # logits stride: EfficientViT 8, LVT / SegFormer 4
    t0 = time.perf_counter()
    with staging(folder) as tmp:
        int8 = None if calib is None else Int8Request(calib, max_miou_drop, loaded.spec, progress, int8_objective)
        built = backend.build(ExportJob(tgt, wrapper, torch.zeros(1, 3, h, w), tmp, output_name, opset, int8))
        export_seconds = time.perf_counter() - t0
        parity = {
            "images": 0,
            "max_abs_diff": None,
            "snr_db": None,
            "argmax_agreement": None,
            "miou_reference": None,
            "miou_candidate": None,
        }
        if built.runner is not None:
            parity = compare(
                torch_predictor(loaded.model),
                built.runner,
                images,
                input_size,
                with_argmax,
                labels if loaded.dataset in DATASETS else None,  # a "custom" label set has no labels here
                loaded.spec.num_classes,
                loaded.spec.ignore_index,
            ).as_dict()
            if loaded.untrained:  # agreement with the reference still counts; an untrained mIoU means nothing
                parity.update(miou_reference=None, miou_candidate=None)
        lint = built.lint
        file_path = tmp / built.file
        residency, residency_error = measure(backend, file_path)
        manifest = {
            "edgeseg": __version__,
            "model": loaded.name,
            "dataset": loaded.dataset,
            "classes": list(loaded.spec.classes),
            # a "custom" label set's colours (--classes FILE may give them): predict / eval / bench on the artifact
            **({} if loaded.dataset in DATASETS else {"palette": [list(c) for c in loaded.spec.palette]}),
            "weights": {**loaded.weights_info(), "sha256": weights_sha},
            "untrained": loaded.untrained,
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
            **({} if graph_report is None else {"graph_passes": graph_report}),
            "upsample": upsample if upsample_choices(loaded.name) else reference_upsample(loaded.name),
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
            # where the nodes would run on each accelerator the format reaches, each record naming its tool
            "residency": [r.model_dump() for r in residency],
            **({"residency_error": residency_error} if residency_error else {}),
            "export_seconds": round(export_seconds, 2),
            "versions": versions,
            "cache_key": key,
            "file": built.file,
            "sha256": artifact_sha256(file_path),
            "bytes": artifact_bytes(file_path),
        }
        write_manifest(tmp, manifest)
        (tmp / "lint.json").write_text(json.dumps(lint.as_dict(), indent=2) + "\n")
    return {**manifest, "cached": False, "folder": str(folder)}


def export_with(options: ExportOptions, *args, **kwargs) -> dict:
    """``export`` with the knobs of an ``ExportOptions`` record (check configs, sweep matrices)."""
    return export(*args, **options.model_dump(), **kwargs)


def _calibration_name(backend) -> str:
    # a backend offering only the default quantizes with PT2E, whose histogram observer stands behind the name
    methods = backend.calib_methods
    return "PT2E's histogram observer" if methods == ("percentile",) else " / ".join(methods)


def _backends_calibrating(method: str):
    from edgeseg.backends import BACKENDS

    return [b for b in BACKENDS.values() if method in b.calib_methods and b.int8_policy is not None]


MAX_PROFILE_RUNS = 2000


def op_profile(artifact: Path, threads: int = 2, runs: int = 20, warmup: int = 5) -> dict:
    """Per-kernel and per-op-type time of an exported artifact with its runtime here (``edgeseg.bench.opprofile``)."""
    from edgeseg.bench.opprofile import profile_artifact

    if threads < 1 or runs < 1 or warmup < 0:
        raise EdgesegError("--threads and --runs must be at least 1 and --warmup at least 0")
    if warmup + runs > MAX_PROFILE_RUNS:  # ONNX Runtime's profiler keeps every kernel event of every run
        raise EdgesegError(
            f"--warmup {warmup} + --runs {runs} is over {MAX_PROFILE_RUNS:,} profiled runs: kernel shares settle "
            "within a few dozen; pass fewer"
        )
    folder, manifest = read_manifest(Path(artifact))
    report = profile_artifact(folder, manifest, threads, runs, warmup).as_dict()
    report["target"] = manifest["target"]
    report["residency"] = artifact_residency(folder, manifest)
    return report


def artifact_residency(folder: Path, manifest: dict) -> list[dict]:
    """The manifest's residency records; measured now for an artifact exported before manifests carried them."""
    if "residency" in manifest:
        return manifest["residency"]
    records, _ = measure(backend_for(manifest["format"]), Path(folder) / manifest["file"])
    return [r.model_dump() for r in records]


def lint(artifact: Path, target: str | None = None) -> dict:
    """Lint a model file (or an artifact folder) against a target's rules (default: the manifest's target, else the
    file's own backend). An ONNX graph may be held to any backend's graph rules (how portable is it?)."""
    artifact = Path(artifact)
    if artifact.is_dir() and not artifact.name.endswith(".mlpackage"):
        folder, manifest = read_manifest(artifact)
        target = target or manifest["target"]
        artifact = folder / manifest["file"]
    if not artifact.exists():
        raise EdgesegError(f"artifact not found: {artifact}")
    own = backend_for_file(artifact)
    chosen = backend_for(get_target(target).format) if target else own
    if chosen.rules.name == own.rules.name:
        report = own.lint(artifact)
    elif own.name == "onnx":
        report = lint_onnx(artifact, chosen.rules)
    else:
        raise EdgesegError(f"{own.suffix} files are linted with the {own.rules.name} rules")
    records, why = measure(own, artifact)
    residency = {"residency": [r.model_dump() for r in records], **({"residency_error": why} if why else {})}
    return {"artifact": str(artifact), **report.as_dict(), **residency}
