"""INT8: the class-balanced calibration sampler, the attention-aware ONNX policy (inspected in the graph), parity of
a quantized model on real images, and clear errors for bad calibration data."""

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from edgeseg.backends import backend_for
from edgeseg.cli import app
from edgeseg.commands import export as export_cmd
from edgeseg.data.datasets import CAMVID
from edgeseg.errors import EdgesegError
from edgeseg.quantize.calibration import class_balanced_pick, select_calibration
from edgeseg.quantize.onnx_int8 import int8_op_types
from edgeseg.quantize.policy import ALWAYS_FLOAT

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
    m = export_cmd.export(
        "efficientvit-b0",
        "camvid",
        "camvid",
        "onnx-int8",
        out=tmp_path,
        parity_data=camvid,
        parity_images=3,
        calib_data=camvid,
        calib_size=8,
        max_miou_drop=None,  # the search has its own tests
    )
    model = onnx.load(f"{m['folder']}/{m['file']}")
    ops = {n.op_type for n in model.graph.node}
    # the attention normaliser's token sums are matmuls with a ones vector in ONNX (attention-normaliser-matmul:
    # NNAPI and the Core ML EPs take no ReduceSum), so no ReduceSum is left
    assert {"QuantizeLinear", "DequantizeLinear", "MatMul", "Div"} <= ops and "ReduceSum" not in ops
    assert "attention-normaliser-matmul" in m["rewrites"]
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
    assert (
        backend_for("tensorrt").int8_policy.activation_symmetric
        and backend_for("tensorrt").int8_policy.activation_type == "int8"
    )


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
    from edgeseg.backends import backend_for

    m = export_cmd.export(
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
    lint = backend_for("tflite").lint(f"{m['folder']}/{m['file']}")
    assert lint.ops.get("DELEGATE") == 1 and "HARD_SWISH" not in lint.ops  # int8 delegated in one piece
    assert "CONV_2D" in m["quantization"]["int8_nodes"] and "BATCH_MATMUL" not in m["quantization"]["int8_nodes"]
    assert m["parity"]["argmax_agreement"] >= 0.95
    assert m["calibration"]["method"].startswith("histogram")


def test_coreml_int8_w8a8_converts_lints_and_simulated_parity_is_labelled(camvid, tmp_path):
    from edgeseg.backends import backend_for

    m = export_cmd.export(
        "efficientvit-b0",
        "camvid",
        "camvid",
        "coreml-int8",
        "192x256",
        tmp_path,
        parity_data=camvid,
        parity_images=2,
        calib_data=camvid,
        calib_size=4,
        max_miou_drop=None,
    )
    assert m["file"] == "model.mlpackage" and m["lint"]["clean"]
    # weights stored int8, activations quantized: W8A8, not weight-only compression
    ops = m["quantization"]["int8_nodes"]
    assert ops["constexpr_affine_dequantize"] > 40 and ops["quantize"] > 40
    assert set(m["fp32_ops_in_fp16"]) >= {"matmul", "real_div", "reduce_sum"}  # attention core stays fp32
    assert backend_for("coreml").lint(f"{m['folder']}/{m['file']}").clean
    assert "simulated" in m["parity"]["runtime"] and "macOS" in m["parity"]["runtime"]
    assert m["parity"]["argmax_agreement"] >= 0.95


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


def test_holdout_slice_is_disjoint_from_calibration(camvid):
    calib = select_calibration(camvid, CAMVID, size=8, holdout=6)
    assert len(calib.holdout_images) == len(calib.holdout_labels) == 6
    assert not {s.stem for s in calib.holdout} & {s.stem for s in calib.samples}
    assert calib.holdout_labels[0].shape == calib.holdout_images[0].shape[:2]
    with pytest.raises(EdgesegError, match=r"needs 372 images.*smaller --calib-size.*--max-miou-drop off"):
        select_calibration(camvid, CAMVID, size=340, holdout=32)  # train has 367


def test_fewest_float_layers_finds_the_smallest_prefix_within_budget():
    from edgeseg.quantize.search import fewest_float_layers

    ranked = [f"l{i}" for i in range(10)]
    calls = []

    def drop_of(floats):  # each float layer (most sensitive first) wins back less
        calls.append(len(floats))
        return 3.0 / (1 + len(floats)) ** 2

    k, drops = fewest_float_layers(ranked, drop_of, 0.1)
    assert drops[k] <= 0.1 and drops[k - 1] > 0.1  # 3/(k+1)^2 <= 0.1 first at k = 5
    assert k == 5 and len(calls) < len(ranked)  # doubling + bisection, not a linear scan
    assert fewest_float_layers(ranked, drop_of, 5.0)[0] == 0  # all-int8 already within budget
    assert fewest_float_layers(ranked, lambda f: 1.0 if len(f) < 10 else 0.0, 0.5)[0] == 10
    # every layer float still over budget (PT2E keeps int8 I/O): that probe is measured, not assumed 0
    k, drops = fewest_float_layers(ranked, lambda f: 1.0 - 0.01 * len(f), 0.5)
    assert k == 10 and drops[10] == pytest.approx(0.9)


def test_mixed_precision_search_respects_its_budget_on_a_tiny_model(camvid, tmp_path):
    """Real ORT quantization of a 4-conv net; its own fp32 argmax serves as labels, so fp32 scores 100 mIoU and
    every point lost is quantization error."""
    import torch

    from edgeseg.backends.onnx.runtime import OnnxRuntimeModel
    from edgeseg.quantize.calibration import select_calibration
    from edgeseg.quantize.onnx_int8 import prepare_onnx
    from edgeseg.quantize.search import HoldoutScorer, search_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, 1, 1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 4, 1),
    ).eval()  # fmt: skip
    size = (64, 96)
    fp32 = tmp_path / "tiny.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, *size),), str(fp32), input_names=["image"], dynamo=False)
    calib = select_calibration(camvid, CAMVID, size=4, holdout=4)
    small = [np.ascontiguousarray(im[::6, ::5][:60, :90]) for im in calib.holdout_images]
    ref = OnnxRuntimeModel(fp32)
    scorer = HoldoutScorer(ref, small, [np.zeros(im.shape[:2], np.uint8) for im in small], size, 4, None)
    pseudo = []  # the fp32 net's own labels at the source size
    for x, fit in zip(scorer.inputs, scorer.fits):
        from edgeseg.data.transforms import logits_to_source

        pseudo.append(logits_to_source(ref(x), fit).argmax(1)[0].numpy().astype(np.uint8))
    scorer = HoldoutScorer(ref, small, pseudo, size, 4, None)
    assert scorer.miou_reference == pytest.approx(100.0)
    inputs = [
        torch.from_numpy(np.random.default_rng(i).normal(size=(1, 3, *size)).astype(np.float32)) for i in range(4)
    ]
    prepared = prepare_onnx(fp32, tmp_path / "prep.onnx")
    for budget in (0.0, 50.0):
        out = tmp_path / f"int8-{budget}.onnx"
        r = search_onnx(
            prepared, out, inputs, backend_for("onnx").int8_policy, "minmax", scorer, OnnxRuntimeModel, budget
        )
        assert r.drop_final <= budget + 1e-9  # measured on the artifact written
        assert scorer.score(OnnxRuntimeModel(out))[0] == pytest.approx(r.miou_final)
        k = len(r.float_layers)
        if k:  # minimal along the ranking: one float layer fewer was measured over budget
            assert r.probes[k - 1] > budget and r.sensitivity is not None and len(r.sensitivity) == 4
            assert all(f["why"] for f in r.float_layers)
        excluded = {n.name for n in onnx.load(str(prepared)).graph.node} & set(r.nodes_to_exclude)
        assert len(excluded) == k
        if budget == 0.0:
            assert r.probes[0] > 0 and k > 0  # all-int8 loses mIoU on this net: the search had work to do
    assert r.float_layers == [] and r.sensitivity is None  # 50 points: all-int8 is within budget


