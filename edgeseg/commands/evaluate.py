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
from edgeseg.data.datasets import (
    DATASETS,
    DatasetSpec,
    check_image_header,
    check_labels,
    list_images,
    list_split,
    load_split,
    read_image,
)
from edgeseg.data.groups import group_rule, groups_of, overlap_warning, shared_groups
from edgeseg.data.transforms import parse_size
from edgeseg.errors import EdgesegError, at_least
from edgeseg.eval.evaluate import evaluate_arrays, plan_for, predict_label_map, torch_predictor
from edgeseg.eval.stats import ImageScores, bootstrap_iou
from edgeseg.export_request import RANDOM_SEED, RANDOM_WEIGHTS
from edgeseg.io import atomic_write_bytes, output_folder, sha256_file
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
    from edgeseg.models.user import AS_BUILT, state_sha256

    # a user's module: the weights its code gives it (NAME() may load some); an artifact's manifest says "as-built"
    if (not weights or weights == AS_BUILT) and is_user_model(name):
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
    at_least(threads, 1, "--threads")
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
        from edgeseg.models.user import manifest_spec

        spec = DATASETS.get(m["dataset"]) or manifest_spec(m)  # a user model's "custom" labels, as exported
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
    groups: list[str] | None = None,
    ignore_invalid_labels: bool = False,
    per_image: bool = False,
) -> dict:
    """mIoU, pixel accuracy and per-class IoU over a labelled split (comma-separated splits are pooled; ``groups``
    keeps only the images of those groups, e.g. one held-out CamVid sequence), of a model (optionally with a deploy
    head ``upsample`` rewrite: ``bilinear`` measures what the approximation costs) or of an exported ``artifact`` run
    with its runtime here; returns the JSON report. Label values outside the model's classes and ignore index are
    an error, or with ``ignore_invalid_labels`` counted as unlabelled (``notice`` is told how many).
    ``per_image``: also ``"scores"``, the per-image counts (``edgeseg.eval.stats.ImageScores``, not JSON) that
    intervals and paired comparisons resample."""
    at_least(limit, 1, "--limit")
    src = _open_source(model, dataset, weights, artifact, fit, size, upsample, threads, notice)
    if src.info["weights"].get("untrained") or (artifact is not None and src.info.get("untrained")):
        raise EdgesegError(
            "these weights are untrained (--weights random): mIoU means nothing for them; evaluate trained weights"
        )
    samples, images, labels = _load_pooled(Path(data), split, groups)
    if limit:
        samples, images, labels = samples[:limit], images[:limit], labels[:limit]
    stems = [s.stem for s in samples]
    seen = training_groups(src.info.get("model"), src.info.get("weights") or {}, Path(data))
    shared = None if seen is None else shared_groups(seen, stems, Path(data))
    if shared and notice:
        notice(overlap_warning(split, shared))
    invalid_pixels, invalid_files = check_labels(samples, labels, src.spec, ignore_invalid_labels)
    if invalid_pixels and notice is not None:
        notice(
            f"warning: {invalid_pixels:,} label pixels in {invalid_files} file(s) hold values outside the "
            f"{src.spec.name} classes: counted as unlabelled (--ignore-invalid-labels)"
        )
    fit_plan = plan_for(images[0], src.fit, src.size)
    report = progress or (lambda *a, **k: None)
    report("start", total=len(images), fit=fit_plan.describe())
    # per-image counts always (the mIoU interval); the Boundary IoU bands only where asked (they cost a little)
    scores = ImageScores(src.spec.num_classes, src.spec.ignore_index, boundary=per_image)
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
        scores=scores,
    )
    scores.names[:] = stems
    seconds = time.perf_counter() - t0
    interval = bootstrap_iou(*scores.iou_counts())
    extra = {"scores": scores} if per_image else {}
    return {
        **src.info,
        "data": str(data),
        "split": split + (f" (groups {','.join(groups)})" if groups else ""),
        "groups": groups_of(stems, Path(data)),
        # groups of these images the weights were trained on (None: the weights do not say what they saw)
        "shares_training_groups": shared,
        "images": len(images),
        "input": fit_plan.describe(),
        **metrics.as_dict(src.spec.classes),
        "miou_ci95": list(interval.mean_ci95),  # 95 % bootstrap interval over the images (edgeseg.eval.stats)
        "seconds": seconds,
        "invalid_label_pixels": invalid_pixels,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        **extra,
    }


def _load_pooled(data: Path, split: str, groups: list[str] | None):
    samples, images, labels = [], [], []
    for name in [n.strip() for n in split.split(",") if n.strip()]:
        s, i, lb = load_split(data, name)
        samples, images, labels = samples + s, images + i, labels + lb
    if groups:
        present = groups_of([s.stem for s in samples], data)
        missing = sorted(set(groups) - set(present))
        if missing:
            raise EdgesegError(
                f"group(s) {', '.join(missing)} not in split {split!r}: its groups are {', '.join(present)}"
            )
        rule = group_rule(data)
        keep = [k for k, s in enumerate(samples) if rule(s.stem) in set(groups)]
        samples, images, labels = [samples[k] for k in keep], [images[k] for k in keep], [labels[k] for k in keep]
    if not samples:
        raise EdgesegError(f"no images in split {split!r} of {data}")
    return samples, images, labels


