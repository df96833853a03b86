"""The model registry: ``efficientvit-b1`` + dataset (or ``efficientvit-b1-camvid``) -> an nn.Module, and the
deploy rewrites an export of a model applies (``deploy_rewrites``).

Filled by registration, as timm's is: each model family is a package under ``edgeseg/models/`` whose
``register()`` adds its model entries (``register_model``) and its deploy rewrites
(``edgeseg.rewrite.register_rewrite``); ``edgeseg/models/__init__.py`` calls it for each built-in family, so
importing anything under ``edgeseg.models`` fills ``MODELS`` and ``edgeseg.rewrite.REWRITES``. This module
imports no family. The CLI validates names against ``MODELS`` and ``edgeseg models`` prints it.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from edgeseg.data.datasets import DATASETS, DatasetSpec
from edgeseg.errors import EdgesegError
from edgeseg.rewrite import REWRITES, Rewrite, family_rewrites, register_rewrite

# The input each dataset is evaluated at by default (H, W), multiples of 32.
DEFAULT_INPUT = {"cityscapes": (1024, 2048), "ade20k": (512, 512), "camvid": (384, 480)}

# The --upsample value commands pass when the user gives none. A family with a choice of head upsampling marks its
# own default (``Rewrite.default``; EfficientViT: this one, exact bicubic as two matmuls); for a family without a
# choice this value means "no choice made" and is ignored, as None is.
DEFAULT_UPSAMPLE = "matmul"


@dataclass(frozen=True)
class ModelEntry:
    name: str  # e.g. "efficientvit-b1"
    family: str  # the family package it comes from (efficientvit | lvt | segformer): picks the deploy rewrites
    datasets: tuple[str, ...]
    build: Callable[[str, int], nn.Module]  # (dataset, num_classes) -> model
    spec: DatasetSpec | None = None  # a user model's own "custom" dataset spec (edgeseg.models.user)
    input_size: tuple[int, int] | None = None  # a user model's export size (its ``input_size``, else the probe's)
    size_multiple: int | None = None  # a user model's input H, W multiple (its output stride); None: edgeseg's 32


MODELS: dict[str, ModelEntry] = {}  # name -> entry, in registration order


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add ``entry`` to ``MODELS``; a name registered twice is an error (ValueError)."""
    if entry.name in MODELS:
        raise ValueError(f"model {entry.name!r} is registered already (family {MODELS[entry.name].family})")
    MODELS[entry.name] = entry
    return entry


def register_family(entries, rewrites) -> None:
    """What a family's ``register()`` does: its model entries, then its rewrites in order (the order decides which
    rewrite of a module pattern supersedes another)."""
    for entry in entries:
        register_model(entry)
    for rewrite in rewrites:
        register_rewrite(rewrite)


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{hint} Valid: {', '.join(choices)}"


def resolve_model_name(name: str, dataset: str | None) -> tuple[str, str]:
    """Accept ``efficientvit-b1`` + dataset or ``efficientvit-b1-camvid``; return (model, dataset). A user model
    (``PATH.py:NAME``, ``package.module:NAME``) is registered on first use as ``user-<stem>-<name>``."""
    if ":" in name:
        name = _register_user_model(name)
    if name not in MODELS:
        base, _, suffix = name.rpartition("-")
        if base in MODELS and suffix in DATASETS:
            if dataset is not None and dataset != suffix:
                raise EdgesegError(f"model {name!r} names dataset {suffix!r} but --dataset is {dataset!r}")
            name, dataset = base, suffix
        else:
            raise EdgesegError(f"unknown model {name!r}.{_suggest(name, MODELS)}")
    entry = MODELS[name]
    dataset = dataset or (entry.spec.name if entry.spec is not None else "camvid")  # a user model: "custom"
    if _USER_LOADER and _USER_LOADER[0].current_options().classes is not None and dataset in DATASETS:
        raise EdgesegError(
            f"--classes names the classes of a 'custom' label set; --dataset {dataset} has its own: drop one of them"
        )
    if dataset not in DATASETS and dataset not in entry.datasets:
        raise EdgesegError(f"unknown dataset {dataset!r}.{_suggest(dataset, DATASETS)}")
    if dataset not in entry.datasets:
        raise EdgesegError(
            f"{name} has no {dataset} head (the official zoo has none); datasets for it: {', '.join(entry.datasets)}"
        )
    return name, dataset