def test_bad_budget_is_a_one_line_error(tmp_path):
    r = CliRunner().invoke(
        app, ["quantize", "-m", "efficientvit-b0", "-w", "camvid", "--calib-data", ".", "--max-miou-drop", "half"]
    )
    assert r.exit_code == 2 and "--max-miou-drop" in r.output and "Traceback" not in r.output


class _Residual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(8, 8, 1)
        self.b = torch.nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = self.a(x)
        return self.b(y) + y  # a residual add, as in EfficientViT's blocks


def test_pt2e_int8_residual_add_is_int8_in_tflite(tmp_path):
    """litert-torch's add annotator relies on source_fn_stack metadata that torch 2.13's export no longer writes;
    edgeseg's quantizer annotates the add itself, so the TFLite ADD runs on int8 tensors, not between a
    DEQUANTIZE and a QUANTIZE."""
    pytest.importorskip("litert_torch")
    from ai_edge_litert.interpreter import Interpreter

    from edgeseg.backends.tflite.export import export_tflite

    torch.manual_seed(0)
    net = _Residual().eval()
    x = torch.randn(1, 8, 12, 16)
    path = tmp_path / "res.tflite"
    export_tflite(net, x, path, "int8", True, calib_inputs=[torch.randn(1, 8, 12, 16) for _ in range(2)])
    interp = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    adds = [o for o in interp._get_ops_details() if o["op_name"] == "ADD"]
    assert adds, "no ADD in the graph"
    for op in adds:
        dtypes = {np.dtype(tensors[int(i)]["dtype"]).name for i in [*op["inputs"], *op["outputs"]]}
        assert dtypes == {"int8"}, dtypes
    names = [o["op_name"] for o in interp._get_ops_details()]
    assert names.count("DEQUANTIZE") <= 1, names  # only the graph output leaves int8


