"""Static INT8 quantization of an fp32 ONNX graph with ONNX Runtime's quantizer (QDQ format).

``quant_pre_process`` (shape inference + ORT graph optimisations that fold BatchNorm and fuse ops) runs first, as
ORT's documentation asks; then ``quantize_static`` with the backend's policy (``edgeseg.quantize.policy``) and the
calibration inputs, preprocessed exactly as the deployed input (``CalibrationSet.inputs``). A calibration cache
lets the mixed-precision search re-quantize with other layers left float without calibrating again.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch

from edgeseg.quantize.policy import Int8Policy

# ORT's percentile calibration keeps this share of the histogram (drops the 0.001 % tails).
PERCENTILE = 99.999


class _Reader:
    """ORT's CalibrationDataReader protocol (get_next until None; rewind to start over) over prepared inputs."""

    def __init__(self, input_name: str, inputs: list[torch.Tensor]):
        self._feeds = [{input_name: x.numpy().astype(np.float32)} for x in inputs]
        self._next = 0

    def get_next(self) -> dict | None:
        if self._next >= len(self._feeds):
            return None
        self._next += 1
        return self._feeds[self._next - 1]

    def rewind(self) -> None:
        self._next = 0


def prepare_onnx(fp32_path: Path, prepared_path: Path) -> Path:
    """ORT's pre-processing (shape inference, BN folding, fusions) that quantization expects."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(prepared_path))
    return prepared_path


def quantize_prepared(
    prepared: Path,
    out_path: Path,
    inputs: list[torch.Tensor] | None,
    policy: Int8Policy,
    method: str = "percentile",
    nodes_to_exclude: list[str] | None = None,
    calibration_cache: Path | None = None,
) -> None:
    """QDQ-quantize a prepared model. With ``calibration_cache``, the first call calibrates on ``inputs`` and
    stores the ranges; later calls reuse them (``inputs`` may then be None)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
    calib = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    cached = calibration_cache is not None and calibration_cache.is_file()
    # ORT's calibrators print their progress; edgeseg reports its own
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            str(prepared),
            str(out_path),
            None if cached else _Reader(input_name, inputs),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(policy.quantize_op_types),
            per_channel=True,
            activation_type=QuantType.QUInt8 if policy.activation_type == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=nodes_to_exclude or [],
            calibrate_method=calib,
            extra_options={
                "ActivationSymmetric": policy.activation_symmetric,
                "WeightSymmetric": True,
                "CalibPercentile": PERCENTILE,
            },
            calibration_cache_path=None if calibration_cache is None else str(calibration_cache),
        )


def quantize_onnx(
    fp32_path: Path,
    out_path: Path,
    inputs: list[torch.Tensor],
    policy: Int8Policy,
    method: str = "percentile",
    nodes_to_exclude: list[str] | None = None,
) -> dict:
    """Write the QDQ int8 model to ``out_path``; return what was done (for the manifest)."""
    prepared = prepare_onnx(fp32_path, out_path.with_name(out_path.stem + ".prep.onnx"))
    try:
        quantize_prepared(prepared, out_path, inputs, policy, method, nodes_to_exclude)
    finally:
        prepared.unlink(missing_ok=True)
    return quantization_facts(out_path, method, nodes_to_exclude)


def quantization_facts(path: Path, method: str, nodes_to_exclude: list[str] | None) -> dict:
    return {
        "quantizer": "onnxruntime.quantization.quantize_static (QDQ)",
        "calibration_method": method,
        "int8_nodes": dict(Counter(int8_op_types(onnx.load(str(path))))),
        "float_nodes_excluded": list(nodes_to_exclude or []),
    }


def quantizable_layers(model: onnx.ModelProto, policy: Int8Policy) -> list[tuple[str, str]]:
    """(node name, readable layer name) of the nodes the policy would quantize, in graph order. The readable name
    is the PyTorch module path taken from the weight's initializer name (torch's exporter keeps it)."""
    inits = {i.name for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type not in policy.quantize_op_types:
            continue
        weight = next((i for i in n.input[1:2] if i in inits), "")
        label = weight.removeprefix("model.").removesuffix(".weight") if "." in weight else f"{n.op_type} {n.name}"
        out.append((n.name, label))
    return out


def int8_op_types(model: onnx.ModelProto) -> list[str]:
    """Op types of the nodes that compute in int8: every float input comes through DequantizeLinear and every
    output goes straight into QuantizeLinear (the QDQ pattern ORT and TensorRT fuse into int8 kernels)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = []
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        data_inputs = [i for i in n.input[:1] if i]  # the activation input
        if not data_inputs or any(
            producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in data_inputs
        ):
            continue
        outs = [c for o in n.output for c in consumers.get(o, [])]
        if outs and all(c.op_type == "QuantizeLinear" for c in outs):
            out.append(n.op_type)
    return out
