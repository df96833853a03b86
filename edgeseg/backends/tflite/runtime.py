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

    def int8_ops(self) -> dict[str, int]:
        """Op types whose outputs are int8 tensors (what runs quantized), with counts."""
        dtypes = {t["index"]: t["dtype"] for t in self.interpreter.get_tensor_details()}
        counts: dict[str, int] = {}
        for op in self.interpreter._get_ops_details():
            name = op["op_name"]
            if name not in ("QUANTIZE", "DELEGATE") and any(dtypes.get(int(i)) == np.int8 for i in op["outputs"]):
                counts[name] = counts.get(name, 0) + 1
        return counts

    def tensor_ranks(self) -> list[tuple[str, int]]:
        return [(t["name"], len(t["shape"])) for t in self.interpreter.get_tensor_details()]

    def timing_call(self, x: torch.Tensor):
        """One invoke on ``x`` as a no-argument call, the NHWC (quantized) input prepared once."""
        nhwc = _quantize(np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy()), self.input)
        interpreter, index = self.interpreter, self.input["index"]

        def invoke():
            interpreter.set_tensor(index, nhwc)
            interpreter.invoke()

        return invoke

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        nhwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy(), dtype=np.float32)
        if tuple(nhwc.shape) != tuple(self.input["shape"]):
            raise EdgesegError(f"artifact takes NHWC input {tuple(self.input['shape'])}, got {nhwc.shape}")
        self.interpreter.set_tensor(self.input["index"], _quantize(nhwc, self.input))
        self.interpreter.invoke()
        y = torch.from_numpy(_dequantize(self.interpreter.get_tensor(self.output["index"]), self.output))
        return y.permute(0, 3, 1, 2) if y.ndim == 4 else y


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float input -> the model's input dtype: fully int8 models (PT2E) take int8 with a scale and zero point."""
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if np.issubdtype(y.dtype, np.floating) or scale == 0:  # float, or integer labels (argmax)
        return y.copy()
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def executed_ops(interpreter) -> list[dict]:
    """The nodes a TFLite interpreter really runs: its op list keeps the nodes a delegate replaced beside the
    DELEGATE nodes, so walk back from the graph outputs, taking a tensor from the delegate that produces it where
    one does (the replaced node that also lists it as an output no longer runs)."""
    ops = interpreter._get_ops_details()
    by_delegate = {int(t): op for op in ops if op["op_name"] == "DELEGATE" for t in op["outputs"]}
    by_node = {int(t): op for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    todo = [int(d["index"]) for d in interpreter.get_output_details()]
    seen_tensors: set[int] = set()
    executed: dict[int, dict] = {}
    while todo:
        t = todo.pop()
        if t in seen_tensors or t < 0:
            continue
        seen_tensors.add(t)
        op = by_delegate.get(t) or by_node.get(t)
        if op is not None and op["index"] not in executed:
            executed[op["index"]] = op
            todo.extend(int(i) for i in op["inputs"])
    return [executed[i] for i in sorted(executed)]