class _TinyResidual(torch.nn.Module):
    """conv -> ReLU -> conv + skip -> conv: PT2E makes every conv and the add int8."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, 2, 1)
        self.body = torch.nn.Conv2d(16, 16, 3, 1, 1)
        self.head = torch.nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return self.head(self.body(y) + y)


def _nhwc(x):
    return x.permute(0, 2, 3, 1).contiguous()


def _nchw(y):
    return y.permute(0, 3, 1, 2)


def _tiny_pt2e(seed: int = 0):
    """The tiny net in NHWC I/O as the TFLite exporter wraps it, its PT2E int8 graph and the graph's switches."""
    import litert_torch

    from edgeseg.quantize.pt2e import Pt2eSwitches, pt2e_int8

    torch.manual_seed(seed)
    net = _TinyResidual().eval()
    inputs = [torch.randn(1, 3, 32, 64) for _ in range(4)]
    wrapped = litert_torch.to_channel_last_io(net, args=[0], outputs=[0])
    converted, quantizer = pt2e_int8(wrapped, _nhwc(inputs[0]), inputs, False, _nhwc)
    return net, inputs, converted, quantizer, Pt2eSwitches(converted, _nhwc, _nchw)


def test_pt2e_switches_run_the_converted_graph_and_export_what_they_simulate():
    net, inputs, converted, _, switches = _tiny_pt2e()
    x = inputs[0]
    labels = dict(switches.layers)
    assert [lab.split(" ")[0] for lab in labels.values() if "conv2d" in lab] == ["stem", "body", "head"]
    assert any(lab.startswith("add") or "(add)" in lab for lab in labels.values())
    with torch.no_grad():
        int8 = _nchw(converted(_nhwc(x)))
        assert torch.equal(switches.predict(x), int8)  # no layer float: exactly the converted graph
        ref = net(x)
        body = next(n for n, lab in switches.layers if lab.startswith("body"))
        switches.set_float([body])
        one_float = switches.predict(x)
        switches.set_float([n for n, _ in switches.layers])
        all_float = switches.predict(x)
    assert not torch.equal(one_float, int8)
    err = lambda y: float((y - ref).abs().max())  # noqa: E731
    assert err(all_float) < err(int8)  # float layers read float tensors: closer to the reference
    with pytest.raises(KeyError, match="not a layer"):
        switches.set_float(["nope"])
    exported = switches.graph_for_export([body])
    with torch.no_grad():
        assert torch.equal(_nchw(exported(_nhwc(x))), one_float)  # what is converted is what the search scored


