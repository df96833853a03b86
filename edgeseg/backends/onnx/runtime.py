"""ONNX Runtime (CPU) behind the Predictor call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeseg.errors import EdgesegError, reraise_interrupt


class OnnxRuntimeModel:
    def __init__(
        self, path: Path, threads: int | None = None, spinning: bool = False, profile_prefix: str | None = None
    ):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # Two sessions timed side by side on 2 cores steal each other's cores while spinning.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        if profile_prefix:  # ORT's own per-kernel profiler (edgeseg op-profile); end_profiling() returns the JSON
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
            # A model that fails to load makes the session's destructor log "Could not write a profile because no
            # model was loaded" at error level, straight to stderr beside edgeseg's own one-line error: the load
            # failure itself is raised (and reported) below, so the session logs only fatal errors.
            opts.log_severity_level = 4
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            reraise_interrupt(exc)
            raise EdgesegError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0][:200]}") from None
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape = inp.name, tuple(inp.shape)
        self.output_name = self.session.get_outputs()[0].name

    def timing_call(self, x: torch.Tensor):
        """One inference on ``x`` as a no-argument call, the feed prepared once (what latency timing measures)."""
        feed, names = {self.input_name: np.ascontiguousarray(x.numpy(), np.float32)}, [self.output_name]
        return lambda: self.session.run(names, feed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != self.input_shape:
            raise EdgesegError(f"artifact takes input {self.input_shape}, got {tuple(x.shape)} (static shapes)")
        out = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x.numpy(), np.float32)})
        return torch.from_numpy(out[0])
