"""Bring your own model: ``--model PATH.py:NAME`` or ``--model package.module:NAME`` becomes a registry entry.

``NAME`` is a zero-argument function (or class) in the user's code returning an ``nn.Module`` that maps a
``(1, 3, H, W)`` float image to ``(1, C, h, w)`` logits. The entry is a family of one (family ``custom``, which no
module-swap rewrite is for: its export goes through the graph passes of ``edgeseg.rewrite.graph``), registered
under ``user-<file stem>-<name>``; its dataset is ``custom`` (C generic class names and a generic palette), or
any built-in dataset with C classes (``--dataset camvid`` for an 11-class model). C is the module's
``num_classes`` attribute when it has one, else it is read off one forward at ``PROBE_SIZE``.

``--num-classes N`` builds ``NAME(num_classes=N)`` (the entry is then ``user-<stem>-<name>-c<N>``) and
``--classes`` names the ``custom`` classes (``UserModelOptions``, set for one command by ``user_model_options``).

Loading the spec imports (executes) the user's file: only load code you trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
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


def custom_spec(num_classes: int, names=None, palette=None) -> DatasetSpec:
    """The ``custom`` label set: ``names`` (else generic ``class0`` ...) and ``palette`` (else a fixed generic one)."""
    g = torch.Generator().manual_seed(0)
    colors = torch.randint(0, 256, (num_classes, 3), generator=g).tolist()
    return DatasetSpec(
        name=CUSTOM_DATASET,
        classes=tuple(names) if names is not None else tuple(f"class{i}" for i in range(num_classes)),
        palette=tuple(tuple(int(v) for v in c) for c in (palette if palette is not None else colors)),
    )


def manifest_spec(manifest: dict) -> DatasetSpec:
    """The ``custom`` label set an artifact's manifest records (its class names, and its palette when it has a valid
    one), so every command on the artifact shows the names the export was given."""
    names = [str(n) for n in manifest.get("classes") or []]
    palette = manifest.get("palette")
    valid = (
        isinstance(palette, list)
        and len(palette) == len(names)
        and all(
            isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in palette
        )
    )
    return custom_spec(len(names), names, palette if valid else None)


@dataclass(frozen=True)
class UserModelOptions:
    """What ``--num-classes`` and ``--classes`` ask of a user model: ``NAME(num_classes=N)`` and the names (and
    colours) of its ``custom`` classes. The empty record asks nothing."""

    num_classes: int | None = None
    classes: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None

    def __bool__(self) -> bool:
        return self.num_classes is not None or self.classes is not None

    def key(self) -> str:
        """The options' identity (a registry entry is one spec with one set of options)."""
        return repr((self.num_classes, self.classes, self.palette)) if self else ""


_NO_OPTIONS = UserModelOptions()
_OPTIONS: ContextVar[UserModelOptions | None] = ContextVar("edgeseg_user_model_options", default=None)


@contextlib.contextmanager
def user_model_options(options: UserModelOptions) -> Iterator[None]:
    """Within the block, a user model is registered with ``options`` (set by the CLI for one command)."""
    token = _OPTIONS.set(options)
    try:
        yield
    finally:
        _OPTIONS.reset(token)


def current_options() -> UserModelOptions:
    return _OPTIONS.get() or _NO_OPTIONS


_CLASS_FILES = (".txt", ".yaml", ".yml")


