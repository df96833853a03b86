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
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


# ------------------------------------------------------------------------------------------ reading, verified
# Nothing an artifact folder says about itself is taken on trust: the manifest must have the types edgeseg reads,
# its model file must lie inside the folder, and the file's bytes must hash to the manifest's sha256 (unless the
# user asked for ``--no-verify`` because they edited the file on purpose).


class _ManifestPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _InputSpec(_ManifestPart):
    shape: list[Annotated[int, Field(ge=1, le=1 << 20)]] = Field(min_length=4, max_length=4)


class _OutputSpec(_ManifestPart):
    name: str


class _ParitySpec(_ManifestPart):
    images: int = Field(ge=0)
    argmax_agreement: float | None = Field(None, ge=0, le=1)
    max_abs_diff: float | None = None
    snr_db: float | None = None
    runtime: str | None = None


class _LintSpec(_ManifestPart):
    clean: bool


class ManifestSchema(_ManifestPart):
    """The fields of ``manifest.json`` that edgeseg reads, with their types (extra fields are kept as written)."""

    file: str = Field(min_length=1)
    format: str
    target: str
    input: _InputSpec
    output: _OutputSpec | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    bytes: int | None = Field(None, ge=0)
    model: str | None = None
    dataset: str | None = None
    precision: str | None = None
    untrained: bool = False
    parity: _ParitySpec | None = None
    lint: _LintSpec | None = None
    weights: dict | None = None
    quantization: dict | None = None
    classes: list[str] | None = None  # the class names (a user model's --classes for its "custom" label set)
    palette: list[list[int]] | None = None  # a "custom" label set's colours, one [r, g, b] per class


_VERIFY: ContextVar[bool] = ContextVar("edgeseg_verify_artifacts", default=True)


@contextlib.contextmanager
def artifact_verification(enabled: bool) -> Iterator[None]:
    """Within the block, reading an artifact checks its model file's sha256 (``enabled``) or not (``--no-verify``:
    the user edited the file on purpose); the manifest's schema and paths are checked either way."""
    token = _VERIFY.set(bool(enabled))
    try:
        yield
    finally:
        _VERIFY.reset(token)


def verifying() -> bool:
    return _VERIFY.get()


def inside(folder: Path, relative: str, what: str, fix: str) -> Path:
    """``folder / relative`` resolved (symlinks followed), which must stay inside ``folder``: an absolute path, a
    ``..`` or a symlink out of it is a one-line error naming ``what`` (a manifest's file, a cache entry, ...)."""
    base = Path(folder).resolve()
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise EdgesegError(f"{what}: {relative!r} is not a path inside {folder} ({fix})")
    try:
        target = (base / relative).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise EdgesegError(f"{what}: {relative!r} cannot be resolved ({exc}; {fix})") from None
    if Path(relative).is_absolute() or not target.is_relative_to(base) or target == base:
        raise EdgesegError(f"{what}: {relative!r} points outside {folder} ({fix})")
    return target


# (path, size, mtime, inode, device) of each file -> sha256: bench and check read the same artifact several times
# per run (list, mIoU, timing, examples); a file whose size, time and inode are unchanged is not hashed again.
_HASHES: dict[tuple, str] = {}


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def model_file_sha256(path: Path) -> str:
    """``artifact_sha256`` of a model file (or package folder), cached within the process by its files' stat."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    key = tuple(_stat_key(f) for f in files) + ((str(path),) if not path.is_file() else ())
    if key not in _HASHES:
        _HASHES[key] = artifact_sha256(path)
    return _HASHES[key]


def verify_model_file(folder: Path, manifest: dict) -> Path:
    """The model file of an artifact, resolved inside ``folder``, whose bytes hash to the manifest's sha256 (the
    hash is skipped under ``artifact_verification(False)``); otherwise a one-line error naming the file."""
    model_file = inside(folder, manifest["file"], f"manifest {Path(folder) / MANIFEST}: field 'file'", REEXPORT)
    if not model_file.exists():
        raise EdgesegError(f"artifact file missing: {Path(folder) / manifest['file']}")
    if not verifying():
        return model_file
    recorded = manifest.get("sha256")
    if not recorded:
        raise EdgesegError(
            f"manifest {Path(folder) / MANIFEST} records no sha256 of {manifest['file']}, so the file cannot be "
            "verified: export it again, or pass --no-verify to use it as it is"
        )
    got = model_file_sha256(model_file)
    if got != recorded:
        raise EdgesegError(
            f"artifact file {Path(folder) / manifest['file']} does not match its manifest (sha256 {got[:12]}, "
            f"manifest says {recorded[:12]}): it was modified or corrupted; export it again, or pass --no-verify "
            "if you edited it on purpose"
        )
    return model_file


REEXPORT = "export the artifact again"


def validate_manifest(data, where: Path) -> dict:
    """``data`` (a parsed manifest.json) checked against ``ManifestSchema``; wrong types are one line naming the
    file and the fields."""
    from edgeseg.io import validation_problems

    if not isinstance(data, dict):
        raise EdgesegError(f"corrupt manifest {where}: not a JSON object ({REEXPORT})")
    missing = [k for k in ("file", "format", "target", "input") if k not in data]
    if missing:
        raise EdgesegError(f"corrupt manifest {where}: no {', '.join(missing)} ({REEXPORT})")
    try:
        ManifestSchema.model_validate(data)
    except ValidationError as exc:
        raise EdgesegError(f"corrupt manifest {where}: {validation_problems(exc)} ({REEXPORT})") from None
    return data


def read_manifest(path: Path) -> tuple[Path, dict]:
    """(folder, manifest) of an artifact folder written by `edgeseg export` (or of the model file inside one),
    verified: a missing, unreadable or mistyped manifest, a model file outside the folder or missing, or one whose
    sha256 is not the manifest's (unless ``--no-verify``), is a one-line error."""
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
        raise EdgesegError(f"corrupt manifest {manifest_path}: {exc} ({REEXPORT})") from None
    validate_manifest(manifest, manifest_path)
    verify_model_file(folder, manifest)
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
    """The manifest of ``folder`` when it was built with ``key`` and its model file is intact: inside the folder
    and hashing to the manifest's sha256 (anything else is a cache miss, and the folder is rebuilt)."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = validate_manifest(json.loads(path.read_text()), path)
        model_file = inside(folder, manifest["file"], f"manifest {path}: field 'file'", REEXPORT)
        if (
            manifest.get("cache_key") == key
            and model_file.exists()
            and model_file_sha256(model_file) == manifest.get("sha256")
        ):
            return manifest
    except (OSError, KeyError, ValueError, EdgesegError):
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
