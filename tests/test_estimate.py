"""The latency estimator: kernel arithmetic on a hand-built graph, calibration on synthetic measurements, and the
"estimate" label everywhere an estimate is shown."""

import hashlib
import json
import math

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.estimate.calibrate import Point, fit, leave_one_out
from edgeseg.estimate.graph import GraphCost, Kernel, graph_kernels
from edgeseg.estimate.roofline import estimate
from edgeseg.estimate.schema import Calibration, Estimate, EstimatorData

runner = CliRunner()


def _tiny_graph(qdq: bool = False) -> onnx.ModelProto:
    """X[1,3,8,8] -> Conv 3x3 (3->4, bias) -> Relu -> depthwise Conv 3x3 -> Add(residual: the Relu output) ->
    HardSwish -> H. With ``qdq`` the first conv reads a Q/DQ-quantized input and int8 weights instead."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W1"),
        numpy_helper.from_array(np.zeros(4, np.float32), "B1"),
        numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "W2"),
    ]
    nodes = []
    conv1_in, w1 = "X", "W1"
    if qdq:
        inits += [
            numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
            numpy_helper.from_array(rng.integers(-8, 8, (4, 3, 3, 3)).astype(np.int8), "W1q"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["X", "s", "z"], ["Xq"], name="q"),
            helper.make_node("DequantizeLinear", ["Xq", "s", "z"], ["Xd"], name="dq"),
            helper.make_node("DequantizeLinear", ["W1q", "s", "z"], ["W1d"], name="dqw"),
        ]
        conv1_in, w1 = "Xd", "W1d"
    nodes += [
        helper.make_node("Conv", [conv1_in, w1, "B1"], ["Y1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["Y1"], ["R1"], name="relu"),
        helper.make_node("Conv", ["R1", "W2"], ["Y2"], pads=[1, 1, 1, 1], group=4, name="dw"),
        helper.make_node("Add", ["Y2", "R1"], ["A"], name="add"),
        helper.make_node("HardSwish", ["A"], ["H"], name="hswish"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("H", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model)


def test_kernels_of_a_tiny_graph_by_hand():
    # ONNX Runtime: Conv+Relu, depthwise Conv+residual Add, HardSwish alone (not a fused activation there).
    cost = graph_kernels(_tiny_graph(), "onnxruntime")
    assert [k.ops for k in cost.kernels] == [["Conv", "Relu"], ["Conv", "Add"], ["HardSwish"]]
    k1, k2, k3 = cost.kernels
    # conv1: 2 * (4*8*8 outputs) * (3*3*3 MACs each) + Relu (one op per element)
    assert k1.flops == 2 * 256 * 27 + 256
    assert (k1.weight_elements, k1.activation_elements) == (4 * 27 + 4, 192 + 256)
    assert k1.bytes == 4 * (112 + 448) and k1.op_class == "conv"
    # depthwise: 2 * 256 * 9 + Add; reads R1 once (it is both its input and the residual), writes A
    assert k2.flops == 2 * 256 * 9 + 256 and k2.op_class == "dwconv"
    assert (k2.weight_elements, k2.activation_elements) == (36, 256 + 256)
    assert k3.flops == 4 * 256 and k3.bytes == 4 * 512 and k3.op_class == "elementwise"
    # TensorRT fuses the HardSwish into the depthwise kernel (pointwise fusion after the residual Add)
    trt = graph_kernels(_tiny_graph(), "tensorrt")
    assert [k.ops for k in trt.kernels] == [["Conv", "Relu"], ["Conv", "Add", "HardSwish"]]
    assert trt.kernels[1].flops == 2 * 256 * 9 + 256 + 4 * 256
    # TFLite fuses Relu but neither the residual Add nor HardSwish
    assert len(graph_kernels(_tiny_graph(), "tflite").kernels) == 4
    # fp16 halves every byte; flops unchanged
    half = cost.with_precision("fp16")
    assert [k.bytes for k in half.kernels] == [k.bytes / 2 for k in cost.kernels]


def test_qdq_pairs_are_absorbed_into_an_int8_kernel():
    cost = graph_kernels(_tiny_graph(qdq=True), "onnxruntime")
    assert [k.ops for k in cost.kernels] == [["Conv", "Relu"], ["Conv", "Add"], ["HardSwish"]]
    k1 = cost.kernels[0]
    assert k1.precision == "int8" and cost.kernels[1].precision == "fp32"
    # int8 weights (108) + fp32 bias counted at 1 byte too (kernel precision), input read as int8, output written
    assert k1.bytes == (108 + 4) + (192 + 256)


def _hw(cal: Calibration | None = None, target: str = "onnx-fp32") -> EstimatorData:
    return EstimatorData(
        peak_gflops={"fp32": {"value": 0.01, "source": "test: 1e7 FLOP/s"}},
        memory_gbps={"value": 1e-3, "source": "test: 1e6 B/s"},
        calibrations={target: cal} if cal else {},
    )


def _cal(**kw) -> Calibration:
    base = dict(
        efficiency={"conv": 0.5, "dwconv": 0.25, "elementwise": 0.5},
        memory_efficiency=1.0,
        launch_us=10.0,
        overhead_ms=1.0,
        source="test",
        fitted="2026-11-23",
        points=1,
    )
    return Calibration(**{**base, **kw})


def test_roofline_time_by_hand():
    cost = graph_kernels(_tiny_graph(), "onnxruntime")
    est = estimate(cost, _hw(_cal()), "dev", "onnx-fp32", "fp32", "tiny")
    # per kernel: max(flops / (1e7 * eff), bytes / 1e6) seconds
    k1 = max(14080 / (1e7 * 0.5), 2240 / 1e6)  # 2.816 ms compute vs 2.24 ms memory
    k2 = max(4864 / (1e7 * 0.25), 2192 / 1e6)  # 1.9456 ms compute vs 2.192 ms memory
    k3 = max(1024 / (1e7 * 0.5), 2048 / 1e6)  # memory
    expected_ms = 1e3 * (k1 + k2 + k3) + 3 * 0.010 + 1.0
    assert est.latency_ms == pytest.approx(expected_ms, rel=1e-9)
    assert est.compute_bound_ms == pytest.approx(1e3 * k1)
    assert est.memory_bound_ms == pytest.approx(1e3 * (k2 + k3))
    assert est.kind == "estimate" and est.text.startswith("estimate: ")


def _synthetic_cost(rng, n_conv, n_mm, n_ew) -> GraphCost:
    ks = []
    for i in range(n_conv):  # compute-bound: many flops per byte
        ks.append(Kernel(f"c{i}", ["Conv"], "conv", "fp32", rng.uniform(2e6, 8e6), 100, int(rng.uniform(50, 200))))
    for i in range(n_mm):
        ks.append(Kernel(f"m{i}", ["MatMul"], "matmul", "fp32", rng.uniform(1e6, 4e6), 50, int(rng.uniform(50, 200))))
    for i in range(n_ew):  # memory-bound
        ks.append(Kernel(f"e{i}", ["Add"], "elementwise", "fp32", 1e3, 0, int(rng.uniform(2e4, 8e4))))
    return GraphCost(ks, "onnxruntime", [1, 3, 8, 8], len(ks))


def test_calibration_recovers_known_factors():
    truth = _cal(efficiency={"conv": 0.6, "matmul": 0.3, "elementwise": 0.5}, memory_efficiency=0.4)
    hw = _hw(truth)
    rng = np.random.default_rng(1)
    points = []
    for i in range(10):
        cost = _synthetic_cost(rng, *rng.integers(2, 12, 3))
        ms = estimate(cost, hw, "dev", "onnx-fp32", "fp32", "synthetic").latency_ms
        points.append(Point(f"g{i}", cost, ms))
    f = fit(points, _hw(), shrink=0.0, overhead_penalty=0.0)
    assert f.efficiency["conv"] == pytest.approx(0.6, rel=0.02)
    assert f.efficiency["matmul"] == pytest.approx(0.3, rel=0.02)
    assert f.memory_efficiency == pytest.approx(0.4, rel=0.02)
    assert f.launch_us == pytest.approx(10.0, abs=1.0)
    assert f.overhead_ms == pytest.approx(1.0, abs=0.1)
    # and held-out points are predicted almost exactly when the model is right
    assert max(r.abs_pct_error for r in leave_one_out(points, _hw(), shrink=0.0)) < 2.0


def test_estimates_cannot_be_relabelled():
    est = estimate(graph_kernels(_tiny_graph(), "onnxruntime"), _hw(_cal()), "dev", "onnx-fp32", "fp32", "tiny")
    with pytest.raises(ValueError):
        Estimate(**{**est.model_dump(), "kind": "measured"})
    with pytest.raises(ValueError):
        Estimate(**{**est.model_dump(), "label": "measured"})


def test_bench_cells_and_report_label_estimates():
    from edgeseg.bench.report import DeviceColumn, TargetResult, device_cell

    est = estimate(graph_kernels(_tiny_graph(), "onnxruntime"), _hw(_cal()), "dev", "onnx-fp32", "fp32", "tiny")
    col = DeviceColumn(device="dev", note="not measured on dev: no host configured", estimate=est)
    cell = device_cell(TargetResult(target="onnx-fp32", status="passed", device=col), "dev")
    assert "not measured" in cell and "estimate: " in cell and "calibrated on test" in cell
    assert json.loads(col.model_dump_json())["estimate"]["kind"] == "estimate"


@pytest.fixture()
def tiny_setup(tmp_path):
    """An artifact folder holding the tiny graph, and a profile folder with a calibrated device."""
    art = tmp_path / "art"
    art.mkdir()
    onnx.save(_tiny_graph(), art / "model.onnx")
    manifest = {"target": "onnx-fp32", "format": "onnx", "precision": "fp32", "file": "model.onnx"}
    manifest["input"] = {"shape": [1, 3, 8, 8]}
    manifest["sha256"] = hashlib.sha256((art / "model.onnx").read_bytes()).hexdigest()  # artifacts are verified
    (art / "manifest.json").write_text(json.dumps(manifest))
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    profile = {
        "name": "tiny-dev",
        "title": "test device",
        "kind": "raspberry-pi",
        "targets": ["onnx-fp32"],
        "runtime": "onnxruntime",
        "reach": {"method": "none", "how": "it is a test"},
        "miou_floor": 0.5,
        "estimator": _hw(
            _cal(
                validation={
                    "method": "leave-one-out",
                    "points": 5,
                    "median_abs_pct_error": 7.5,
                    "max_abs_pct_error": 12.0,
                }
            )
        ).model_dump(mode="json"),
    }
    (profiles / "tiny-dev.yaml").write_text(yaml.safe_dump(profile))
    return art, profiles


def test_estimate_command_labels_its_output(tiny_setup, tmp_path):
    art, profiles = tiny_setup
    out = tmp_path / "est.json"
    r = runner.invoke(
        app,
        ["estimate", "--device", "tiny-dev", "--artifact", str(art), "--profiles", str(profiles), "--json", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert "ESTIMATE (not measured)" in r.output and "median 7.5 %" in r.output
    data = json.loads(out.read_text())["estimate"]
    assert data["kind"] == "estimate" and math.isfinite(data["latency_ms"])


def test_estimate_without_calibration_is_a_one_line_error(tiny_setup):
    art, _ = tiny_setup
    r = runner.invoke(app, ["estimate", "--device", "raspberry-pi-5", "--artifact", str(art)])
    assert r.exit_code == 2
    assert "no estimator data" in r.output and "Traceback" not in r.output


def test_fit_latency_refuses_missing_and_foreign_inputs(tmp_path):
    r = runner.invoke(app, ["fit-latency", "--device", "jetson-nano", "--from", str(tmp_path / "nope.json")])
    assert r.exit_code == 2 and "no such file" in r.output
    r = runner.invoke(app, ["fit-latency", "--device", "pixel-8", "--from", "published"])
    assert r.exit_code == 2 and "no estimator data" in r.output


def test_shipped_calibrations_carry_source_and_validation():
    from edgeseg.bench.profiles import load_profiles

    calibrated = 0
    for p, _ in load_profiles().values():
        if p.estimator is None:
            continue
        for fact in list(p.estimator.peak_gflops.values()) + [p.estimator.memory_gbps]:
            assert len(fact.source) > 10
        for cal in p.estimator.calibrations.values():
            calibrated += 1
            assert cal.source and cal.validation is not None and cal.points >= 3
    assert calibrated >= 1


def test_dynamic_shapes_are_a_one_line_error(tmp_path):
    from edgeseg.errors import EdgesegError
    from edgeseg.estimate.graph import graph_cost

    model = _tiny_graph()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, tmp_path / "dyn.onnx")
    with pytest.raises(EdgesegError, match="static shapes"):
        graph_cost(tmp_path / "dyn.onnx", "onnxruntime")


def _bench_json(path, art, device: str, latencies: list[float]) -> None:
    from edgeseg.bench.report import (
        ArtifactInfo,
        BenchReport,
        DataInfo,
        DeviceColumn,
        DeviceInfo,
        Measurement,
        Stats,
        TargetResult,
        TimingInfo,
    )
    from edgeseg.bench.stats import from_summary

    results = []
    for ms in latencies:
        m = Measurement(machine=device, runtime="test", method="test", stats=Stats.of(from_summary(10, 2, ms, 0.1)))
        results.append(
            TargetResult(
                target="onnx-fp32",
                status="passed",
                artifact=ArtifactInfo(
                    folder=str(art), file="model.onnx", sha256="0", bytes=1, cached=True, lint_clean=True
                ),
                device=DeviceColumn(device=device, measured=m),
            )
        )
    report = BenchReport(
        edgeseg="test",
        created="2026-11-23",
        command=None,
        device=DeviceInfo(
            name=device, title="t", kind="raspberry-pi", runtime="t", reach="none", budget_ms=33.3, miou_floor=0.5
        ),
        model=None,
        data=DataInfo(path="-", split="val", images=None),
        host={},
        timing=TimingInfo(threads=1, warmup=1, min_runs=1, max_runs=1, max_seconds=1, rel_ci=0.1),
        results=results,
    )
    path.write_text(report.model_dump_json())


def test_fit_latency_from_bench_json_writes_a_loadable_profile_copy(tiny_setup, tmp_path):
    from edgeseg.bench.profiles import get_profile

    art, profiles = tiny_setup
    bench = tmp_path / "bench.json"
    _bench_json(bench, art, "tiny-dev", [5.0, 5.5, 4.8])
    out = tmp_path / "calibrated"
    r = runner.invoke(
        app,
        ["fit-latency", "--device", "tiny-dev", "--from", str(bench), "--profiles", str(profiles), "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert "leave-one-out" in r.output
    cal = get_profile("tiny-dev", out).estimator.calibrations["onnx-fp32"]
    assert cal.points == 3 and cal.validation is not None and str(bench) in cal.source
    # the same graph measured three times: the fit lands on their typical latency
    est = runner.invoke(app, ["estimate", "--device", "tiny-dev", "--artifact", str(art), "--profiles", str(out)])
    assert est.exit_code == 0 and "latency (estimate)" in est.output
    # a bench.json of another device is refused in one line
    _bench_json(bench, art, "other-dev", [5.0])
    r = runner.invoke(app, ["fit-latency", "--device", "tiny-dev", "--from", str(bench), "--profiles", str(profiles)])
    assert r.exit_code == 2 and "measured for device other-dev" in r.output


@pytest.mark.parametrize(
    "text, message",
    [
        ("devices: [\n", "is not valid YAML"),
        ("source: x\ndevices: []\n", "field 'devices'"),
        ("source: paper\ndevices:\n  jetson-agx-orin: {target: trt-fp16, dataset: cityscapes, conditions: abc}\n",
         "field 'devices.jetson-agx-orin.figures'"),
    ],
)  # fmt: skip
def test_bad_published_figures_file_is_one_line(tmp_path, text, message):
    bad = tmp_path / "figures.yaml"
    bad.write_text(text)
    args = ["fit-latency", "--device", "jetson-agx-orin", "--from", str(bad), "--out", str(tmp_path)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output


def test_estimation_graph_of_a_bilinear_head_model_ignores_the_manifest_upsampling(tmp_path):
    from edgeseg.commands import estimate as estimate_cmd
    from edgeseg.errors import EdgesegError

    path, desc = estimate_cmd.estimation_graph(
        "segformer-b0", "camvid", "onnx-fp32", (64, 64), "reference (bilinear resize)", tmp_path
    )
    assert path.is_file() and "bicubic" not in desc
    with pytest.raises(EdgesegError, match="not a multiple of 32"):
        estimate_cmd.estimation_graph("efficientvit-b0", "camvid", "onnx-fp32", "13x7", "conv", tmp_path)
