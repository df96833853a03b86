"""Runtimes that execute artifacts here, behind the same call as a PyTorch model: normalised NCHW float32 in,
logits (or labels) out, as torch tensors. Shared by export parity, eval, predict and (later) bench."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from edgeseg.errors import EdgesegError


@dataclass
class LoadedArtifact:
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
    manifest_path = folder / "manifest.json"
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


def load_artifact(path: Path, threads: int | None = None) -> LoadedArtifact:
    """An artifact folder (or the model file inside one) with its manifest, opened with the runtime for its format."""
    folder, manifest = read_manifest(path)
    model_file, fmt = folder / manifest["file"], manifest["format"]
    manifest_path = folder / "manifest.json"
    if fmt == "tensorrt" and manifest.get("engine"):
        from edgeseg.runtimes.tensorrt import TensorRTModel, tensorrt_status

        engine = folder / manifest["engine"]
        if engine.is_file() and tensorrt_status()[0]:
            model = TensorRTModel(engine)
            return LoadedArtifact(engine, manifest, model, f"TensorRT {model.version} engine (CUDA)")
    if fmt in ("onnx", "tensorrt"):
        from edgeseg.runtimes.onnxruntime import OnnxRuntimeModel

        if fmt == "onnx":
            note = "onnxruntime (CPU)"
        else:
            from edgeseg.runtimes.tensorrt import tensorrt_status

            ok, why = tensorrt_status()
            reason = "no engine built in this artifact" if ok else f"the engine {why}"
            note = f"onnxruntime (CPU) on the TensorRT-ready ONNX, not the engine ({reason})"
        return LoadedArtifact(model_file, manifest, OnnxRuntimeModel(model_file, threads), note)
    if fmt == "tflite":
        from edgeseg.runtimes.litert import LiteRtModel

        return LoadedArtifact(model_file, manifest, LiteRtModel(model_file, threads), "ai-edge-litert (XNNPACK)")
    if fmt == "coreml":
        from edgeseg.runtimes.coreml import CoreMLModel

        return LoadedArtifact(
            model_file, manifest, CoreMLModel(model_file, manifest["output"]["name"]), "coremltools (macOS)"
        )
    raise EdgesegError(f"unknown artifact format {fmt!r} in {manifest_path}")
