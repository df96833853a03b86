"""INT8: the class-balanced calibration sampler, the attention-aware ONNX policy (inspected in the graph), parity of
a quantized model on real images, and clear errors for bad calibration data."""

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from edgeseg import pipeline
from edgeseg.cli import app
from edgeseg.data.datasets import CAMVID
from edgeseg.quantize.calibration import class_balanced_pick, select_calibration
from edgeseg.quantize.onnx_int8 import int8_op_types
from edgeseg.quantize.policy import ALWAYS_FLOAT, POLICIES

RARE = ("pole", "sign", "pedestrian", "bicyclist")


def test_sampler_serves_a_class_only_few_images_have():
    rng = np.random.default_rng(0)
    hist = np.zeros((50, 3), dtype=np.int64)
    hist[:, 0] = rng.integers(5000, 9000, 50)  # everywhere, large
    hist[:, 1] = rng.integers(500, 900, 50)
    hist[[7, 31], 2] = 40  # a rare class in 2 of 50 images
    picked = class_balanced_pick(hist, 4)
    assert len(set(picked)) == 4
    assert {7, 31} <= set(picked)


def test_sampler_rejects_more_images_than_the_split_has():
    with pytest.raises(Exception, match="at most 3"):
        class_balanced_pick(np.ones((3, 2), dtype=np.int64), 5)


def test_camvid_calibration_oversamples_rare_classes(camvid):
    calib = select_calibration(camvid, CAMVID, size=16)
    assert len(calib.images) == 16 and len({s.stem for s in calib.samples}) == 16
    assert all(s.image.parent.parent.name == "train" for s in calib.samples)  # never the val split it is scored on
    for c in RARE:
        assert calib.pixel_share[c] > calib.split_pixel_share[c], c
    assert calib.manifest()["sha256"] == select_calibration(camvid, CAMVID, size=16).sha256  # deterministic


def test_onnx_int8_keeps_attention_float_and_agrees_with_fp32(camvid, tmp_path):
    m = pipeline.export(
        "efficientvit-b0",
        "camvid",
        "camvid",
        "onnx-int8",
        out=tmp_path,
        parity_data=camvid,
        parity_images=3,
        calib_data=camvid,
        calib_size=8,
    )
    model = onnx.load(f"{m['folder']}/{m['file']}")
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "MatMul", "Div", "ReduceSum"} <= ops
    int8 = set(int8_op_types(model))
    assert "Conv" in int8
    assert not int8 & set(ALWAYS_FLOAT), int8 & set(ALWAYS_FLOAT)  # attention core and normaliser stay float
    # weights: int8, per output channel (a zero point per channel), symmetric (zero points 0)
    inits = {i.name: i for i in model.graph.initializer}
    zps = [
        onnx.numpy_helper.to_array(inits[n.input[2]])
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].data_type == onnx.TensorProto.INT8
    ]
    assert zps and all((z == 0).all() for z in zps) and any(z.size > 1 for z in zps)
    assert m["parity"]["argmax_agreement"] >= 0.95
    assert m["quantization"]["policy"]["activations"] == "uint8, asymmetric"
    assert m["calibration"]["size"] == 8 and m["calibration"]["split"] == "train"


def test_tensorrt_int8_policy_is_symmetric():
    assert POLICIES["tensorrt"].activation_symmetric and POLICIES["tensorrt"].activation_type == "int8"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--calib-data", "/nonexistent/camvid"], "calibration data not found"),
        (["--calib-size", "0", "--calib-data", "."], "--calib-size must be at least 1"),
        (["--calib-method", "median", "--calib-data", "."], "unknown --calib-method"),
    ],
)
def test_bad_calibration_arguments_get_one_line_errors(args, message, tmp_path):
    r = CliRunner().invoke(
        app, ["quantize", "--model", "efficientvit-b0", "--weights", "camvid", "--out", str(tmp_path), *args]
    )
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []


def test_empty_calibration_folder_is_named(tmp_path):
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "labels").mkdir()
    r = CliRunner().invoke(
        app, ["export", "-m", "efficientvit-b0", "-w", "camvid", "-t", "onnx-int8", "--calib-data", str(tmp_path)]
    )
    assert r.exit_code == 2 and "no images" in r.output


def test_int8_export_without_calibration_says_what_to_pass(tmp_path):
    r = CliRunner().invoke(
        app, ["export", "-m", "efficientvit-b0", "-w", "camvid", "-t", "onnx-int8", "--out", str(tmp_path)]
    )
    assert r.exit_code == 2 and "--calib-data" in r.output


def test_tflite_int8_single_xnnpack_partition_and_agrees_with_fp32(camvid, tmp_path):
    from edgeseg.lint import lint_tflite

    m = pipeline.export(
        "efficientvit-b0",
        "camvid",
        "camvid",
        "tflite-int8",
        "192x256",
        tmp_path,
        parity_data=camvid,
        parity_images=2,
        calib_data=camvid,
        calib_size=4,
    )
    assert m["rewrites"]["hardswish-as-clamp"] > 0 and m["lint"]["clean"]
    lint = lint_tflite(f"{m['folder']}/{m['file']}")
    assert lint.ops.get("DELEGATE") == 1 and "HARD_SWISH" not in lint.ops  # int8 delegated in one piece
    assert "CONV_2D" in m["quantization"]["int8_nodes"] and "BATCH_MATMUL" not in m["quantization"]["int8_nodes"]
    assert m["parity"]["argmax_agreement"] >= 0.95
    assert m["calibration"]["method"].startswith("histogram")


def test_calibration_reader_yields_every_input_then_none_and_rewinds():
    import torch

    from edgeseg.quantize.onnx_int8 import _Reader

    reader = _Reader("image", [torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)])
    first = [reader.get_next(), reader.get_next(), reader.get_next()]
    assert first[2] is None and first[1]["image"].mean() == 1.0
    reader.rewind()
    assert reader.get_next()["image"].mean() == 0.0


def test_quantize_refuses_a_float_target(tmp_path):
    r = CliRunner().invoke(
        app, ["quantize", "-m", "efficientvit-b0", "-w", "camvid", "-t", "onnx-fp32", "--calib-data", str(tmp_path)]
    )
    assert r.exit_code == 2 and "not an INT8 target" in r.output