class _TokenMixer(torch.nn.Module):
    """conv -> tokens (reshape + transpose) -> linear -> back to a map -> conv: shape ops between int8 layers, which
    the quantizer gives int8 inputs of their own (QnA, LeViT)."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, 2, 1)
        self.mix = torch.nn.Linear(16, 16)
        self.head = torch.nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        b, c, h, w = y.shape
        t = self.mix(y.reshape(b, c, h * w).transpose(1, 2))
        return self.head(t.transpose(1, 2).reshape(b, c, h, w))


def test_pt2e_every_layer_float_leaves_no_quantized_shape_op():
    """Shape ops reading int8 tensors follow the layers they feed: with every layer float nothing is quantized
    (the search's "every layer float" probe is the float model), and with none float the graph is unchanged."""
    import litert_torch

    from edgeseg.quantize.pt2e import _DEQUANTIZE, Pt2eSwitches, _is_qdq, pt2e_int8

    torch.manual_seed(0)
    net = _TokenMixer().eval()
    inputs = [torch.randn(1, 3, 16, 16) for _ in range(4)]
    wrapped = litert_torch.to_channel_last_io(net, args=[0], outputs=[0])
    converted, _ = pt2e_int8(wrapped, _nhwc(inputs[0]), inputs, False, _nhwc)
    switches = Pt2eSwitches(converted, _nhwc, _nchw)
    assert switches._followers, "no shape op reads an int8 tensor: the test net no longer covers the case"
    everything = [n for n, _ in switches.layers]
    graph = switches.graph_for_export(everything)
    assert not [n.name for n in graph.graph.nodes if _is_qdq(n, _DEQUANTIZE)]
    x = inputs[0]
    with torch.no_grad():
        assert torch.equal(switches.predict(x), _nchw(converted(_nhwc(x))))
        switches.set_float(everything)
        assert torch.allclose(switches.predict(x), net(x), atol=1e-5)
        assert torch.allclose(_nchw(graph(_nhwc(x))), net(x), atol=1e-5)


def test_pt2e_float_layer_becomes_a_float_op_in_tflite(tmp_path):
    """The converter turns a switched-off layer into a float CONV_2D; the head stays int8 (the stem too goes float:
    the body reads its float output, as simulated), and the TFLite output matches the simulation."""
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter
    from litert_torch.quantize.quant_config import QuantConfig

    from edgeseg.backends.tflite.runtime import LiteRtModel

    net, inputs, converted, quantizer, switches = _tiny_pt2e()
    body = next(n for n, lab in switches.layers if lab.startswith("body"))
    switches.set_float([body])
    expected = switches.predict(inputs[1])
    graph = switches.graph_for_export([body])
    path = tmp_path / "m.tflite"
    litert_torch.convert(graph, (_nhwc(inputs[0]),), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(
        str(path)
    )
    it = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    weight_dtype = {  # conv by its weight shape (OHWI): stem 16x3x3x3, body 16x3x3x16, head 4x1x1x16
        tuple(tensors[o["inputs"][1]]["shape"]): tensors[o["inputs"][1]]["dtype"]
        for o in it._get_ops_details()
        if o["op_name"] == "CONV_2D"
    }
    assert weight_dtype[(16, 3, 3, 16)] == np.float32 and weight_dtype[(4, 1, 1, 16)] == np.int8
    got = LiteRtModel(path)(inputs[1])
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= 0.05 * scale  # int8 rounding of the output, not a new model


def test_pt2e_search_keeps_the_fewest_layers_float_within_budget(camvid, tmp_path):
    """The TFLite exporter's search on the tiny net, scored on its own fp32 argmax (fp32 scores 100 mIoU): budget
    decisions on converted artifacts, minimal along the ranking, the written file the chosen probe; nothing
    searched when all-int8 already fits."""
    from edgeseg.backends.tflite.export import export_tflite
    from edgeseg.backends.tflite.runtime import LiteRtModel
    from edgeseg.data.transforms import logits_to_source
    from edgeseg.quantize.search import HoldoutScorer, search_pt2e

    torch.manual_seed(0)
    net = _TinyResidual().eval()
    calib_inputs = [torch.randn(1, 3, 32, 64) for _ in range(4)]
    calib = select_calibration(camvid, CAMVID, size=4, holdout=4)
    small = [np.ascontiguousarray(im[::12, ::8][:30, :60]) for im in calib.holdout_images]
    scorer = HoldoutScorer(net, small, [np.zeros(im.shape[:2], np.uint8) for im in small], (32, 64), 4, None)
    pseudo = [
        logits_to_source(net(x), f).argmax(1)[0].numpy().astype(np.uint8) for x, f in zip(scorer.inputs, scorer.fits)
    ]
    scorer = HoldoutScorer(net, small, pseudo, (32, 64), 4, None)
    results, seen = [], {}

    def search(budget):
        def choose_float(switches, convert):
            seen["layers"] = [n for n, _ in switches.layers]
            realize = lambda names: LiteRtModel(convert(names))  # noqa: E731
            results.append(search_pt2e(switches, scorer, budget, realize, sensitivity_images=2))
            return results[-1].nodes_to_exclude

        out = tmp_path / f"m{len(results)}.tflite"
        export_tflite(net, calib_inputs[0], out, "int8", True, calib_inputs, choose_float)
        assert sorted(p.name for p in tmp_path.iterdir() if "probe" in p.name) == []  # probes cleaned up
        return results[-1], out

    drop_int8 = search(100.0)[0].probes[0]
    r, _ = search(0.0)
    drop_float = r.probes[len(seen["layers"])] if len(r.float_layers) == len(seen["layers"]) else None
    assert drop_int8 > 1  # all-int8 loses mIoU on this net: there is work to do
    budget = drop_int8 / 2 if drop_float is None else drop_float + (drop_int8 - drop_float) / 2
    r, out = search(budget)
    k = len(r.float_layers)
    assert 0 < k and r.probes[k] <= budget and r.probes[k - 1] > budget  # minimal along its ranking
    assert r.sensitivity_images == 2 and len(r.sensitivity) == len(seen["layers"])
    assert scorer.score(LiteRtModel(out))[0] == pytest.approx(r.miou_final)  # the file written is the probe
    assert r.drop_final <= budget
    assert results[0].float_layers == [] and results[0].sensitivity is None  # 100 points: nothing to search


def test_worst_class_objective_sees_a_class_the_mean_hides():
    """A candidate that loses one small class entirely: a modest mIoU drop, a 100-point worst-class drop."""
    import torch

    from edgeseg.data.transforms import auto_fit, fit_input, to_tensor
    from edgeseg.quantize.search import HoldoutScorer

    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 3, (32, 32)).astype(np.uint8) for _ in range(3)]
    for lb in labels:
        lb[:2, :2] = 3  # class 3: a few pixels per image
    images = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(3)]  # told apart by their value
    keys = [float(fit_input(to_tensor(im), auto_fit(im.shape[:2], (32, 32)))[0, 0, 0, 0]) for im in images]

    def oracle(lose_class_3: bool):
        def predict(x):
            i = int(np.argmin([abs(float(x[0, 0, 0, 0]) - k) for k in keys]))
            lb = torch.from_numpy(labels[i].astype(np.int64))
            if lose_class_3:
                lb = torch.where(lb == 3, torch.zeros_like(lb), lb)
            return torch.nn.functional.one_hot(lb, 4).permute(2, 0, 1)[None].float()

        return predict

    mean = HoldoutScorer(oracle(False), images, labels, (32, 32), 4, None)
    worst = HoldoutScorer(oracle(False), images, labels, (32, 32), 4, None, objective="worst-class")
    assert mean.miou_reference == pytest.approx(100.0) and worst.miou_reference == pytest.approx(100.0)
    drop_mean = mean.miou_reference - mean.score(oracle(True))[0]
    drop_worst = worst.miou_reference - worst.score(oracle(True))[0]
    assert 20 < drop_mean < 30 and drop_worst == pytest.approx(100.0)
    assert worst.miou_reference - worst.score(oracle(False), images=2)[0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="worst-class"):
        HoldoutScorer(oracle(False), images, labels, (32, 32), 4, None, objective="median")


