"""The model registry: ``efficientvit-b1`` + dataset (or ``efficientvit-b1-camvid``) -> an nn.Module.

One table (``MODELS``) lists what exists; the CLI validates names against it and ``edgeseg models`` prints it.
Each entry names its ``family`` (the model file it comes from); deploy rewrites are chosen per family.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from edgeseg.data.datasets import DATASETS, DatasetSpec
from edgeseg.errors import EdgesegError
from edgeseg.models.efficientvit.model import EFFICIENTVIT_SEG_CONFIGS, build_efficientvit_seg
from edgeseg.models.lvt.model import build_lvt_seg
from edgeseg.models.segformer.model import build_segformer

# Where a dataset's head comes from: CamVid reuses the Cityscapes head (street scenes, few classes).
_HEAD_FAMILY = {"cityscapes": "cityscapes", "camvid": "cityscapes", "ade20k": "ade20k"}

# The input each dataset is evaluated at by default (H, W), multiples of 32.
DEFAULT_INPUT = {"cityscapes": (1024, 2048), "ade20k": (512, 512), "camvid": (384, 480)}


@dataclass(frozen=True)
class ModelEntry:
    name: str  # e.g. "efficientvit-b1"
    family: str  # the model file it comes from (efficientvit | lvt | segformer): picks the deploy rewrites
    datasets: tuple[str, ...]
    build: Callable[[str, int], nn.Module]  # (dataset, num_classes) -> model


def _efficientvit_entry(variant: str) -> ModelEntry:
    heads = EFFICIENTVIT_SEG_CONFIGS[variant].heads
    datasets = tuple(d for d, fam in _HEAD_FAMILY.items() if fam in heads)
    return ModelEntry(
        name=f"efficientvit-{variant}",
        family="efficientvit",
        datasets=datasets,
        build=lambda dataset, n, v=variant: build_efficientvit_seg(v, _HEAD_FAMILY[dataset], n),
    )


# LVT and SegFormer share one head design for every dataset (the official configs differ only in classes); the
# official zoo has LVT on ADE20K and SegFormer-B0 on ADE20K and Cityscapes. CamVid heads have 11 classes.
_OTHER_ENTRIES = (
    ModelEntry("lvt", "lvt", ("ade20k", "camvid"), lambda dataset, n: build_lvt_seg(n)),
    ModelEntry(
        "segformer-b0", "segformer", ("cityscapes", "ade20k", "camvid"), lambda dataset, n: build_segformer("b0", n)
    ),
)

MODELS: dict[str, ModelEntry] = {
    e.name: e for e in (*(_efficientvit_entry(v) for v in EFFICIENTVIT_SEG_CONFIGS), *_OTHER_ENTRIES)
}


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{hint} Valid: {', '.join(choices)}"


def resolve_model_name(name: str, dataset: str | None) -> tuple[str, str]:
    """Accept ``efficientvit-b1`` + dataset or ``efficientvit-b1-camvid``; return (model, dataset)."""
    if name not in MODELS:
        base, _, suffix = name.rpartition("-")
        if base in MODELS and suffix in DATASETS:
            if dataset is not None and dataset != suffix:
                raise EdgesegError(f"model {name!r} names dataset {suffix!r} but --dataset is {dataset!r}")
            name, dataset = base, suffix
        else:
            raise EdgesegError(f"unknown model {name!r}.{_suggest(name, MODELS)}")
    entry = MODELS[name]
    dataset = dataset or "camvid"
    if dataset not in DATASETS:
        raise EdgesegError(f"unknown dataset {dataset!r}.{_suggest(dataset, DATASETS)}")
    if dataset not in entry.datasets:
        raise EdgesegError(
            f"{name} has no {dataset} head (the official zoo has none); datasets for it: {', '.join(entry.datasets)}"
        )
    return name, dataset


def create_model(name: str, dataset: str | None = None) -> tuple[nn.Module, DatasetSpec]:
    """A freshly initialised model (eval mode) and the dataset spec its head is built for."""
    name, dataset = resolve_model_name(name, dataset)
    spec = DATASETS[dataset]
    model = MODELS[name].build(dataset, spec.num_classes)
    return model.eval(), spec


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(name: str, dataset: str, size: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward at ``size`` (conv + matmul, as the official table counts them).

    The model is built on the meta device, so counting costs no compute even at 1024x2048.
    """
    from torch.utils.flop_counter import FlopCounterMode

    name, dataset = resolve_model_name(name, dataset)
    with torch.device("meta"):
        model = MODELS[name].build(dataset, DATASETS[dataset].num_classes).eval()
        x = torch.empty(1, 3, *size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2
