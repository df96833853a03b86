"""The backend registry: backends register themselves; the target table, lint rules, format lookups and artifact
loading are all derived from what is registered (a new backend is one package, nothing here changes)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from edgeseg.artifact import LoadedArtifact, read_manifest
from edgeseg.backends.base import Backend, Target
from edgeseg.errors import EdgesegError

BACKENDS: dict[str, Backend] = {}
TARGETS: dict[str, Target] = {}  # derived: every registered backend's targets, in registration order


def register_backend(backend: Backend) -> Backend:
    """Add ``backend`` and its targets to the tables; a name or target already taken is an error."""
    if not backend.name or backend.rules is None:
        raise ValueError(f"backend {type(backend).__name__} needs a name and a lint rule set")
    if backend.name in BACKENDS:
        raise ValueError(f"backend {backend.name!r} is registered twice")
    targets = backend.targets()
    taken = [t.name for t in targets if t.name in TARGETS]
    if taken:
        raise ValueError(f"backend {backend.name!r}: target(s) {', '.join(taken)} already registered")
    BACKENDS[backend.name] = backend
    TARGETS.update((t.name, t) for t in targets)
    return backend


def unregister_backend(name: str) -> None:
    """Remove a backend and its targets (tests that register a toy backend clean up with this)."""
    BACKENDS.pop(name, None)
    for key in [k for k, t in TARGETS.items() if t.format == name]:
        del TARGETS[key]


def get_target(name: str) -> Target:
    if name not in TARGETS:
        close = difflib.get_close_matches(name, list(TARGETS), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise EdgesegError(f"unknown target {name!r}.{hint} Valid: {', '.join(TARGETS)}")
    return TARGETS[name]


def backend_for(fmt: str) -> Backend:
    """The backend of a format name (a target's ``format``, a manifest's ``format``)."""
    if fmt not in BACKENDS:
        raise EdgesegError(f"unknown artifact format {fmt!r}: known formats {', '.join(BACKENDS)}")
    return BACKENDS[fmt]


def backend_for_file(path: Path) -> Backend:
    """The first registered backend whose model files end like ``path`` (linting a bare .onnx / .tflite /
    .mlpackage: the format's own backend comes first in the table)."""
    for b in BACKENDS.values():
        if b.suffix and Path(path).name.endswith(b.suffix):
            return b
    suffixes = sorted({b.suffix for b in BACKENDS.values() if b.suffix})
    raise EdgesegError(f"cannot lint {Path(path).name}: expected one of {', '.join(suffixes)}, or an artifact folder")


def known_target_names(names: list[str]) -> list[str]:
    """A pydantic validator's check of a list of target names (ValueError naming the item and the valid names)."""
    for i, name in enumerate(names):
        if name not in TARGETS:
            raise ValueError(f"item {i}: unknown target {name!r} (valid: {', '.join(TARGETS)})")
    return names


# A list of target names in a pydantic schema (check configs, sweep matrices, device profiles): each must be a
# registered target; the error names the item and the valid names.
TargetNames = Annotated[list[str], AfterValidator(lambda names: known_target_names(names))]


def load_artifact(path: Path, threads: int | None = None) -> LoadedArtifact:
    """An artifact folder (or the model file inside one) with its manifest, opened with its backend's runtime."""
    folder, manifest = read_manifest(path)
    return backend_for(manifest["format"]).load(folder, manifest, threads)
