"""Artifact folders: model file + ``manifest.json``, built in a temporary folder and renamed into place, so a
failed export leaves nothing behind; a cache key over everything that determines the bytes makes a second
identical export instant."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgeseg.io import sha256_file

MANIFEST = "manifest.json"


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


@contextlib.contextmanager
def staging(folder: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``folder``; on success it replaces ``folder``, on failure it is removed."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        yield tmp
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
