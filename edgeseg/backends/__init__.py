"""Backends as plugins: one package per deployment format under ``edgeseg/backends/`` (``base.Backend``), each
registering itself on import. The target table (``TARGETS``), ``edgeseg targets``, export, the runtimes, lint,
INT8 policies and profiling are derived from the registered backends.

A new backend is one package here (plus its pip extra in pyproject.toml) and one line in ``BUILTIN_BACKENDS``;
a backend outside edgeseg registers itself with ``register_backend`` when its module is imported.
"""

from __future__ import annotations

import importlib

from edgeseg.backends.base import Backend, Built, ExportJob, Int8Request, Precision, Target
from edgeseg.backends.registry import (
    BACKENDS,
    TARGETS,
    TargetNames,
    backend_for,
    backend_for_file,
    get_target,
    known_target_names,
    load_artifact,
    register_backend,
    unregister_backend,
)

# Built-in backends, in the order the target table lists them.
BUILTIN_BACKENDS = ("onnx", "tflite", "coreml", "tensorrt", "openvino", "executorch")
for _name in BUILTIN_BACKENDS:
    importlib.import_module(f"edgeseg.backends.{_name}")

__all__ = [
    "BACKENDS",
    "BUILTIN_BACKENDS",
    "TARGETS",
    "TargetNames",
    "Backend",
    "Built",
    "ExportJob",
    "Int8Request",
    "Precision",
    "Target",
    "backend_for",
    "backend_for_file",
    "get_target",
    "known_target_names",
    "load_artifact",
    "register_backend",
    "unregister_backend",
]