def create_model(name: str, dataset: str | None = None) -> tuple[nn.Module, DatasetSpec]:
    """A freshly initialised model (eval mode) and the dataset spec its head is built for."""
    name, dataset = resolve_model_name(name, dataset)
    spec = DATASETS.get(dataset) or MODELS[name].spec
    model = MODELS[name].build(dataset, spec.num_classes)
    return model.eval(), spec


def _register_user_model(spec: str) -> str:
    """Register the user's model ``spec`` (importing its code) once; its registry name."""
    loader = _USER_LOADER[0]  # edgeseg.models.user: installed by edgeseg/models/__init__.py, imported before this
    options = loader.current_options()  # --num-classes / --classes of this command
    spec = loader.canonical(spec)
    name, identity = loader.entry_name(spec, options), spec + options.key()
    if name in MODELS and _USER_SPECS.get(name) != identity:  # another file (or class names) of that name
        name = f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:6]}"
    if name in MODELS and _USER_SPECS.get(name) == identity:
        return name
    fields = loader.user_entry_fields(spec, options)
    register_model(
        ModelEntry(
            name,
            loader.USER_FAMILY,
            fields["datasets"],
            fields["build"],
            fields["spec"],
            fields["input_size"],
            fields["size_multiple"],
        )
    )
    _USER_SPECS[name] = identity
    return name


_USER_SPECS: dict[str, str] = {}  # registry name -> the --model spec it was loaded from (+ its options' key)
_USER_LOADER: list = []  # the module that turns a spec into entry fields (this module imports none)


def install_user_loader(loader) -> None:
    """Set the loader of user models (``edgeseg.models.user``: ``canonical``, ``entry_name``,
    ``user_entry_fields``, ``current_options``, ``USER_FAMILY``)."""
    _USER_LOADER[:] = [loader]


def default_input(name: str, dataset: str) -> tuple[int, int]:
    """The input size an export of ``name`` on ``dataset`` uses when none is given: a user model's own, else the
    dataset's."""
    return _entry(name).input_size or DEFAULT_INPUT[dataset]


def size_multiple(name: str) -> tuple[int, str]:
    """What an export size of ``name`` must be a multiple of, and why: a user model's output stride, else 32."""
    entry = _entry(name)
    if entry.size_multiple is not None:
        return entry.size_multiple, f"the output stride of {name}"
    return 32, "edgeseg's models downsample 32x"


