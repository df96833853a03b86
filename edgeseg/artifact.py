"""Artifact folders: model file + ``manifest.json``, built in a temporary folder and renamed into place, so a
failed export leaves nothing behind; a cache key over everything that determines the bytes (inputs, package
versions and the source of the code that made it) makes a second identical export instant. Reading one back:
``read_manifest``; running one: ``edgeseg.backends.load_artifact``."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path

import torch

from edgeseg.errors import EdgesegError
from edgeseg.io import current_umask, describe_os_error, sha256_file

MANIFEST = "manifest.json"


@dataclass
class LoadedArtifact:
    """An artifact opened with its runtime, behind the same call as a PyTorch model: normalised NCHW float32 in,
    logits (or labels) out, as torch tensors. Shared by export parity, eval, predict and bench."""

    path: Path  # the model file
    manifest: dict
    run: Callable[[torch.Tensor], torch.Tensor]
    runtime: str

    @property
    def input_size(self) -> tuple[int, int]:
        shape = self.manifest["input"]["shape"]
        return int(shape[2]), int(shape[3])

    @property
    def outputs_labels(self) -> bool:
        return self.manifest["output"]["name"] == "labels"


# what every reader of a manifest relies on; a manifest without them is corrupt
_MANIFEST_KEYS = ("file", "format", "target", "input")


def read_manifest(path: Path) -> tuple[Path, dict]:
    """(folder, manifest) of an artifact folder written by `edgeseg export` (or of the model file inside one); a
    missing, unreadable or incomplete manifest, or a missing model file, is a one-line error."""
    path = Path(path)
    if not path.exists():
        raise EdgesegError(f"artifact not found: {path} (pass an artifact folder written by `edgeseg export`)")
    folder = path if path.is_dir() and path.suffix != ".mlpackage" else path.parent
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise EdgesegError(f"no manifest.json in {folder}: pass an artifact folder written by `edgeseg export`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise EdgesegError(f"corrupt manifest {manifest_path}: {exc} (export the artifact again)") from None
    missing = [k for k in _MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise EdgesegError(f"corrupt manifest {manifest_path}: no {', '.join(missing)} (export the artifact again)")
    if not (folder / manifest["file"]).exists():
        raise EdgesegError(f"artifact file missing: {folder / manifest['file']}")
    return folder, manifest


@cache
def _module_files(name: str) -> tuple[Path, ...]:
    spec = find_spec(name)
    if spec is None or spec.origin is None:
        raise EdgesegError(f"cannot hash the source of {name}: module not found")
    origin = Path(spec.origin)
    if spec.submodule_search_locations:  # a package: every source file under it
        return tuple(sorted(origin.parent.rglob("*.py")))
    return (origin,)


def source_hash(*modules: str) -> str:
    """sha256 prefix of the source files of ``modules`` (a package: all its .py files), for cache keys: a change
    to the code that makes an artifact re-exports it; a change elsewhere does not."""
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        for f in _module_files(name):
            h.update(f"{name}:{f.name}:".encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_key(**parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_manifest(folder: Path, key: str) -> dict | None:
    """The manifest of ``folder`` when it was built with ``key`` and its model file is intact."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        model_file = folder / manifest["file"]
        if (
            manifest.get("cache_key") == key
            and model_file.exists()
            and artifact_sha256(model_file) == manifest["sha256"]
        ):
            return manifest
    except (OSError, KeyError, ValueError):
        return None
    return None


# A staging folder older than this whose lock is free was left by a killed process (SIGKILL, power loss).
STALE_STAGING_SECONDS = 15 * 60


def _lock(folder: Path) -> int | None:
    """An exclusive advisory lock on ``folder`` held through an open descriptor (released when the process ends,
    however it ends); None where the filesystem has no locks."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale_staging(folder: Path, max_age: float = STALE_STAGING_SECONDS) -> list[Path]:
    """Remove ``.<name>.*.tmp`` staging folders (and ``.<name>.old``) beside ``folder`` left by a process that was
    killed before it could clean up: older than ``max_age`` seconds and not locked by a running export."""
    folder = Path(folder)
    removed = []
    now = time.time()
    candidates = [*folder.parent.glob(f".{glob.escape(folder.name)}.*.tmp"), folder.with_name(f".{folder.name}.old")]
    for path in candidates:
        try:
            if path.is_symlink() or not path.is_dir() or now - path.stat().st_mtime < max_age:
                continue
            fd = _lock(path)
        except OSError:
            continue
        if fd is None:  # a running export holds it
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)
        removed.append(path)
    return removed


@contextlib.contextmanager
def staging(folder: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``folder``; on success it replaces ``folder``, on failure (an exception,
    KeyboardInterrupt, or SIGTERM raised as ``Terminated`` by the CLI) it is removed. The folder is locked while
    in use, so stale ones from killed processes (``remove_stale_staging``) are told apart from live ones. An
    existing ``folder`` is replaced only when it is an artifact folder (it holds a manifest) or is empty: edgeseg
    never deletes a folder it did not write."""
    folder = Path(folder)
    if folder.is_dir() and not (folder / MANIFEST).is_file() and any(folder.iterdir()):
        raise EdgesegError(
            f"{folder} exists and is not an artifact folder (no {MANIFEST}): edgeseg will not replace it; move it "
            "away or pass another --out"
        )
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(folder)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    except OSError as exc:
        raise EdgesegError(describe_os_error(exc, folder)) from None
    lock = None
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; the files inside are readable by others
        lock = _lock(tmp)
        yield tmp
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        # a write inside the staging folder (disk full, ...) is named by the artifact folder it was for
        inside = exc.filename is None or str(exc.filename).startswith(str(tmp))
        raise EdgesegError(describe_os_error(exc, folder if inside else None)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)


def artifact_sha256(path: Path) -> str:
    """sha256 of a file, or of a package folder (.mlpackage) as the hash of its files' relative paths and hashes."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path)}:{sha256_file(f)}\n".encode())
    return h.hexdigest()


def artifact_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
