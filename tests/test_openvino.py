"""OpenVINO backend on a tiny model: export + parity + lint per target, the int8 IR with a constant-first MatMul
compiles, a CPU without bf16 is refused in one line, and the int8 search respects its budget."""

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

pytest.importorskip("openvino", reason="openvino is not installed: pip install 'edgeseg[openvino]'")

from edgeseg.backends import ExportJob, Int8Request, backend_for, get_target  # noqa: E402
from edgeseg.data.transforms import auto_fit, fit_input, to_tensor  # noqa: E402
from edgeseg.errors import EdgesegError  # noqa: E402

SIZE = (32, 32)
CLASSES = 4


class Tiny(nn.Module):
    """conv -> relu -> ``U @ x`` (a constant-first MatMul, as EfficientViT's bicubic-as-matmul head) -> conv."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU())
        self.register_buffer("up", torch.rand(SIZE[0], SIZE[0] // 2))
        self.head = nn.Conv2d(8, CLASSES, 1)

    def forward(self, x):
        y = self.stem(x)
        n, c, h, w = y.shape
        y = torch.matmul(self.up, y.reshape(n * c, h, w))  # (H', H) @ (N*C, H, W), as the head's separable resize
        return self.head(y.reshape(n, c, -1, w))


@dataclass
class Calib:
    """What an ``Int8Request`` reads of a calibration set: its images as inputs, the held-out slice, the method."""

    images: list
    holdout_images: list
    holdout_labels: list = field(default_factory=list)
    method: str = "minmax"

    def inputs(self, size):
        return [fit_input(to_tensor(im), auto_fit(im.shape[:2], size)) for im in self.images]


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(n)]


def _job(tmp_path, target, int8=None):
    module = Tiny().eval()
    folder = tmp_path / target
    folder.mkdir()
    return ExportJob(get_target(target), module, torch.zeros(1, 3, *SIZE), folder, "logits", 18, int8)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_export_parity_and_lint_per_float_target(tmp_path, precision):
    from edgeseg.backends.openvino.runtime import cpu_capabilities

    if precision == "bf16" and "BF16" not in cpu_capabilities():
        pytest.skip("this CPU has no bf16 path (the refusal is tested below)")
    job = _job(tmp_path, f"openvino-{precision}")
    built = backend_for("openvino").build(job)
    assert built.lint.clean, built.lint.findings
    assert (job.folder / "model.xml").is_file() and (job.folder / "model.bin").is_file()
    hint = {"fp32": "f32", "fp16": "f32", "bf16": "bf16"}[precision]
    assert built.info["openvino"]["runtime"]["INFERENCE_PRECISION_HINT"] == hint
    assert built.info["openvino"]["effective"]["INFERENCE_PRECISION_HINT"] == {"f32": "f32", "bf16": "bf16"}[hint]
    assert built.info["compress_to_fp16"] is (precision == "fp16")
    assert built.info["residency"][0]["accelerator"] == "openvino-cpu"
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        ref = job.module(x)
    out = built.runner(x)
    tol = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 0.2}[precision]
    assert out.shape == ref.shape and float((out - ref).abs().max()) <= tol * max(1.0, float(ref.abs().max()))
    assert float((out.argmax(1) == ref.argmax(1)).float().mean()) >= 0.95


def test_int8_ir_with_a_constant_first_matmul_compiles(tmp_path):
    import nncf
    import openvino as ov

    from edgeseg.backends.openvino.int8 import constant_first_matmuls, quantize
    from edgeseg.backends.openvino.lint import lint_openvino
    from edgeseg.backends.openvino.runtime import OpenVinoModel
    from edgeseg.quantize.policy import Int8Policy

    model = ov.convert_model(Tiny().eval(), example_input=torch.zeros(1, 3, *SIZE), input=[1, 3, *SIZE])
    assert len(constant_first_matmuls(model)) == 1
    # a policy that quantizes MatMul too: the constant-first one must still stay float
    policy = Int8Policy("openvino", ("Conv", "MatMul"), False, "uint8")
    calib = [x.numpy() for x in Calib(_images(4, 0), []).inputs(SIZE)]
    q = quantize(model, calib, policy, "minmax")
    assert sum(op.get_type_name() == "FakeQuantize" for op in q.get_ordered_ops()) > 0  # it is an int8 IR
    assert constant_first_matmuls(q, quantized_only=True) == []
    # NNCF left alone quantizes the constant as a weight (the IR the CPU plugin refuses): lint names it
    raw = nncf.quantize(model.clone(), nncf.Dataset(calib), subset_size=len(calib))
    assert constant_first_matmuls(raw, quantized_only=True) == constant_first_matmuls(model)
    assert "constant-first-matmul-int8" in {f.rule for f in lint_openvino(raw).findings}
    path = tmp_path / "model.xml"
    ov.save_model(q, str(path))
    report = lint_openvino(path)
    assert report.clean, report.findings
    out = OpenVinoModel(path, "int8")(torch.randn(1, 3, *SIZE))
    assert out.shape == (1, CLASSES, SIZE[0], SIZE[1] // 2) and torch.isfinite(out).all()


def test_a_cpu_without_bf16_is_refused_in_one_line(tmp_path, monkeypatch):
    from edgeseg.backends.openvino import runtime

    monkeypatch.setattr(runtime, "cpu_capabilities", lambda: ["FP32", "INT8", "EXPORT_IMPORT"])
    with pytest.raises(EdgesegError) as exc:
        backend_for("openvino").build(_job(tmp_path, "openvino-bf16"))
    message = str(exc.value)
    assert "\n" not in message and "openvino-bf16 needs a CPU with bf16" in message and "openvino-fp32" in message
    assert not (tmp_path / "openvino-bf16" / "model.xml").exists()


@pytest.mark.parametrize("budget", [0.0, 100.0])
def test_int8_search_respects_its_budget(tmp_path, budget):
    ref = Tiny().eval()
    holdout = _images(4, 1)
    with torch.no_grad():  # labels the fp32 model gets right, so any int8 error costs mIoU
        labels = [ref(fit_input(to_tensor(im), auto_fit(SIZE, SIZE))).argmax(1)[0] for im in holdout]
    labels = [torch.nn.functional.interpolate(lb[None, None].float(), size=SIZE)[0, 0].long().numpy() for lb in labels]
    calib = Calib(_images(8, 0), holdout, [lb.astype(np.uint8) for lb in labels])
    spec = SimpleNamespace(num_classes=CLASSES, ignore_index=255)
    built = backend_for("openvino").build(_job(tmp_path, "openvino-int8", Int8Request(calib, budget, spec)))
    q = built.info["quantization"]
    ours, theirs = q["mixed_precision"], q["accuracy_control"]
    assert ours["budget"] == budget and ours["drop_final"] <= budget + 1e-9 or not ours["within_budget"]
    if budget == 100.0:
        assert ours["float_layers"] == [] and ours["within_budget"]  # everything the policy allows is int8
    else:
        assert ours["drop_final"] <= budget or len(ours["float_layers"]) == 3  # or every layer float, reported
        assert ours["probes"]["0"] <= budget or len(ours["sensitivity"]) == 3  # over budget: every layer ranked
    assert q["kept"] in ("edgeseg search", "nncf quantize_with_accuracy_control")
    kept = ours if q["kept"] == "edgeseg search" else theirs
    assert q["int8_layers"] == kept["int8_layers"] == sum(q["int8_nodes"].values())
    assert built.lint.clean, built.lint.findings


BENCHMARK_APP_OUTPUT = """[Step 1/11] Parsing and validating input arguments
[ INFO ] OpenVINO:
[ INFO ] Build ................................. 2026.4.1-20000-abcdef
[Step 11/11] Dumping statistics report
[ INFO ] Execution Devices: ['NPU']
[ INFO ] Count:            1203 iterations
[ INFO ] Duration:         10006.12 ms
[ INFO ] Latency:
[ INFO ]    Median:        8.12 ms
[ INFO ]    Average:       8.31 ms
[ INFO ]    Min:           7.90 ms
[ INFO ]    Max:           14.02 ms
[ INFO ] Throughput:   120.22 FPS
"""


def test_benchmark_app_command_is_quoted_and_its_summary_parsed():
    from edgeseg.backends.openvino.benchmark_app import benchmark_app_command, parse_benchmark_app

    cmd = benchmark_app_command("/opt/intel/my tools/benchmark_app", "model.xml", "CPU", 4, "bf16")
    assert cmd.startswith("'/opt/intel/my tools/benchmark_app' -m model.xml -d CPU -hint latency")
    assert "-nthreads 4" in cmd and "-infer_precision bf16" in cmd and "-pin NO" in cmd
    assert "-nthreads" not in benchmark_app_command("benchmark_app", "model.xml", "NPU", 4, None)
    parsed = parse_benchmark_app(BENCHMARK_APP_OUTPUT)
    assert parsed["median_ms"] == 8.12 and parsed["count"] == 1203 and parsed["openvino"] == "2026.4.1-20000-abcdef"
    with pytest.raises(ValueError, match="no benchmark_app latency summary"):
        parse_benchmark_app("[ ERROR ] Device NPU not found")


def test_intel_profiles_show_the_benchmark_app_command_when_unreachable():
    from edgeseg.bench.device import benchmark_app_on_device
    from edgeseg.bench.profiles import get_profile

    npu = get_profile("core-ultra-npu")
    assert not npu.reachable() and npu.reach.openvino_device == "NPU"
    cmd = benchmark_app_on_device(npu.reach, get_target("openvino-int8"), npu.threads)
    assert cmd == "benchmark_app -m model.xml -d NPU -hint latency -nstreams 1 -t 10"
    nuc = get_profile("intel-n100-nuc")
    assert "-infer_precision f32" in benchmark_app_on_device(nuc.reach, get_target("openvino-fp32"), nuc.threads)


def test_a_refloated_layer_runs_its_fp32_weights_without_fake_quantize():
    import openvino as ov

    from edgeseg.backends.openvino.int8 import OPENVINO_INT8_POLICY, layers, quantize, refloat

    model = ov.convert_model(Tiny().eval(), example_input=torch.zeros(1, 3, *SIZE), input=[1, 3, *SIZE])
    q = quantize(model, [x.numpy() for x in Calib(_images(4, 0), []).inputs(SIZE)], OPENVINO_INT8_POLICY, "minmax")
    first = layers(model)[0][0]
    r = refloat(q, model, [first])
    (conv,) = [op for op in r.get_ordered_ops() if op.get_friendly_name() == first]
    assert conv.input_value(0).get_node().get_type_name() != "FakeQuantize"
    assert conv.input_value(1).get_node().get_type_name() == "Constant"
    assert conv.input_value(1).get_node().get_element_type().get_type_name() == "f32"
    (orig,) = [op for op in model.get_ordered_ops() if op.get_friendly_name() == first]
    assert np.array_equal(conv.input_value(1).get_node().get_data(), orig.input_value(1).get_node().get_data())
    assert refloat(q, model, []) is q


def test_onnx_int8_says_it_is_slower_than_fp32_on_x86_in_targets_and_the_bench_report():
    from edgeseg.bench.report import _target_caveat

    assert "slower than fp32 on x86 CPU EP" in get_target("onnx-int8").runtime
    assert _target_caveat("onnx-int8") == " (target note: int8 QDQ: for ARM/NPU EPs; slower than fp32 on x86 CPU EP)"
    assert _target_caveat("openvino-bf16") == "" and _target_caveat("onnx-fp32") == ""