def is_user_model(name: str) -> bool:
    """Whether ``name`` (a registry name) is a user's model (``--model PATH.py:NAME``)."""
    return name in _USER_SPECS


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(name: str, dataset: str, size: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward at ``size`` (conv + matmul, as the official table counts them).

    The model is built on the meta device, so counting costs no compute even at 1024x2048.
    """
    from torch.utils.flop_counter import FlopCounterMode

    name, dataset = resolve_model_name(name, dataset)
    with torch.device("meta"):
        model = MODELS[name].build(dataset, (DATASETS.get(dataset) or MODELS[name].spec).num_classes).eval()
        x = torch.empty(1, 3, *size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def _entry(model_name: str) -> ModelEntry:
    if model_name not in MODELS:
        raise EdgesegError(f"unknown model {model_name!r}.{_suggest(model_name, MODELS)}")
    return MODELS[model_name]


def _upsample_rewrites(family: str) -> list[Rewrite]:
    return [r for r in family_rewrites(family) if r.upsample is not None]


def upsample_choices(model_name: str) -> dict[str, str]:
    """The model's ``--upsample`` choices: choice -> the rewrite that implements it (empty: its head has none)."""
    return {r.upsample: r.name for r in _upsample_rewrites(_entry(model_name).family)}


def _upsample_rewrite(model_name: str, upsample: str | None) -> Rewrite | None:
    """The head-upsampling rewrite for ``upsample`` (None: the family's default), or None for a head without a
    choice."""
    family = _entry(model_name).family
    choices = _upsample_rewrites(family)
    if not choices:
        if upsample is None or upsample == DEFAULT_UPSAMPLE:
            return None
        known = {r.upsample: r for r in REWRITES.values() if r.upsample is not None}
        if upsample not in known:
            raise EdgesegError(f"unknown --upsample {upsample!r}: use {', '.join(known) or 'none (no model has one)'}")
        families = sorted({f for r in known.values() for f in r.families} or {"any"})
        raise EdgesegError(
            f"--upsample {upsample} applies to the head upsampling of {', '.join(families)} models; {model_name}'s "
            "head has no upsampling choice: drop --upsample"
        )
    if upsample is None:
        defaults = [r for r in choices if r.default]
        if len(defaults) != 1:  # a family registration error, not the user's
            raise ValueError(
                f"family {family!r} has {len(defaults)} default --upsample rewrites "
                f"({', '.join(r.name for r in defaults) or 'none'}); it needs exactly one"
            )
        return defaults[0]
    for rewrite in choices:
        if rewrite.upsample == upsample:
            return rewrite
    raise EdgesegError(
        f"unknown --upsample {upsample!r} for {model_name}: use {', '.join(r.upsample for r in choices)}"
    )


def deploy_rewrites(model_name: str, fmt: str, precision: str, upsample: str | None = None) -> tuple[str, ...]:
    """The rewrites an export of ``model_name`` to format ``fmt`` ("onnx", "tensorrt", "tflite", "coreml") at
    ``precision`` ("fp32", "fp16", "int8") applies, by name, in the order ``apply_rewrites`` takes them.

    The default rewrites for the model's family that want (fmt, precision), in the family's registration order
    (``edgeseg.rewrite.family_rewrites``: its own and the shared ones it declared, then those for any family), one
    per module pattern: a later rewrite of a pattern supersedes an earlier one, dropping it and taking its place,
    as ``apply_rewrites`` does (``sra-single-head-batch2`` supersedes ``sra-split-kv`` in TFLite,
    ``rasa-weights-per-use`` supersedes ``rasa-split-kv`` in TFLite int8); a rewrite for any family never
    supersedes a family's own. Then the head-upsampling rewrite for ``upsample`` (None: the family's default).

    For a model whose head has no upsampling choice, None and ``DEFAULT_UPSAMPLE`` are ignored and any other choice
    is an EdgesegError that says to drop ``--upsample``; an unknown choice is one too, and so is a choice whose
    rewrite does not want (fmt, precision) (none today: every upsample rewrite wants every format).
    """
    family = _entry(model_name).family
    up = _upsample_rewrite(model_name, upsample)
    chosen: dict[type[nn.Module], Rewrite] = {}
    for rewrite in family_rewrites(family):
        if rewrite.upsample is not None or not rewrite.default or not rewrite.wants(fmt, precision):
            continue
        earlier = chosen.get(rewrite.pattern)
        if earlier is not None and earlier.families and not rewrite.families:
            continue  # the family knows its modules: its own rewrite outranks one for any family
        chosen[rewrite.pattern] = rewrite  # supersedes an earlier one in its place
    if up is not None:
        if not up.wants(fmt, precision):
            raise EdgesegError(f"--upsample {up.upsample} ({up.name}) is not for {fmt} {precision}: choose another")
        chosen[up.pattern] = up
    return tuple(r.name for r in chosen.values())