def training_groups(model: str | None, weights: dict, data: Path) -> list[str] | None:
    """The groups (sequences) the weights were trained on: recorded by ``edgeseg train`` in the checkpoint and by
    ``weights publish`` in the registry; for a registry entry trained on named splits without a record, the groups
    of those splits in ``data``. None when nothing says (a foreign checkpoint)."""
    record = None
    if model and weights.get("tag"):
        record = weights_mod.registered_tags(model).get(weights["tag"])
    if record is None and weights.get("path") and Path(weights["path"]).is_file():
        try:
            record = torch.load(weights["path"], map_location="cpu", weights_only=True)
        except Exception:  # a file edgeseg cannot read as a checkpoint says nothing about its training data
            return None
        if not isinstance(record, dict):
            return None
    if not record:
        return None
    split = record.get("split") or {}
    if split.get("train_groups"):
        return sorted(split["train_groups"])
    config = record.get("train_config") or record.get("config") or {}
    names = [n.strip() for n in str(config.get("train_split", "")).split(",") if n.strip()]
    if not names or config.get("limit_train"):
        return None
    try:
        return sorted({g for n in names for g in groups_of([s.stem for s in list_split(data, n)], data)})
    except EdgesegError:
        return None  # the training split is not in this data folder: nothing to compare against


def colorize(labels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: spec.num_classes] = np.array(spec.palette, dtype=np.uint8)
    return palette[labels]


# A tEXt chunk in every PNG predict writes: a later run may replace the file (it is edgeseg's output), while any
# other file at that path is somebody's input and is left alone unless --force.
_PNG_MARK = ("Software", "edgeseg predict")


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(*_PNG_MARK)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _written_by_predict(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            return im.format == "PNG" and im.info.get(_PNG_MARK[0]) == _PNG_MARK[1]
    except Exception:  # not an image at all: certainly not ours
        return False


def _check_predict_outputs(images: Path, out: Path, files: list[Path], overlay: bool, force: bool) -> None:
    """Refuse an --out that is, contains or lies inside the --images folder, and files in --out that predict did
    not write (unless ``force``), before anything is written: edgeseg never writes over its inputs."""
    src, dst = images.resolve(), out.resolve()
    relation = None
    if dst == src:
        relation = "is"
    elif dst.is_relative_to(src):
        relation = "lies inside"
    elif src.is_relative_to(dst):
        relation = "contains"
    if relation:
        raise EdgesegError(
            f"--out {out} {relation} the --images folder {images}: pass a separate output folder (predict never "
            "writes where its inputs are)"
        )
    if force:
        return
    targets = [out / f"{f.stem}.png" for f in files]
    if overlay:
        targets += [out / "overlay" / f"{f.stem}.png" for f in files]
        if _legend_path(out, files) is not None:
            targets.append(_legend_path(out, files))
    foreign = [t for t in targets if t.exists() and (t.is_dir() or not _written_by_predict(t))]
    if foreign:
        more = f" (+{len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise EdgesegError(
            f"--out would overwrite {foreign[0]}{more}, which predict did not write: pass an empty output folder, "
            "or --force to replace it"
        )


LEGEND = "legend.png"


def _legend_path(out: Path, files: list[Path]) -> Path | None:
    """Where the overlays' legend goes: ``OUT/overlay/legend.png``, unless an input image's overlay has that name."""
    return None if any(f"{f.stem}.png" == LEGEND for f in files) else out / "overlay" / LEGEND


def legend_png(spec: DatasetSpec) -> bytes:
    """The overlays' legend: one row per class with its colour, its index (the label maps' pixel value) and its
    name."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row, swatch = 22, 16
    width = 12 + swatch + 8 + max(int(probe.textlength(f"{i} {n}", font=font)) for i, n in enumerate(spec.classes))
    image = Image.new("RGB", (max(width, 64), 8 + row * spec.num_classes), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for i, (name, color) in enumerate(zip(spec.classes, spec.palette)):
        y = 4 + row * i
        draw.rectangle([6, y + 2, 6 + swatch, y + 2 + swatch], fill=tuple(color), outline=(0, 0, 0))
        draw.text((6 + swatch + 8, y + 4), f"{i} {name}", fill=(0, 0, 0), font=font)
    return _png_bytes(np.asarray(image))


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
    force: bool = False,
) -> list[Path]:
    """One 8-bit class-index PNG per image (same stem and size as the input) in ``out``; with ``overlay``, a colour
    overlay in ``out/overlay``. Runs a model or an exported artifact. Each file is written atomically. ``out``
    may not be or overlap the ``images`` folder, nor replace files predict did not write (unless ``force``)."""
    src = _open_source(model, dataset, weights, artifact, fit, size, None, None)
    files = list_images(Path(images))
    out = output_folder(Path(out), "--out")
    _check_predict_outputs(Path(images), out, files, overlay, force)
    for path in files:  # an unreadable or oversized image is refused before the first label map is written
        check_image_header(path)
    report = progress or (lambda *a, **k: None)
    report("start", total=len(files))
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
    legend = _legend_path(out, files) if overlay else None
    if legend is not None:  # the class names (a user model's --classes, or its artifact's manifest) and colours
        atomic_write_bytes(legend, legend_png(src.spec))
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
    for option, value in (
        ("--epochs", cfg.epochs),
        ("--batch-size", cfg.batch_size),
        ("--eval-every", cfg.eval_every),
        ("--threads", cfg.threads),
        ("--max-steps", cfg.max_steps),
        ("--limit-train", cfg.limit_train),
        ("--limit-val", cfg.limit_val),
    ):
        at_least(value, 1, option)
    return run_training(cfg, progress=progress, resume=resume)