def parse_model_options(num_classes: int | None, classes: str | None) -> UserModelOptions:
    """``--num-classes`` and ``--classes`` (``a,b,c``, or a .txt file with one name per line, or a YAML list /
    ``{names: [...], colors: [[r, g, b], ...]}``) checked; a problem is one EdgesegError naming it and the fix."""
    if num_classes is not None and num_classes < 1:
        raise EdgesegError(f"--num-classes must be at least 1 (got {num_classes})")
    if classes is None:
        return UserModelOptions(num_classes)
    text = classes.strip()
    palette = None
    looks_like_path = "," not in text and (text.lower().endswith(_CLASS_FILES) or "/" in text or "\\" in text)
    if looks_like_path or Path(text).expanduser().is_file():
        names, palette = _read_class_file(Path(text).expanduser())
        where = f"--classes {text}"
    else:
        names = [n.strip() for n in text.split(",")]
        where = f"--classes {classes!r}"
        if len(names) > 1 and not names[-1]:
            names = names[:-1]  # a trailing comma
    empty = [i for i, n in enumerate(names) if not n]
    if not names or empty:
        at = f" (name {empty[0] + 1} is empty)" if names and empty else ""
        raise EdgesegError(f"{where}: class names must be non-empty{at}: write e.g. --classes road,car,person")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise EdgesegError(
                f"{where}: class {n!r} is named twice (positions {seen[n] + 1} and {i + 1}): names must be unique"
            )
        seen[n] = i
    if num_classes is not None and len(names) != num_classes:
        raise EdgesegError(
            f"{where} names {len(names)} classes but --num-classes is {num_classes}: give {num_classes} names"
        )
    return UserModelOptions(num_classes, tuple(names), palette)


def config_model_options(
    name: str, num_classes: int | None, classes: str | list[str] | None, where: str, folder: Path
) -> UserModelOptions:
    """A check config's or sweep matrix's ``num_classes`` / ``classes`` for model ``name``, as ``--num-classes`` /
    ``--classes`` (a class file relative to ``folder``, the config's); a problem is one EdgesegError prefixed with
    ``where``."""
    if num_classes is None and classes is None:
        return UserModelOptions()
    if not is_user_spec(name):
        raise EdgesegError(
            f"{where}: num_classes / classes apply to your own model (name: PATH.py:NAME); {name}'s heads are fixed "
            "per dataset: drop them"
        )
    text = classes
    if isinstance(classes, list):
        joined = [c for c in classes if "," in c]
        if joined:
            raise EdgesegError(f"{where}: class name {joined[0]!r} holds a comma: rename it")
        text = ",".join(classes)
    elif classes is not None and classes.strip().lower().endswith(_CLASS_FILES):
        beside = Path(folder) / Path(classes.strip()).expanduser()
        text = str(beside) if beside.is_file() else classes
    try:
        return parse_model_options(num_classes, text)
    except EdgesegError as exc:
        text = str(exc).replace("--num-classes", "num_classes").replace("--classes", "classes")
        raise EdgesegError(f"{where}: {text}") from None


