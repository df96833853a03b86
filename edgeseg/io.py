"""File helpers shared by every layer: atomic writes and safe checkpoint loading."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from edgeseg.errors import EdgesegError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash never leaves a half-written file. mkstemp creates 0600 files; the result gets the permissions a plain
    ``open()`` would give (0666 minus the umask), so artifacts and weights stay readable by others.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    _atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)`` with one-line errors for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"weights file not found: {path} (pass an existing .pt file, or --weights camvid)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/corrupt/pickled-code files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgesegError(f"cannot load weights {path}: not a valid PyTorch checkpoint ({first[:160]})") from None
    if not isinstance(obj, dict):
        raise EdgesegError(f"{path} holds a {type(obj).__name__}, not a state dict or a checkpoint dict")
    return obj


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
