"""TFLite models through ai-edge-litert's Interpreter (XNNPACK on CPU), behind the Predictor call.

edgeseg's TFLite artifacts take NHWC input (the TFLite convention) and give NHWC logits; this wrapper converts
from / to the NCHW tensors the rest of edgeseg uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeseg.errors import EdgesegError


class LiteRtModel:
    def __init__(self, path: Path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads or 2)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise EdgesegError(f"LiteRT cannot load {path}: {str(exc).splitlines()[0][:200]}") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def ops(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.interpreter._get_ops_details():
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
        return counts

    def tensor_ranks(self) -> list[tuple[str, int]]:
        return [(t["name"], len(t["shape"])) for t in self.interpreter.get_tensor_details()]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        nhwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy(), dtype=np.float32)
        if tuple(nhwc.shape) != tuple(self.input["shape"]):
            raise EdgesegError(f"artifact takes NHWC input {tuple(self.input['shape'])}, got {nhwc.shape}")
        self.interpreter.set_tensor(self.input["index"], nhwc)
        self.interpreter.invoke()
        y = torch.from_numpy(self.interpreter.get_tensor(self.output["index"]).copy())
        return y.permute(0, 3, 1, 2) if y.ndim == 4 else y
