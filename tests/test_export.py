"""ONNX export: parity vs PyTorch, fp32 islands in fp16, argmax graphs, atomic artifact folders, cache, lint."""

import json

import onnx
import pytest
import torch
from typer.testing import CliRunner

from edgeseg.backends import backend_for
from edgeseg.cli import app
from edgeseg.commands import evaluate as evaluate_cmd
from edgeseg.commands import export as export_cmd
from edgeseg.lint import lint_onnx
from edgeseg.paths import SAMPLE_DATA

SIZE = "192x256"  # small static size keeps the suite fast; CamVid images are padded/cropped to it


@pytest.fixture(scope="module")
def weights(random_b0_weights):
    return random_b0_weights


@pytest.fixture(scope="module")
def fp32(weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("art")
    return export_cmd.export("efficientvit-b0", "camvid", weights, "onnx-fp32", SIZE, out, parity_images=3), out


def test_onnx_fp32_parity_manifest_and_lint(fp32):
    m, out = fp32
    assert m["parity"]["max_abs_diff"] <= 1e-4
    assert m["parity"]["argmax_agreement"] >= 0.999
    # labels exist for the parity images: both sides' mIoU is recorded, and equal for an exact export
    assert abs(m["parity"]["miou_candidate"] - m["parity"]["miou_reference"]) < 1e-3
    assert m["lint"]["clean"] and m["exporter"].startswith("torch.export")
    assert m["rewrites"] == {"attention-normaliser-matmul": 4, "bicubic-as-matmul": 2}
    # residency at export: ORT's partitioner per mobile EP (fp32 keeps HardSwish for ORT CPU: NNAPI splits there)
    residency = {r["accelerator"]: r for r in m["residency"]}
    assert set(residency) == {"nnapi", "coreml-neuralnetwork", "coreml-mlprogram", "ort-cpu"}
    assert residency["coreml-mlprogram"]["partitions"] == 1 and "ReduceSum" not in residency["nnapi"]["unsupported_ops"]
    assert m["input"]["shape"] == [1, 3, 192, 256] and m["output"]["shape"] == [1, 11, 24, 32]
    graph = onnx.load(f"{m['folder']}/{m['file']}").graph
    assert not [n for n in graph.node if n.op_type == "Pad"]  # the ones-row pad is gone
    ops = {n.op_type for n in graph.node}
    assert ops >= {"Conv", "MatMul", "Div"} and "Resize" not in ops  # exact bicubic runs as convolution
    assert json.loads((out / m["folder"].split("/")[-1] / "lint.json").read_text())["clean"]


def test_cache_hit_then_force_rebuild(weights, fp32):
    m, out = fp32
    again = export_cmd.export("efficientvit-b0", "camvid", weights, "onnx-fp32", SIZE, out, parity_images=3)
    assert again["cached"] and again["sha256"] == m["sha256"]
    rebuilt = export_cmd.export(
        "efficientvit-b0", "camvid", weights, "onnx-fp32", SIZE, out, parity_images=3, force=True
    )
    assert not rebuilt["cached"]


def test_onnx_fp16_keeps_attention_core_in_fp32(weights, tmp_path):
    m = export_cmd.export("efficientvit-b0", "camvid", weights, "onnx-fp16", SIZE, tmp_path, parity_images=3)
    assert m["parity"]["argmax_agreement"] >= 0.99
    graph = onnx.load(f"{m['folder']}/{m['file']}").graph
    fp16_weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(fp16_weights) > 50
    casts_to_fp32 = [
        n
        for n in graph.node
        if n.op_type == "Cast" and onnx.helper.get_attribute_value(n.attribute[0]) == onnx.TensorProto.FLOAT
    ]
    # each of the 4 attention blocks casts q/k/v up; each of the 2 resizes runs fp32; plus the output cast
    assert len(casts_to_fp32) >= 4 + 2
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # fp16 ONNX is the accelerators' artifact: one partition holding every node on NNAPI and both Core ML EPs
    for r in m["residency"]:
        if r["accelerator"] != "ort-cpu":
            assert (r["partitions"], r["nodes_supported"]) == (1, r["nodes_total"]), r


def test_with_argmax_outputs_int32_labels(weights, tmp_path):
    m = export_cmd.export(
        "efficientvit-b0", "camvid", weights, "onnx-fp32", SIZE, tmp_path, with_argmax=True, parity_images=3
    )
    assert m["output"] == {"name": "labels", "shape": [1, 192, 256], "dtype": "int32"}
    assert m["parity"]["argmax_agreement"] >= 0.999 and m["parity"]["max_abs_diff"] is None
    assert abs(m["parity"]["miou_candidate"] - m["parity"]["miou_reference"]) < 1e-2
    assert m["folder"].endswith("-argmax")


def test_failed_export_leaves_no_folder(weights, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("lint crashed midway")

    monkeypatch.setattr(type(backend_for("onnx")), "lint", boom)
    with pytest.raises(RuntimeError):
        export_cmd.export("efficientvit-b0", "camvid", weights, "onnx-fp32", SIZE, tmp_path, parity_images=1)
    assert list(tmp_path.iterdir()) == []


def _export_module(module, x, path):
    module.eval()
    torch.onnx.export(module, (x,), str(path), dynamo=True, opset_version=18, external_data=False)
    return path


def test_lint_catches_planted_6d_transpose(tmp_path):
    class SixD(torch.nn.Module):
        def forward(self, x):  # the im2col-style pattern F.unfold produces
            return x.reshape(1, 2, 2, 2, 4, 4).permute(0, 1, 3, 2, 4, 5).reshape(1, 8, 4, 4)

    path = _export_module(SixD(), torch.randn(1, 8, 4, 4), tmp_path / "sixd.onnx")
    report = lint_onnx(path, backend_for("onnx").rules)
    rules = {f.rule for f in report.findings}
    assert not report.clean and "6d-transpose" in rules and report.max_rank == 6
    assert "max-rank" in {f.rule for f in lint_onnx(path, backend_for("coreml").rules).findings}  # Core ML stops at 5-D
    result = CliRunner().invoke(app, ["lint", str(path)])
    assert result.exit_code == 1 and "6d-transpose" in result.output


def test_lint_catches_dynamic_reshape():
    h = onnx.helper
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    nodes = [
        h.make_node("Shape", ["x"], ["s"], name="shape_of_x"),
        h.make_node("Reshape", ["x", "s"], ["y"], name="dynamic_reshape"),
    ]
    model = h.make_model(h.make_graph(nodes, "dyn", [x], [y]), opset_imports=[h.make_opsetid("", 18)])
    report = lint_onnx(model, backend_for("tensorrt").rules)
    assert {(f.rule, f.node) for f in report.findings} >= {("forbidden-op", "shape_of_x"), ("static-shape", "x")}


def test_bicubic_resize_op_fails_tflite_rules(weights, tmp_path):
    m = export_cmd.export(
        "efficientvit-b0", "camvid", weights, "onnx-fp32", SIZE, tmp_path, parity_images=1, upsample="resize"
    )
    assert m["folder"].endswith("-resize") and m["rewrites"]["upsample-fp32"] == 2
    report = lint_onnx(f"{m['folder']}/{m['file']}", backend_for("tflite").rules)
    assert [f.rule for f in report.findings if f.severity == "error"] == ["resize-mode", "resize-mode"]


def test_export_cli_unknown_target(weights):
    runner = CliRunner()
    r = runner.invoke(app, ["export", "--model", "efficientvit-b0", "--weights", weights, "--target", "onnx_fp16"])
    assert r.exit_code == 2 and "Did you mean 'onnx-fp16'" in r.output


def test_size_must_be_multiple_of_32_for_export(weights, tmp_path):
    r = CliRunner().invoke(
        app,
        [
            "export",
            "--model",
            "efficientvit-b0",
            "--weights",
            weights,
            "--target",
            "onnx-fp32",
            "--size",
            "360x480",
            "--out",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 2 and "use 384x480 or 352x480" in r.output


def test_eval_and_predict_run_artifacts_like_the_model(weights, fp32, tmp_path):
    m, _ = fp32
    ref = evaluate_cmd.evaluate("efficientvit-b0", "camvid", weights, SAMPLE_DATA, fit="resize", size=SIZE)
    art = evaluate_cmd.evaluate(None, None, None, SAMPLE_DATA, artifact=m["folder"])
    assert art["runtime"].startswith("onnxruntime") and art["target"] == "onnx-fp32"
    assert abs(art["miou"] - ref["miou"]) < 1e-3
    written = evaluate_cmd.predict(
        None, None, None, SAMPLE_DATA / "val" / "images", tmp_path / "p", artifact=m["folder"]
    )
    from PIL import Image

    assert Image.open(written[0]).size == (480, 360)  # back at the source size


def test_eval_rejects_mixed_sources_and_missing_manifest(weights, fp32, tmp_path):
    m, _ = fp32
    r = CliRunner().invoke(app, ["eval", "--artifact", m["folder"], "--model", "efficientvit-b0"])
    assert r.exit_code == 2 and "either --artifact or --model" in r.output
    (tmp_path / "x.onnx").write_bytes(b"")
    r = CliRunner().invoke(app, ["eval", "--artifact", str(tmp_path / "x.onnx")])
    assert r.exit_code == 2 and "no manifest.json" in r.output
