"""OpenVINO's CPU plugin behind the Predictor call, with every setting that changes speed or numerics explicit.

The CPU plugin picks its own defaults otherwise: on a CPU with bf16 (AVX512_BF16 / AMX) it runs float graphs in
bf16 unless ``INFERENCE_PRECISION_HINT`` says f32, and it picks threads, streams and core pinning from the
machine. edgeseg pins all of them from the manifest (``openvino.runtime``) and records what the compiled model
reports back, so a number is always tied to the precision and threading it ran with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeseg.errors import EdgesegError

DEVICE = "CPU"
# The OpenVINO name of each target's precision hint on the CPU plugin: fp16 IR is fp16-compressed weights for Intel
# GPU/NPU; the CPU plugin decompresses them and runs f32. int8: the float rest (attention core) stays f32.
HINT_OF_PRECISION = {"fp32": "f32", "fp16": "f32", "bf16": "bf16", "int8": "f32"}


def openvino_version() -> str:
    from importlib.metadata import version

    return version("openvino")


def core():
    import openvino as ov

    return ov.Core()


def cpu_capabilities() -> list[str]:
    """The CPU plugin's OPTIMIZATION_CAPABILITIES here (``BF16`` present: the CPU has a bf16 path)."""
    return [str(c) for c in core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")]


def require_bf16(target: str) -> None:
    """Refuse a bf16 artifact on a CPU whose plugin has no bf16 path (it would silently run f32)."""
    caps = cpu_capabilities()
    if "BF16" not in caps:
        raise EdgesegError(
            f"{target} needs a CPU with bf16 (AVX512_BF16 or AMX): OpenVINO's CPU plugin here offers "
            f"{', '.join(caps) or 'nothing'}; use openvino-fp32 or openvino-int8"
        )


def runtime_config(precision: str, threads: int | None, pinning: bool = False) -> dict:
    """The CPU plugin properties an artifact of ``precision`` is compiled with (recorded in the manifest).

    One stream, LATENCY hint, no hyper-threading; pinning off by default because artifacts timed side by side on
    a shared machine would pin to the same cores."""
    return {
        "device": DEVICE,
        "INFERENCE_PRECISION_HINT": HINT_OF_PRECISION[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": int(threads or 2),
        "ENABLE_CPU_PINNING": bool(pinning),
        "ENABLE_HYPER_THREADING": False,
    }


class OpenVinoModel:
    """A compiled OpenVINO model on the CPU plugin: NCHW float32 in, logits (or labels) out, as torch tensors."""

    def __init__(
        self,
        path_or_model,
        precision: str = "fp32",
        threads: int | None = None,
        target: str | None = None,
        perf_count: bool = False,
        pinning: bool = False,
    ):
        import openvino as ov

        if precision == "bf16":
            require_bf16(target or "openvino-bf16")
        self.config = runtime_config(precision, threads, pinning)
        props = {k: v for k, v in self.config.items() if k != "device"}
        if perf_count:
            props["PERF_COUNT"] = True
        c = ov.Core()
        try:
            model = c.read_model(str(path_or_model)) if isinstance(path_or_model, (str, Path)) else path_or_model
            self.compiled = c.compile_model(model, DEVICE, props)
        except RuntimeError as exc:
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), str(exc))
            raise EdgesegError(f"OpenVINO cannot compile {path_or_model} on {DEVICE}: {first[:240]}") from None
        self.request = self.compiled.create_infer_request()
        self.input_shape = tuple(self.compiled.input(0).get_shape())
        # what the plugin says it really runs with (it may differ from what was asked)
        self.effective = {
            k: _plain(self.compiled.get_property(k))
            for k in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "ENABLE_CPU_PINNING")
        }

    def timing_call(self, x: torch.Tensor):
        """One inference on ``x`` as a no-argument call, the input tensor set once (what latency timing measures)."""
        import openvino as ov

        self.request.set_input_tensor(ov.Tensor(np.ascontiguousarray(x.numpy(), np.float32)))
        return self.request.infer

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != self.input_shape:
            raise EdgesegError(f"artifact takes input {self.input_shape}, got {tuple(x.shape)} (static shapes)")
        out = self.request.infer({0: np.ascontiguousarray(x.numpy(), np.float32)})
        return torch.from_numpy(np.array(out[self.compiled.output(0)], copy=True))


def _plain(value) -> str:
    """A property value as text (``f32``, not ``<Type: 'float32'>``)."""
    return value.to_string() if hasattr(value, "to_string") else str(value)
