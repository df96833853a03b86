"""The sweep matrix: models x targets x device profiles x input sizes, read from YAML and expanded into jobs.

Two kinds of job share the work. An **artifact job** exports (and, for int8 targets, calibrates) one
(model, weights, target, size) and evaluates its mIoU with the artifact's own runtime; it does not depend on the
device, so every device that wants the artifact shares it. A **bench job** times one artifact for one device
profile. Each job has a cache key over everything that decides its result, so a job already in the cache is
not redone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgeseg.backends import TargetNames
from edgeseg.errors import EdgesegError
from edgeseg.io import load_yaml_schema


class _Strict(BaseModel):
    # finite only: a nan floor or an inf time limit makes a verdict or a bound meaningless
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Cells (models x sizes x targets x devices) one matrix may ask for: each is an export or a bench run, so a
# generated matrix gone wrong is refused with its count before anything is queued.
MAX_CELLS = 5000
MAX_LIST = 256  # items in any one list of the matrix


class SweepModel(_Strict):
    name: str
    weights: str | None = None  # a shipped tag ("camvid") or a .pt path (relative to the matrix file)
    dataset: str | None = None
    # your own model (name: PATH.py:NAME) only, as --num-classes / --classes: NAME(num_classes=N), class names
    num_classes: int | None = Field(None, ge=1)
    classes: str | list[str] | None = None  # a,b,c, a list, or a .txt / .yaml file (beside the matrix)


class TimingSpec(_Strict):
    warmup: int = Field(10, ge=0, le=10_000)
    runs: int = Field(30, ge=1, le=100_000)
    max_runs: int = Field(300, ge=1, le=100_000)
    max_seconds: float = Field(20.0, gt=0, le=86_400)


class SweepMatrix(_Strict):
    models: list[SweepModel] = Field(min_length=1, max_length=MAX_LIST)
    targets: TargetNames = Field(min_length=1, max_length=MAX_LIST)
    devices: list[str] = Field(min_length=1, max_length=MAX_LIST)
    # "HxW" (multiples of 32); null: the model's default export size
    sizes: list[str | None] = Field([None], min_length=1, max_length=MAX_LIST)
    data: str | None = None  # labelled data (SPLIT/images, SPLIT/labels; train/ calibrates int8); default: sample
    split: str = "val"
    limit: int | None = Field(None, ge=1)  # mIoU on the first N images only
    calib_data: str | None = None  # default: ``data`` when it has train/
    parity_images: int = Field(20, ge=1, le=100_000)
    threads: int = Field(2, ge=1, le=64)
    # mIoU floor (0-1) for every device; null: each profile's own floor. Profiles' floors are for their working
    # resolution: a sweep at a smaller size sets its own so the verdicts judge what it measures.
    miou_floor: float | None = Field(None, ge=0, le=1)
    timing: TimingSpec = TimingSpec()
    # Only the targets a device profile lists (its `targets:`) are benched on it: a Jetson gets trt-*, a phone
    # tflite-*. False benches every target on every device (the unrunnable ones say why in their row).
    device_targets_only: bool = True
    profiles: str | None = None  # a folder of extra <name>.yaml device profiles (relative to the matrix file)

    @field_validator("models", mode="before")
    @classmethod
    def _model_names(cls, value):
        # a bare name is a model with its default weights
        return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: list[str | None]) -> list[str | None]:
        import re

        for i, s in enumerate(value):
            if s is not None and not re.fullmatch(r"\d+x\d+", s):
                raise ValueError(f"item {i}: size {s!r} is not HxW (e.g. 384x480), or null for the model's default")
        return value

    @model_validator(mode="after")
    def _no_duplicates(self):
        for name, items in (("targets", self.targets), ("devices", self.devices), ("sizes", self.sizes)):
            if len(set(items)) != len(items):
                raise ValueError(f"{name} lists an item twice")
        cells = len(self.models) * len(self.sizes) * len(self.targets) * len(self.devices)
        if cells > MAX_CELLS:
            raise ValueError(
                f"{cells} cells ({len(self.models)} models x {len(self.sizes)} sizes x {len(self.targets)} targets x "
                f"{len(self.devices)} devices) is more than the limit of {MAX_CELLS}: split the matrix"
            )
        return self


def load_matrix(path: Path) -> tuple[SweepMatrix, Path]:
    """The matrix and the folder its relative paths are resolved against (the file's own folder)."""
    path = Path(path)
    matrix = load_yaml_schema(
        path, SweepMatrix, "sweep matrix", "models, targets, devices, ...", "see examples/sweep.yaml"
    )
    return matrix, path.resolve().parent


@dataclass(frozen=True)
class ArtifactJob:
    """Export + mIoU of one (model, weights, target, size); ``key`` caches it."""

    model: str
    dataset: str
    weights: str | None
    target: str
    size: str | None
    key: str

    @property
    def label(self) -> str:
        return f"{self.model} {self.size or 'default'} {self.target}"


@dataclass(frozen=True)
class BenchJob:
    """One artifact timed for one device profile; ``key`` caches it."""

    artifact: ArtifactJob
    device: str
    key: str


def job_key(**parts) -> str:
    """A cache key over everything that decides a job's result (JSON of the parts, sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def tree_identity(folder: Path, split: str) -> str:
    """A cheap identity of a data split: the sorted file names and sizes of SPLIT/images and SPLIT/labels (a
    changed, added or removed file changes it)."""
    h = hashlib.sha256()
    for sub in ("images", "labels"):
        d = Path(folder) / split / sub
        if d.is_dir():
            for f in sorted(d.iterdir()):
                if f.is_file():
                    h.update(f"{sub}/{f.name}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:20]


def matrix_digest(matrix: SweepMatrix) -> str:
    return job_key(matrix=matrix.model_dump(mode="json"))


def check_devices_have_targets(matrix: SweepMatrix, device_targets: dict[str, list[str]]) -> None:
    """With ``device_targets_only``, a device none of whose targets is in the matrix is a mistake worth naming."""
    if not matrix.device_targets_only:
        return
    for device, wanted in device_targets.items():
        if not set(wanted) & set(matrix.targets):
            raise EdgesegError(
                f"sweep matrix: device {device} runs {', '.join(wanted)}, none of which is in targets "
                f"({', '.join(matrix.targets)}): add one, or set device_targets_only: false"
            )
