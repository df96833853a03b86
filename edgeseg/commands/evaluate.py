"""eval, predict, models and train: load a registered model with its weights (or an exported artifact) and run
it on images."""

from __future__ import annotations

import io
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgeseg.commands import Progress
from edgeseg.data.datasets import DATASETS, DatasetSpec, list_images, load_split, read_image
from edgeseg.data.transforms import parse_size
from edgeseg.errors import EdgesegError
from edgeseg.eval.evaluate import evaluate_arrays, plan_for, predict_label_map, torch_predictor
from edgeseg.export_request import RANDOM_SEED, RANDOM_WEIGHTS
from edgeseg.io import atomic_write_bytes, sha256_file
from edgeseg.models import weights as weights_mod
from edgeseg.models.registry import (
    DEFAULT_INPUT,
    MODELS,
    count_macs,
    count_params,
    create_model,
    is_user_model,
    resolve_model_name,
    upsample_choices,
)
from edgeseg.train.trainer import TrainConfig, TrainResult
from edgeseg.train.trainer import train as run_training


@dataclass
class LoadedModel:
    name: str
    dataset: str
    spec: DatasetSpec
    model: torch.nn.Module
    weights: weights_mod.WeightsSource

    @property
    def untrained(self) -> bool:
        return self.weights.tag == RANDOM_WEIGHTS

    def weights_info(self) -> dict:
        w = self.weights
        info = {"path": None if w.path is None else str(w.path), "tag": w.tag, "sha256": w.sha256}
        if self.untrained:
            info.update(untrained=True, seed=RANDOM_SEED)
        return info

    def weights_sha256(self) -> str:
        """The weights' identity for cache keys: the file's sha256, or the seeded initialisation's name."""
        if self.untrained:
            return f"{RANDOM_WEIGHTS}-seed{RANDOM_SEED}"
        return self.weights.sha256 or sha256_file(self.weights.path)


def default_weights(name: str, dataset: str) -> str:
    """The shipped weights tag for ``name`` on ``dataset`` (tags are dataset names); a one-line error naming the
    choices where none are shipped."""
    tags = weights_mod.registered_tags(name)
    if dataset in tags:
        return dataset
    what = f"no weights are shipped for {name}"
    if tags:
        what = f"no {dataset} weights are shipped for {name} (shipped: {', '.join(tags)})"
    raise EdgesegError(
        f"{what}: pass --weights PATH.pt, or --weights {RANDOM_WEIGHTS} for an untrained graph (size, lint and "
        "latency; no mIoU)"
    )


def load_model(
    model: str, dataset: str | None, weights: str | None, notice: Callable[[str], None] | None = None
) -> LoadedModel:
    """Build a registered model and load weights strictly: a registry tag such as ``camvid``, a file, ``random``
    (seeded, untrained) or None (the shipped weights for the model's dataset; ``notice`` is told which)."""
    name, dataset = resolve_model_name(model, dataset)
    if not weights and is_user_model(name):  # a user's module: the weights its code gives it (NAME() may load some)
        from edgeseg.models.user import AS_BUILT, state_sha256

        with torch.random.fork_rng():
            torch.manual_seed(RANDOM_SEED)
            net, spec = create_model(name, dataset)
        source = weights_mod.WeightsSource(None, AS_BUILT, state_sha256(net), None)
        if notice is not None:
            notice(
                f"weights: as {model} builds them (seed {RANDOM_SEED}, sha256 {source.sha256[:12]}); "
                f"--weights {RANDOM_WEIGHTS} marks them untrained, --weights PATH.pt loads others"
            )
        return LoadedModel(name, dataset, spec, net.eval(), source)
    if weights == RANDOM_WEIGHTS:
        with torch.random.fork_rng():
            torch.manual_seed(RANDOM_SEED)
            net, spec = create_model(name, dataset)
        source = weights_mod.WeightsSource(None, RANDOM_WEIGHTS, None, None)
        return LoadedModel(name, dataset, spec, net.eval(), source)
    if not weights:
        weights = default_weights(name, dataset)
        source = weights_mod.resolve_weights(name, weights)
        if notice is not None:
            notice(f"weights: shipped {name} {weights} (sha256 {source.sha256[:12]})")
    else:
        source = weights_mod.resolve_weights(name, weights)
    net, spec = create_model(name, dataset)
    weights_mod.load_weights(net, source)
    return LoadedModel(name, dataset, spec, net.eval(), source)


def reference_upsample(model_name: str) -> str:
    """What the PyTorch reference head does, for a model evaluated without a rewrite."""
    return "reference (bicubic resize)" if upsample_choices(model_name) else "reference (bilinear resize)"


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
    notice: Callable[[str], None] | None = None,
) -> _Source:
    if threads:
        torch.set_num_threads(threads)
    if artifact is not None:
        if model or weights or upsample:
            raise EdgesegError("pass either --artifact or --model/--weights/--upsample, not both")
        from edgeseg.backends import load_artifact

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
            "untrained": bool(m.get("untrained")),
        }
        from edgeseg.models.user import custom_spec

        spec = DATASETS.get(m["dataset"]) or custom_spec(len(m["classes"]))  # a user model's "custom" labels
        return _Source(art.run, spec, None, art.input_size, art.outputs_labels, info)
    if not model:
        raise EdgesegError("pass --model (with --weights) or --artifact")
    loaded = load_model(model, dataset, weights, notice)
    net = loaded.model
    if upsample is not None:
        from edgeseg.rewrite import apply_rewrites

        choices = upsample_choices(loaded.name)
        if not choices:
            raise EdgesegError(f"--upsample applies to a bicubic head; {loaded.name}'s head resizes bilinear: drop it")
        if upsample not in choices:
            raise EdgesegError(f"unknown --upsample {upsample!r}: use {', '.join(choices)}")
        net, _ = apply_rewrites(net, [choices[upsample]])
    info = {
        "model": loaded.name,
        "dataset": loaded.dataset,
        "runtime": "pytorch",
        "upsample": upsample or reference_upsample(loaded.name),
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
    notice: Callable[[str], None] | None = None,
) -> dict:
    """mIoU, pixel accuracy and per-class IoU over a labelled split, of a model (optionally with a deploy head
    ``upsample`` rewrite: ``bilinear`` measures what the approximation costs) or of an exported ``artifact`` run
    with its runtime here; returns the JSON report."""
    src = _open_source(model, dataset, weights, artifact, fit, size, upsample, threads, notice)
    if src.info["weights"].get("untrained") or (artifact is not None and src.info.get("untrained")):
        raise EdgesegError(
            "these weights are untrained (--weights random): mIoU means nothing for them; evaluate trained weights"
        )
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
