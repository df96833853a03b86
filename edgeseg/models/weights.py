"""Weights: the registry of weights edgeseg ships, and strict loading of any state-dict file.

Shipped weights are fp16 state dicts trained by ``edgeseg train`` and listed in ``assets/weights/index.json``
with the training command, epochs, val mIoU and the file's sha256; loading checks the hash. A user file may be
an official checkpoint (``{"state_dict": ...}``), an edgeseg checkpoint (``{"model": ...}``) or a bare state dict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from edgeseg.errors import EdgesegError
from edgeseg.io import atomic_save, atomic_write_bytes, load_checkpoint, sha256_file

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "assets" / "weights"
INDEX_FILE = WEIGHTS_DIR / "index.json"


@dataclass(frozen=True)
class WeightsSource:
    path: Path
    tag: str | None  # registry tag ("camvid") or None for a user file
    sha256: str | None
    record: dict | None  # the registry entry, when from the registry


def read_index(index_file: Path = INDEX_FILE) -> dict:
    if not index_file.is_file():
        return {}
    return json.loads(index_file.read_text())


def registered_tags(model: str, index_file: Path = INDEX_FILE) -> dict[str, dict]:
    return read_index(index_file).get(model, {})


def resolve_weights(model: str, weights: str, index_file: Path = INDEX_FILE) -> WeightsSource:
    """A registry tag (e.g. ``camvid``) for ``model``, or a path to a file."""
    tags = registered_tags(model, index_file)
    if weights in tags:
        record = tags[weights]
        path = index_file.parent / record["file"]
        if not path.is_file():
            raise EdgesegError(f"registered weights {model}/{weights} are missing: {path} (reinstall edgeseg)")
        digest = sha256_file(path)
        if digest != record["sha256"]:
            raise EdgesegError(
                f"registered weights {path.name} are corrupt: sha256 {digest[:12]}... != recorded "
                f"{record['sha256'][:12]}... (reinstall edgeseg or re-publish the weights)"
            )
        return WeightsSource(path, weights, digest, record)
    path = Path(weights)
    if path.suffix in (".pt", ".pth", ".bin") or path.exists() or "/" in weights:
        if not path.is_file():
            raise EdgesegError(f"weights file not found: {path} (pass an existing .pt file or a registered tag)")
        return WeightsSource(path, None, None, None)
    known = ", ".join(tags) if tags else "none shipped for this model"
    raise EdgesegError(f"unknown weights {weights!r} for {model}: pass a .pt file or a registered tag ({known})")


def extract_state_dict(obj: dict, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EdgesegError(f"{path} holds no state dict (expected tensors, or a 'state_dict'/'model' entry)")
    # checkpoints saved from DataParallel/DDP carry a "module." prefix
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _short(keys: list[str], n: int = 4) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Path | str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the offending keys and shapes, or the tensors
    holding NaN / inf.

    Half-precision tensors (the shipped fp16 files) are cast to the model's dtype.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch: {_short(shapes, 2)}")
    if problems:
        raise EdgesegError(
            f"state dict in {path} does not match the model: "
            + "; ".join(problems)
            + " (check --model and --dataset match the weights)"
        )
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise EdgesegError(
            f"weights {path} hold NaN or infinite values in {len(nonfinite)} tensor(s): {_short(nonfinite)} (a "
            "diverged or corrupt training run: use another checkpoint)"
        )
    cast = {k: (v.to(own[k].dtype) if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(cast, strict=True)


def load_weights(model: nn.Module, source: WeightsSource) -> None:
    state = extract_state_dict(load_checkpoint(source.path), source.path)
    load_state_dict_strict(model, state, source.path)


def publish(checkpoint: Path, model_name: str, tag: str, record: dict, index_file: Path = INDEX_FILE) -> Path:
    """Store ``checkpoint``'s model as an fp16 state dict beside the index and register it under ``tag``.

    Floating-point tensors become fp16 (BatchNorm running statistics included; their fp16 rounding is checked by
    re-evaluating the published file, see ``edgeseg eval --weights TAG``).
    """
    state = extract_state_dict(load_checkpoint(checkpoint), checkpoint)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    fname = f"{model_name}-{tag}.pt"
    target = index_file.parent / fname
    atomic_save(half, target)
    index = read_index(index_file)
    index.setdefault(model_name, {})[tag] = {
        **record,
        "file": fname,
        "sha256": sha256_file(target),
        "bytes": target.stat().st_size,
    }
    _write_index(index, index_file)
    return target


def update_record(model_name: str, tag: str, index_file: Path = INDEX_FILE, **fields) -> dict:
    """Add measured fields (e.g. the val mIoU of the published file) to a registry entry."""
    index = read_index(index_file)
    index[model_name][tag].update(fields)
    _write_index(index, index_file)
    return index[model_name][tag]


def _write_index(index: dict, index_file: Path) -> None:
    atomic_write_bytes(index_file, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
