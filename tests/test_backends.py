"""TFLite, Core ML and TensorRT artifacts: export, parity where the runtime exists here, lint, honest status."""

import json
import platform

import pytest
import torch
from typer.testing import CliRunner

from edgeseg.backends import backend_for
from edgeseg.backends.onnx.runtime import OnnxRuntimeModel
from edgeseg.backends.tflite.runtime import LiteRtModel
from edgeseg.cli import app
from edgeseg.commands import export as export_cmd
from edgeseg.errors import EdgesegError

SIZE = "192x256"


@pytest.fixture(scope="module")
def weights(random_b0_weights):
    return random_b0_weights


def test_tflite_fp32_parity_single_partition_nhwc(weights, tmp_path):
    m = export_cmd.export("efficientvit-b0", "camvid", weights, "tflite-fp32", SIZE, tmp_path, parity_images=2)
    assert m["parity"]["max_abs_diff"] <= 1e-4 and m["parity"]["argmax_agreement"] >= 0.999
    assert m["lint"]["clean"] and m["layout"] == "NHWC"
    lint = backend_for("tflite").lint(f"{m['folder']}/{m['file']}")
    assert lint.ops.get("DELEGATE") == 1 and lint.max_rank <= 4  # one XNNPACK partition, GPU-delegate ranks
    assert "GATHER_ND" not in lint.ops and "RESIZE_BILINEAR" not in lint.ops  # exact bicubic as conv
    interp = LiteRtModel(f"{m['folder']}/{m['file']}")
    assert list(interp.input["shape"]) == [1, 192, 256, 3]


def test_tflite_fp16_stores_half_weights(weights, tmp_path):
    m32 = export_cmd.export("efficientvit-b0", "camvid", weights, "tflite-fp32", SIZE, tmp_path, parity_images=1)
    m16 = export_cmd.export("efficientvit-b0", "camvid", weights, "tflite-fp16", SIZE, tmp_path, parity_images=2)
    assert m16["bytes"] < 0.65 * m32["bytes"]
    assert m16["parity"]["argmax_agreement"] >= 0.99 and m16["lint"]["clean"]
    # the command prints its summary for TFLite manifests too (a cache hit: same options as above)
    args = ["export", "-m", "efficientvit-b0", "-w", weights, "-t", "tflite-fp16", "--size", SIZE]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path), "--parity-images", "2"])
    assert r.exit_code == 0, r.output
    assert "(cached)" in r.output and "litert-torch, layout NHWC" in r.output


def test_coreml_converts_and_lints_on_linux_with_honest_parity(weights, tmp_path):
    m = export_cmd.export("efficientvit-b0", "camvid", weights, "coreml-fp16", SIZE, tmp_path, parity_images=1)
    assert m["file"] == "model.mlpackage" and m["lint"]["clean"]
    assert m["fp32_ops_in_fp16"] == ["layer_norm", "matmul", "maximum", "real_div", "reduce_sum", "softmax"]
    if platform.system() != "Darwin":
        assert m["parity"]["argmax_agreement"] is None and "needs macOS" in m["parity"]["runtime"]
    report = backend_for("coreml").lint(f"{m['folder']}/{m['file']}")
    assert report.clean and report.max_rank <= 5 and "upsample_bicubic" not in report.ops
    again = export_cmd.export("efficientvit-b0", "camvid", weights, "coreml-fp16", SIZE, tmp_path, parity_images=1)
    assert again["cached"]  # the package folder's hash is checked too


def test_trt_fp16_writes_strongly_typed_onnx_and_build_command(weights, tmp_path):
    m = export_cmd.export("efficientvit-b0", "camvid", weights, "trt-fp16", SIZE, tmp_path, parity_images=2)
    assert m["file"] == "model.onnx" and m["lint"]["rules"] == "tensorrt" and m["lint"]["clean"]
    assert "--stronglyTyped" in m["trtexec"]
    script = (tmp_path / m["folder"].split("/")[-1] / "build_engine.sh").read_text()
    assert "trtexec --onnx=model.onnx --saveEngine=model.engine --stronglyTyped" in script
    if not torch.cuda.is_available():
        assert m["engine"] is None and m["engine_not_built"].startswith("needs")
    assert m["parity"]["argmax_agreement"] >= 0.99 and "TensorRT-ready ONNX" in m["parity"]["runtime"]
    # eval / bench / check open it through the shared runtime interface: the engine where TensorRT + CUDA exist,
    # else ONNX Runtime on the same ONNX, saying which and why
    from edgeseg.backends import load_artifact
    from edgeseg.backends.tensorrt.runtime import TensorRTModel, tensorrt_status

    art = load_artifact(m["folder"])
    ok, why = tensorrt_status()
    if ok:
        assert art.runtime.startswith("TensorRT") and art.path.name == "model.engine"
    else:
        assert "not the engine" in art.runtime and why in art.runtime
        with pytest.raises(EdgesegError, match="running the TensorRT engine model.engine needs"):
            TensorRTModel(tmp_path / "model.engine")


def test_resize_alignment_agrees_across_backends_on_camvid(weights, tmp_path, camvid):
    """Bilinear head: ORT's Resize, TFLite's RESIZE_BILINEAR and PyTorch must agree pixel for pixel on real
    images (a misaligned resize, e.g. TF's legacy asymmetric mode, drops agreement well below this)."""
    from edgeseg.data.datasets import load_split
    from edgeseg.data.transforms import fit_input, plan_fit, to_tensor

    onnx = export_cmd.export(
        "efficientvit-b0", "camvid", weights, "onnx-fp32", SIZE, tmp_path, parity_images=1, upsample="bilinear"
    )
    tfl = export_cmd.export(
        "efficientvit-b0", "camvid", weights, "tflite-fp32", SIZE, tmp_path, parity_images=1, upsample="bilinear"
    )
    ort = OnnxRuntimeModel(f"{onnx['folder']}/{onnx['file']}")
    lite = LiteRtModel(f"{tfl['folder']}/{tfl['file']}")
    assert backend_for("tflite").lint(f"{tfl['folder']}/{tfl['file']}").ops.get("RESIZE_BILINEAR") == 2
    _, images, _ = load_split(camvid, "val")
    agree = []
    for image in images[:4]:
        x = fit_input(to_tensor(image), plan_fit(image.shape[:2], "resize", (192, 256)))
        agree.append(float((ort(x).argmax(1) == lite(x).argmax(1)).float().mean()))
    assert min(agree) >= 0.999, agree


def test_lint_command_reads_every_format(weights, tmp_path):
    from typer.testing import CliRunner

    from edgeseg.cli import app

    m = export_cmd.export("efficientvit-b0", "camvid", weights, "coreml-fp32", SIZE, tmp_path, parity_images=1)
    r = CliRunner().invoke(app, ["lint", m["folder"], "--json", str(tmp_path / "l.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "l.json").read_text())["rules"] == "coreml"
    r = CliRunner().invoke(app, ["lint", str(tmp_path / "nothing.tflite")])
    assert r.exit_code == 2 and "artifact not found" in r.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT engine builds need a CUDA GPU (none here)")
def test_trt_engine_build(weights, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installable from PyPI here")
    m = export_cmd.export("efficientvit-b0", "camvid", weights, "trt-fp16", SIZE, tmp_path, parity_images=1)
    assert m["engine"] == "model.engine"
