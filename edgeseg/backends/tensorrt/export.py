"""TensorRT: a strongly typed, TensorRT-ready ONNX (precision is in the graph: fp16 weights and activations with
explicit fp32 casts around the attention core and resizes, as TensorRT 10+/11 strongly typed builds require),
plus the engine when TensorRT and a CUDA GPU are present here. Otherwise the exact ``trtexec`` command for the
device is written beside the ONNX, and the manifest says the engine was not built and why."""

from __future__ import annotations

import shlex
from pathlib import Path


def trtexec_command(onnx_name: str, engine_name: str) -> str:
    args = [
        "trtexec",
        f"--onnx={onnx_name}",
        f"--saveEngine={engine_name}",
        "--stronglyTyped",
        "--useCudaGraph",
        "--useSpinWait",
        "--noDataTransfers",
        "--timingCacheFile=timing.cache",
    ]
    return " ".join(shlex.quote(a) for a in args)


def build_engine(onnx_path: Path, engine_path: Path) -> dict:
    """Build a strongly typed engine with the TensorRT Python API (only where tensorrt_status() is ok)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed")
    engine_path.write_bytes(bytes(serialized))
    return {"tensorrt": trt.__version__, "engine": engine_path.name}
