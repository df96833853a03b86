"""Core ML prediction through coremltools (macOS only), behind the Predictor call."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from edgeseg.errors import EdgesegError


def coreml_runtime_available() -> bool:
    return platform.system() == "Darwin"


class CoreMLModel:
    """Core ML prediction (macOS only) behind the Predictor call."""

    def __init__(self, path: Path, output_name: str):
        if not coreml_runtime_available():
            raise EdgesegError("Core ML prediction needs macOS (coremltools' predict runs only there)")
        import coremltools as ct

        self.model, self.output_name = ct.models.MLModel(str(path)), output_name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model.predict({"image": x.numpy()})
        return torch.from_numpy(out[self.output_name])
