"""The rewrite framework: named module swaps applied to a copy of a reference model before export.

Like MMDeploy's rewriters, but explicit: each record (``Rewrite``) names the module class it replaces, a factory
for the replacement, the model families it is for and the export formats and precisions that want it; the
replacement's docstring states the pattern it matches and the backend constraint it satisfies.

``REWRITES`` is filled by registration (``register_rewrite``): each model family package under ``edgeseg/models/``
registers its own rewrites and declares which shared ones (``edgeseg.rewrite.common``) apply to it;
``hardswish-as-clamp`` is registered for any model here. This module knows no model family. What an export
applies is ``edgeseg.models.registry.deploy_rewrites``; ``apply_rewrites`` swaps the modules.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.errors import EdgesegError


@dataclass(frozen=True)
class Rewrite:
    """A deploy rewrite: replace every module of class ``pattern`` by ``replace(module)``.

    - ``families``: the model families (registry ``family``) it is for; empty: any model.
    - ``formats``: the export formats that want it ("onnx", "tensorrt", "tflite", "coreml"); None: every format,
      including formats a new backend adds later.
    - ``precisions``: the precisions that want it ("fp32", "fp16", "int8"); None: every precision.
    - ``default``: applied without being asked for; False for opt-in rewrites (``gelu-tanh``). Among a family's
      ``upsample`` rewrites, the one it uses when no choice is given.
    - ``upsample``: the ``--upsample`` choice it implements (a head-upsampling rewrite, applied only when chosen).

    Of two rewrites of one pattern that an export wants, the one registered later for the family supersedes the
    earlier (``edgeseg.models.registry.deploy_rewrites``).
    """

    name: str
    pattern: type[nn.Module]
    replace: Callable[[nn.Module], nn.Module]
    summary: str
    families: tuple[str, ...] = ()
    formats: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    default: bool = True
    upsample: str | None = None

    def fits(self, family: str) -> bool:
        return not self.families or family in self.families

    def wants(self, fmt: str, precision: str) -> bool:
        """Whether an export to ``fmt`` at ``precision`` wants this rewrite."""
        return (self.formats is None or fmt in self.formats) and (
            self.precisions is None or precision in self.precisions
        )

    def for_family(self, family: str) -> Rewrite:
        """This shared rewrite, declared for ``family`` (the family package registers the result)."""
        return dataclasses.replace(self, families=(family,))


REWRITES: dict[str, Rewrite] = {}  # name -> record, in registration order
_FAMILY_ORDER: dict[str, list[str]] = {}  # family -> the rewrites registered for it, in the order it registered them


def register_rewrite(rewrite: Rewrite) -> Rewrite:
    """Add ``rewrite`` to ``REWRITES`` and return the registered record.

    A name registered twice is an error (ValueError), except a shared rewrite that several families declare (each
    family package registers ``common.LAYERNORM_FP32.for_family(its_family)``): records equal in all but
    ``families`` are merged into one for all of those families, keeping its first registration's place.
    """
    for field in ("families", "formats", "precisions"):
        value = getattr(rewrite, field)
        if value is not None and not (isinstance(value, tuple) and all(isinstance(v, str) for v in value)):
            raise ValueError(f"rewrite {rewrite.name!r}: {field} must be a tuple of strings, got {value!r}")
    old = REWRITES.get(rewrite.name)
    if old is not None:
        same = dataclasses.replace(rewrite, families=old.families) == old
        if not (same and old.families and rewrite.families):
            raise ValueError(f"rewrite {rewrite.name!r} is registered already ({old.summary})")
        added = tuple(f for f in rewrite.families if f not in old.families)
        rewrite = dataclasses.replace(old, families=old.families + added)
    else:
        added = rewrite.families
    REWRITES[rewrite.name] = rewrite
    for family in added:
        _FAMILY_ORDER.setdefault(family, []).append(rewrite.name)
    return rewrite


def family_rewrites(family: str) -> tuple[Rewrite, ...]:
    """The rewrites for models of ``family``: its own and the shared ones it declared, in the order it registered
    them, then the rewrites for any family, in registration order."""
    own = [REWRITES[name] for name in _FAMILY_ORDER.get(family, ())]
    return tuple(own + [r for r in REWRITES.values() if not r.families])


def _check_names(names) -> None:
    unknown = [n for n in names if n not in REWRITES]
    if unknown:
        raise EdgesegError(f"unknown rewrite(s) {', '.join(unknown)}; valid: {', '.join(REWRITES)}")


def apply_rewrites(model: nn.Module, names: list[str] | tuple[str, ...]) -> tuple[nn.Module, dict[str, int]]:
    """A deep copy of ``model`` with each named rewrite applied; returns it and the count of swaps per rewrite.

    Later rewrites of the same pattern win (``bicubic-to-bilinear`` after ``upsample-fp32``). A replacement's own
    children are visited too, so a rewrite of an inner module (``layernorm-fp32``) reaches the modules a replaced
    attention block holds.
    """
    _check_names(names)
    model = copy.deepcopy(model)
    chosen: dict[type, Rewrite] = {}
    for name in names:
        chosen[REWRITES[name].pattern] = REWRITES[name]
    counts = {r.name: 0 for r in chosen.values()}

    def swap(parent: nn.Module) -> None:
        for child_name, child in list(parent.named_children()):
            rewrite = chosen.get(type(child))
            if rewrite is not None:
                child = rewrite.replace(child)
                setattr(parent, child_name, child)
                counts[rewrite.name] += 1
            swap(child)

    swap(model)
    return model, counts


class DeployWrapper(nn.Module):
    """The graph an artifact holds: fp32 image in, logits (or labels) out.

    ``dtype`` fp16 casts the input to half at the entry and the output back to fp32 (apps feed fp32 buffers).
    ``with_argmax`` upsamples logits to the input size (bilinear, align_corners=False) and returns int32 class
    labels, which is what an app on a device wants.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32, with_argmax: bool = False):
        super().__init__()
        self.model, self.dtype, self.with_argmax = model, dtype, with_argmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x.to(self.dtype)).float()
        if not self.with_argmax:
            return logits
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits.argmax(dim=1).to(torch.int32)


from edgeseg.rewrite import common  # noqa: E402,F401  (registers the family-agnostic rewrites)
