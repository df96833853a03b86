"""Bring your own model: ``--model PATH.py:NAME`` or ``--model package.module:NAME`` becomes a registry entry.

``NAME`` is a zero-argument function (or class) in the user's code returning an ``nn.Module`` that maps a
``(1, 3, H, W)`` float image to ``(1, C, h, w)`` logits. The entry is a family of one (family ``custom``, which no
module-swap rewrite is for: its export goes through the graph passes of ``edgeseg.rewrite.graph``), registered
under ``user-<file stem>-<name>``; its dataset is ``custom`` (C generic class names and a generic palette), or
any built-in dataset with C classes (``--dataset camvid`` for an 11-class model). C is the module's
``num_classes`` attribute when it has one, else it is read off one forward at ``PROBE_SIZE``.

Loading the spec imports (executes) the user's file: only load code you trust.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path

import torch
import torch.nn as nn

from edgeseg.data.datasets import DATASETS, DatasetSpec
from edgeseg.errors import EdgesegError

CUSTOM_DATASET = "custom"
AS_BUILT = "as-built"  # the weights tag of a user module used as NAME() returns it
PROBE_SIZE = (224, 224)  # divisible by 32, 28 (Swin 4x7) and 16 (ViT patches): most models accept it
USER_FAMILY = "custom"


def state_sha256(module: nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes, values): the identity of as-built weights."""
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def is_user_spec(name: str) -> bool:
    """``PATH.py:NAME`` or ``package.module:NAME`` (a registry name never holds a colon)."""
    return ":" in name


def canonical(spec: str) -> str:
    """``spec`` with a file path made absolute (two spellings of one file are one model)."""
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py") or "/" in target or "\\" in target:
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return spec


def custom_spec(num_classes: int) -> DatasetSpec:
    """C generic class names (``class0`` ...) and a fixed generic palette."""
    g = torch.Generator().manual_seed(0)
    colors = torch.randint(0, 256, (num_classes, 3), generator=g).tolist()
    return DatasetSpec(
        name=CUSTOM_DATASET,
        classes=tuple(f"class{i}" for i in range(num_classes)),
        palette=tuple(tuple(int(v) for v in c) for c in colors),
    )


def _import(spec: str):
    """The module named by ``spec``'s left side; returns (module, module name, entry-name stem)."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr.isidentifier():
        raise EdgesegError(
            f"--model {spec!r}: write PATH.py:NAME or package.module:NAME (NAME a function returning an nn.Module)"
        )
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise EdgesegError(f"--model {spec!r}: file not found: {path} (pass an existing .py file)")
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
        mod_name = f"edgeseg_user_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{digest}"
        if mod_name in sys.modules:
            return sys.modules[mod_name], mod_name, path.stem
        ispec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(ispec)
        sys.modules[mod_name] = module  # so the export cache can hash its source (find_spec reads sys.modules)
        try:
            ispec.loader.exec_module(module)
        except Exception as exc:  # the user's code: any error is theirs, reported in one line
            del sys.modules[mod_name]
            raise EdgesegError(f"--model {spec!r}: importing {path.name} failed: {type(exc).__name__}: {exc}") from None
        return module, mod_name, path.stem
    try:
        module = importlib.import_module(target)
    except ImportError as exc:
        raise EdgesegError(
            f"--model {spec!r}: cannot import {target!r} ({exc}): check the name and that its package is on "
            "PYTHONPATH, or pass PATH.py:NAME"
        ) from None
    except Exception as exc:
        raise EdgesegError(f"--model {spec!r}: importing {target} failed: {type(exc).__name__}: {exc}") from None
    return module, target, target.rsplit(".", 1)[-1]


def _factory(spec: str):
    module, mod_name, stem = _import(spec)
    attr = spec.rpartition(":")[2]
    fn = getattr(module, attr, None)
    if fn is None:
        public = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")][:8]
        raise EdgesegError(
            f"--model {spec!r}: {mod_name if '/' not in spec else Path(spec.rpartition(':')[0]).name} has no "
            f"{attr!r}: define a function {attr}() returning an nn.Module "
            f"(callables there: {', '.join(public) or 'none'})"
        )
    if not callable(fn):
        raise EdgesegError(f"--model {spec!r}: {attr} is a {type(fn).__name__}, not a function or class")
    return fn, mod_name, stem


def build_user_module(spec: str) -> nn.Module:
    """Call the user's NAME() and check it returns an nn.Module (one-line errors otherwise)."""
    fn, _, _ = _factory(spec)
    name = spec.rpartition(":")[2]
    try:
        module = fn()
    except TypeError as exc:
        raise EdgesegError(f"--model {spec!r}: {name}() failed: {exc} (NAME must take no arguments)") from None
    except Exception as exc:
        raise EdgesegError(f"--model {spec!r}: {name}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise EdgesegError(
            f"--model {spec!r}: {name}() returned a {type(module).__name__}, not an nn.Module: return the model"
        )
    return module.eval()


def probe_output(spec: str, module: nn.Module, size: tuple[int, int] = PROBE_SIZE) -> tuple[int, int]:
    """(num_classes, output stride) of ``module`` from one forward on a ``(1, 3, *size)`` zero image (``size``: the
    module's ``input_size`` attribute when it has one)."""
    size = tuple(getattr(module, "input_size", size))
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, 3, *size))
    except Exception as exc:
        raise EdgesegError(
            f"--model {spec!r}: the module failed on a (1, 3, {size[0]}, {size[1]}) image: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''} (it must take (1, 3, H, W) float images)"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != 1:
        what = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise EdgesegError(
            f"--model {spec!r}: the module returned {what}; it must return (1, C, h, w) logits (one tensor, rank 4)"
        )
    c, h = int(out.shape[1]), int(out.shape[2])
    return c, max(1, size[0] // h)


def entry_name(spec: str) -> str:
    """``user-<stem>-<name>``: safe in folder names, never a built-in model's name."""
    stem = spec.rpartition(":")[0]
    stem = Path(stem).stem if stem.endswith(".py") or "/" in stem else stem.rsplit(".", 1)[-1]
    name = spec.rpartition(":")[2]
    return re.sub(r"[^0-9a-zA-Z_]+", "_", f"user-{stem}-{name}").replace("_", "-").lower().strip("-")


def user_entry_fields(spec: str) -> dict:
    """What ``edgeseg.models.registry`` needs to register ``spec``: name, datasets, build, custom spec, stride."""
    fn, mod_name, _ = _factory(spec)
    from edgeseg.export_request import RANDOM_SEED

    with torch.random.fork_rng():
        torch.manual_seed(RANDOM_SEED)
        probe = build_user_module(spec)
    declared = getattr(probe, "num_classes", None)
    c, stride = probe_output(spec, probe)
    input_size = tuple(int(v) for v in getattr(probe, "input_size", PROBE_SIZE))
    if isinstance(declared, int) and declared != c:
        raise EdgesegError(f"--model {spec!r}: num_classes is {declared} but the module returns {c} channels")
    datasets = (CUSTOM_DATASET, *(d for d, s in DATASETS.items() if s.num_classes == c))

    def build(dataset: str, num_classes: int) -> nn.Module:
        module = build_user_module(spec)
        if not hasattr(module, "output_stride"):
            module.output_stride = stride  # read by export for the manifest's output shape
        return module

    build.__module__ = mod_name  # the export cache hashes the user's source through this
    return {
        "name": entry_name(spec),
        "datasets": datasets,
        "build": build,
        "spec": custom_spec(c),
        "factory": fn,
        "input_size": input_size,
    }