def _read_class_file(path: Path) -> tuple[list[str], tuple | None]:
    if not path.is_file():
        raise EdgesegError(
            f"--classes {path}: file not found (pass a .txt with one name per line, a YAML list, or names as a,b,c)"
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() not in (".yaml", ".yml"):  # one name per line
        lines = [ln.strip() for ln in text.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        return lines, None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EdgesegError(f"--classes {path}: not valid YAML ({first})") from None
    colors = None
    if isinstance(data, dict):
        unknown = set(data) - {"names", "colors"}
        if unknown or "names" not in data:
            raise EdgesegError(
                f"--classes {path}: a mapping holds 'names' (a list) and optionally 'colors' (one [r, g, b] per name)"
                + (f"; unknown key(s): {', '.join(sorted(map(str, unknown)))}" if unknown else "")
            )
        data, colors = data["names"], data.get("colors")
    if not isinstance(data, list) or not all(
        isinstance(n, (str, int, float)) and not isinstance(n, bool) for n in data
    ):
        raise EdgesegError(
            f"--classes {path}: expected a YAML list of class names (or {{names: [...], colors: [...]}})"
        )
    names = [str(n).strip() for n in data]
    if colors is None:
        return names, None
    ok = (
        isinstance(colors, list)
        and len(colors) == len(names)
        and all(
            isinstance(c, list)
            and len(c) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
            for c in colors
        )
    )
    if not ok:
        raise EdgesegError(
            f"--classes {path}: 'colors' must hold one [r, g, b] (integers 0-255) per name ({len(names)} names)"
        )
    return names, tuple(tuple(c) for c in colors)


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


def accepts_num_classes(fn) -> bool:
    """Whether ``fn`` (a function or class) takes a ``num_classes`` keyword (or ``**kwargs``); True when its
    signature cannot be read (the call then says)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        (p.name == "num_classes" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)) or p.kind is p.VAR_KEYWORD
        for p in params
    )


def build_user_module(spec: str, num_classes: int | None = None) -> nn.Module:
    """Call the user's NAME() (``NAME(num_classes=N)`` with ``num_classes``) and check it returns an nn.Module
    (one-line errors otherwise)."""
    fn, _, _ = _factory(spec)
    name = spec.rpartition(":")[2]
    call = f"{name}()" if num_classes is None else f"{name}(num_classes={num_classes})"
    if num_classes is not None and not accepts_num_classes(fn):
        raise EdgesegError(
            f"--num-classes {num_classes}: {name} takes no num_classes argument: add a num_classes parameter to "
            f"{name} (the classifier's output channels), or drop --num-classes"
        )
    try:
        module = fn() if num_classes is None else fn(num_classes=num_classes)
    except TypeError as exc:
        hint = "NAME must take no arguments" if num_classes is None else "NAME must accept num_classes=N"
        raise EdgesegError(f"--model {spec!r}: {call} failed: {exc} ({hint})") from None
    except Exception as exc:
        raise EdgesegError(f"--model {spec!r}: {call} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise EdgesegError(
            f"--model {spec!r}: {call} returned a {type(module).__name__}, not an nn.Module: return the model"
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


def entry_name(spec: str, options: UserModelOptions | None = None) -> str:
    """``user-<stem>-<name>`` (``-c<N>`` with ``--num-classes N``): safe in folder names, never a built-in model's
    name."""
    stem = spec.rpartition(":")[0]
    stem = Path(stem).stem if stem.endswith(".py") or "/" in stem else stem.rsplit(".", 1)[-1]
    name = spec.rpartition(":")[2]
    base = re.sub(r"[^0-9a-zA-Z_]+", "_", f"user-{stem}-{name}").replace("_", "-").lower().strip("-")
    return base if options is None or options.num_classes is None else f"{base}-c{options.num_classes}"


def user_entry_fields(spec: str, options: UserModelOptions | None = None) -> dict:
    """What ``edgeseg.models.registry`` needs to register ``spec`` with ``options``: name, datasets, build, custom
    spec, stride."""
    options = options or UserModelOptions()
    fn, mod_name, _ = _factory(spec)
    from edgeseg.export_request import RANDOM_SEED

    n = options.num_classes
    with torch.random.fork_rng():
        torch.manual_seed(RANDOM_SEED)
        probe = build_user_module(spec, n)
    declared = getattr(probe, "num_classes", None)
    c, stride = probe_output(spec, probe)
    input_size = tuple(int(v) for v in getattr(probe, "input_size", PROBE_SIZE))
    name = spec.rpartition(":")[2]
    if n is not None and c != n:
        raise EdgesegError(
            f"--num-classes {n}: {name}(num_classes={n}) returns {c} output channels: build its classifier with "
            "num_classes outputs"
        )
    if isinstance(declared, int) and declared != c:
        raise EdgesegError(f"--model {spec!r}: num_classes is {declared} but the module returns {c} channels")
    if options.classes is not None and len(options.classes) != c:
        fix = f"give {c} names"
        if n is None and accepts_num_classes(fn):
            fix += f", or pass --num-classes {len(options.classes)} ({name} takes num_classes)"
        raise EdgesegError(
            f"--classes names {len(options.classes)} classes but {name} returns {c} output channels: {fix}"
        )
    datasets = (CUSTOM_DATASET, *(d for d, s in DATASETS.items() if s.num_classes == c))

    def build(dataset: str, num_classes: int) -> nn.Module:
        module = build_user_module(spec, n)
        if not hasattr(module, "output_stride"):
            module.output_stride = stride  # read by export for the manifest's output shape
        return module

    build.__module__ = mod_name  # the export cache hashes the user's source through this
    return {
        "name": entry_name(spec),
        "datasets": datasets,
        "build": build,
        "spec": custom_spec(c, options.classes, options.palette),
        "factory": fn,
        "input_size": input_size,
        "size_multiple": stride,
    }