def test_agreement_objective_counts_pixels_whose_argmax_leaves_fp32():
    """No labels needed: the reference scores 100 and a candidate the share of pixels with fp32's argmax, whatever
    the labels say (here they are all ignored)."""
    import torch

    from edgeseg.quantize.search import HoldoutScorer

    images = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(2)]
    labels = [np.full((32, 32), 255, np.uint8) for _ in images]  # nothing labelled

    def reference(x):
        return torch.zeros(1, 3, 32, 32).index_fill_(1, torch.tensor([1]), 1.0)  # class 1 everywhere

    def candidate(x):
        y = reference(x).clone()
        y[:, 2, :8] = 2.0  # a quarter of the rows turn to class 2
        return y

    agree = HoldoutScorer(reference, images, labels, (32, 32), 3, 255, objective="agreement")
    assert agree.miou_reference == 100.0
    assert agree.score(reference)[0] == pytest.approx(100.0)
    assert agree.score(candidate)[0] == pytest.approx(75.0)
    assert agree.miou_reference - agree.score(candidate, images=1)[0] == pytest.approx(25.0)


def test_int8_objective_is_an_export_option_with_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from edgeseg.cli import app
    from edgeseg.export_request import ExportOptions

    assert ExportOptions(int8_objective="worst-class").int8_objective == "worst-class"
    assert ExportOptions().int8_objective == "mean"
    args = ["export", "--model", "efficientvit-b0", "--target", "onnx-int8", "--out", str(tmp_path)]
    r = CliRunner().invoke(app, [*args, "--calib-data", str(tmp_path), "--int8-objective", "median"])
    assert r.exit_code == 2 and "--int8-objective 'median': use mean, worst-class or agreement" in r.output
    assert "Traceback" not in r.output and not any(tmp_path.iterdir())
