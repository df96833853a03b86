"""TensorRT engines (where the tensorrt package and a CUDA GPU exist: a Jetson, a GPU server) behind the Predictor
call. Buffers are torch CUDA tensors, so no extra CUDA binding is needed; I/O names, shapes and dtypes are read
from the engine (TensorRT 10+ name-based API: ``set_tensor_address`` + ``execute_async_v3``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from edgeseg.errors import EdgesegError


def tensorrt_status() -> tuple[bool, str]:
    if importlib.util.find_spec("tensorrt") is None:
        return False, "needs TensorRT (not installable from PyPI here; JetPack ships it on Jetson)"
    if not torch.cuda.is_available():
        return False, "needs a CUDA GPU"
    return True, "tensorrt + CUDA present"


class TensorRTModel:
    def __init__(self, path: Path):
        ok, why = tensorrt_status()
        if not ok:
            raise EdgesegError(f"running the TensorRT engine {path.name} {why}")
        import tensorrt as trt

        self.version = trt.__version__
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise EdgesegError(
                f"TensorRT {trt.__version__} cannot load {path} (corrupt, or built by another TensorRT version or "
                "GPU: rebuild it with the build_engine.sh beside it)"
            )
        self.context = self.engine.create_execution_context()
        self.buffers: dict[str, torch.Tensor] = {}
        self.inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            self.buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
        self.stream = torch.cuda.Stream()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        inp = self.buffers[self.inputs[0]]
        if tuple(x.shape) != tuple(inp.shape):
            raise EdgesegError(f"engine takes input {tuple(inp.shape)}, got {tuple(x.shape)} (static shapes)")
        inp.copy_(x.to(device="cuda", dtype=inp.dtype))
        with torch.cuda.stream(self.stream):
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EdgesegError("TensorRT execution failed")
        self.stream.synchronize()
        out = self.buffers[self.outputs[0]]
        return out.float().cpu() if out.is_floating_point() else out.cpu()
