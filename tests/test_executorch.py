"""ExecuTorch backend on tiny models: export + run + parity (fp32, int8), the mixed-precision search's budget, the
Core ML and Vulkan delegates lowering and linting, residency, the ETDump profile and a corrupt .pte."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("executorch", reason="executorch is not installed: pip install 'edgeseg[executorch]'")

from edgeseg.backends import ExportJob, Int8Request, backend_for, get_target  # noqa: E402
from edgeseg.backends.executorch.export import export_executorch  # noqa: E402
from edgeseg.backends.executorch.runtime import ExecuTorchModel  # noqa: E402
from edgeseg.cli import app  # noqa: E402
from edgeseg.data.datasets import CAMVID  # noqa: E402
from edgeseg.errors import EdgesegError  # noqa: E402

SIZE = (32, 64)


class TinyAttention(torch.nn.Module):
    """conv stem, a softmax attention over the tokens, a residual add and a 1x1 head: float attention core and
    int8 convs/adds, as in edgeseg's models."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, 2, 1)
        self.qkv = torch.nn.Conv2d(8, 24, 1)
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        b, c, h, w = y.shape
        q, k, v = self.qkv(y).flatten(2).chunk(3, dim=1)
        att = torch.softmax(q.transpose(1, 2) @ k / c**0.5, dim=-1)
        return self.head((v @ att.transpose(1, 2)).reshape(b, c, h, w) + y)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return TinyAttention().eval()


def _job(tmp_path, target, module, int8=None):
    folder = tmp_path / target
    folder.mkdir()
    return ExportJob(get_target(target), module, torch.zeros(1, 3, *SIZE), folder, "logits", 18, int8)


def test_fp32_exports_runs_with_parity_and_records_residency(tiny, tmp_path):
    backend = backend_for("executorch")
    built = backend.build(_job(tmp_path, "executorch-fp32", tiny))
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        ref = tiny(x)
    out = built.runner(x)
    assert (out - ref).abs().max() < 1e-5 and (out.argmax(1) == ref.argmax(1)).all()
    assert built.lint.clean and built.lint.ops["delegate:xnnpack"] >= 1
    (res,) = built.info["residency"]
    assert res["accelerator"] == "xnnpack" and res["tool"].startswith("executorch 1.5.1")
    assert 0 < res["nodes_supported"] <= res["nodes_total"]
    assert res["nodes_total"] - res["nodes_supported"] == sum(res["unsupported_ops"].values())
    # residency(path) reads the manifest's record where one is beside the .pte, the execution plan otherwise
    pte = tmp_path / "executorch-fp32" / built.file
    (records,) = backend.residency(pte)
    assert records.partitions == res["partitions"] and records.tool.endswith("execution plan")
    (pte.parent / "manifest.json").write_text(
        json.dumps({"format": "executorch", "file": "model.pte", "residency": built.info["residency"]})
    )
    assert backend.residency(pte)[0].nodes_total == res["nodes_total"]


def test_int8_exports_runs_and_agrees_with_fp32(tiny, camvid, tmp_path):
    from edgeseg.quantize.calibration import select_calibration

    calib = select_calibration(camvid, CAMVID, size=4)
    built = backend_for("executorch").build(_job(tmp_path, "executorch-int8", tiny, Int8Request(calib, None, CAMVID)))
    x = calib.inputs(SIZE)[0]
    with torch.no_grad():
        ref = tiny(x)
    out = built.runner(x)
    snr = 10 * torch.log10((ref**2).sum() / ((out - ref) ** 2).sum())
    assert snr > 15, f"int8 SNR {snr:.1f} dB"
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.8
    assert "int8" in built.info and built.info["quantization"]["policy"]["backend"] == "executorch"
    int8_nodes = built.info["quantization"]["int8_nodes"]  # what the CLI summary lists
    assert int8_nodes.get("conv2d", 0) >= 2 and not {"to", "_assert_tensor_metadata", "reshape"} & set(int8_nodes)
    # XNNPACK runs the quantized convs: int8 kernels in the ETDump profile
    assert built.lint.clean


def test_mixed_precision_search_respects_its_budget(tiny, camvid, tmp_path):
    """The search on a tiny net whose own fp32 argmax is the label (fp32 scores 100 mIoU): every probe and the
    final program are lowered .pte files run by ExecuTorch's runtime."""
    from edgeseg.data.transforms import logits_to_source
    from edgeseg.quantize.calibration import select_calibration
    from edgeseg.quantize.search import HoldoutScorer, search_pt2e

    calib = select_calibration(camvid, CAMVID, size=2, holdout=3)
    small = [np.ascontiguousarray(im[::12, ::10][:30, :60]) for im in calib.holdout_images]
    ref = lambda x: tiny(x).detach()  # noqa: E731
    scorer = HoldoutScorer(ref, small, [np.zeros(im.shape[:2], np.uint8) for im in small], SIZE, 4, None)
    pseudo = [logits_to_source(ref(x), fit).argmax(1)[0].numpy().astype(np.uint8) for x, fit in
              zip(scorer.inputs, scorer.fits)]  # fmt: skip
    scorer = HoldoutScorer(ref, small, pseudo, SIZE, 4, None)
    assert scorer.miou_reference == pytest.approx(100.0)
    inputs = calib.inputs(SIZE)
    # all-int8 loses 0.64 points here and even all-float XNNPACK 0.08 (its fp32 kernels round differently from
    # PyTorch): 0.3 makes the search pick layers; 100 needs none
    for budget in (0.3, 100.0):
        path = tmp_path / f"int8-{budget}.pte"
        results = []

        def choose(switches, convert, budget=budget, results=results):
            realize = lambda names: ExecuTorchModel(convert(names), threads=1)  # noqa: E731
            results.append(search_pt2e(switches, scorer, budget, realize, sensitivity_images=2))
            return results[0].nodes_to_exclude

        export_executorch(tiny, torch.zeros(1, 3, *SIZE), path, "xnnpack", "int8", inputs, choose)
        (r,) = results
        assert r.drop_final <= budget + 1e-9
        assert scorer.score(ExecuTorchModel(path, threads=1))[0] == pytest.approx(r.miou_final)
        assert not list(tmp_path.glob("*.probe*"))  # probes removed
        k = len(r.float_layers)
        if k:
            assert r.probes[k - 1] > budget and all(f["why"] for f in r.float_layers)
        if budget < 1:
            assert r.probes[0] > budget and k > 0  # the search had work to do
    assert r.float_layers == [] and r.sensitivity is None  # 100 points: all-int8 is within budget


@pytest.mark.parametrize("target,delegate", [("executorch-coreml", "coreml"), ("executorch-vulkan", "vulkan")])
def test_coreml_and_vulkan_delegates_lower_and_lint(tiny, tmp_path, target, delegate):
    if delegate == "coreml":
        pytest.importorskip("coremltools", reason="the Core ML delegate lowers with coremltools")
    try:
        built = backend_for("executorch").build(_job(tmp_path, target, tiny))
    except EdgesegError as exc:
        pytest.skip(f"the executorch wheel cannot lower {delegate} here: {exc}")
    assert built.lint.ops.get(f"delegate:{delegate}", 0) >= 1
    assert built.info["residency"][0]["accelerator"] == delegate
    assert built.runner is None and "needs" in built.parity_runtime  # said, not faked
    folder = tmp_path / target
    if delegate == "coreml":
        assert "Core ML" in (folder / "README.md").read_text()
    manifest = {"format": "executorch", "target": target, "delegate": delegate, "file": built.file}
    with pytest.raises(EdgesegError, match="cannot run here"):
        backend_for("executorch").load(folder, manifest, 1)


def test_etdump_profile_times_delegated_ops(tiny, tmp_path):
    from edgeseg.artifact import LoadedArtifact
    from edgeseg.backends.executorch.profile import profile_etdump

    path = tmp_path / "m.pte"
    export_executorch(tiny, torch.zeros(1, 3, *SIZE), path, "xnnpack", "fp32")
    manifest = {"input": {"shape": [1, 3, *SIZE]}, "output": {"name": "logits"}}
    art = LoadedArtifact(path, manifest, ExecuTorchModel(path, 1), "executorch")
    prof = profile_etdump(art, 1, 3, 1)
    assert prof.runs == 3 and prof.partitions >= 1 and prof.kernels
    assert any(k.op_type.startswith("Convolution") for k in prof.kernels)
    assert 0 < prof.explained <= 1.05


def test_corrupt_pte_is_a_one_line_error(tiny, tmp_path):
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"not a program" * 10)
    r = CliRunner().invoke(app, ["lint", str(bad)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.strip().startswith("error:") and len(r.output.strip().splitlines()) == 1
    good = tmp_path / "good.pte"
    export_executorch(tiny, torch.zeros(1, 3, *SIZE), good, "xnnpack", "fp32")
    truncated = tmp_path / "truncated.pte"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(EdgesegError, match="cannot load .*truncated.pte.*re-export") as info:
        ExecuTorchModel(truncated)
    assert "\n" not in str(info.value)


RUNNER_OUTPUT = """\
I 00:00:00.010 executorch:executor_runner.cpp:200] Model loaded in 12.5 ms.
I 00:00:00.030 executorch:executor_runner.cpp:400] Iteration 1 of 4: 20.000000 ms
I 00:00:00.040 executorch:executor_runner.cpp:400] Iteration 2 of 4: 10.000000 ms
I 00:00:00.050 executorch:executor_runner.cpp:400] Iteration 3 of 4: 12.000000 ms
I 00:00:00.060 executorch:executor_runner.cpp:400] Iteration 4 of 4: 11.000000 ms
I 00:00:00.061 executorch:executor_runner.cpp:410] Model executed successfully 4 time(s) in 53.000000 ms.
"""


class FakeAdb:
    """A FAKE adb transport (no phone): answers executor_runner with a recorded log, so edgeseg's side of the adb
    path (push, command, parsing) is checked."""

    def __init__(self, runner_present=True):
        self.pushed, self.commands, self.runner_present = [], [], runner_present

    def push(self, local, remote):
        self.pushed.append((local, remote))

    def shell(self, command, timeout):
        self.commands.append(command)
        if command.startswith("test -x"):
            return (0 if self.runner_present else 1), ""
        if "executor_runner" in command:
            return 0, RUNNER_OUTPUT
        return 0, ""


def test_adb_runs_the_pte_with_executor_runner_and_shows_the_would_be_command(tmp_path):
    from edgeseg.bench.device import DeviceConnection, device_column, would_be_command
    from edgeseg.bench.profiles import get_profile
    from edgeseg.bench.stats import TimingPlan

    profile = get_profile("pixel-8")
    reach = profile.reach.model_copy(update={"serial": "R5CX1234", "cpu_mask": "f0"})
    profile = profile.model_copy(update={"reach": reach})
    plan, tgt = TimingPlan(warmup=1, min_runs=3, max_runs=3), get_target("executorch-int8")
    shown = would_be_command(profile, reach, "art dir", tgt, plan, 4)
    assert "taskset f0 /data/local/tmp/executor_runner --model_path=/data/local/tmp/edgeseg/model.pte" in shown
    assert "--cpu_threads=4" in shown
    folder = tmp_path / "art"
    folder.mkdir()
    (folder / "model.pte").write_bytes(b"fake")
    conn = DeviceConnection(profile, reach)
    conn.transport = FakeAdb()
    col = device_column(conn, folder, {"file": "model.pte", "sha256": "ab" * 32}, tgt, plan, 4, shown)
    m = col.measured
    assert m is not None and m.runtime == "ExecuTorch executor_runner"
    assert m.stats.median_ms == pytest.approx(11.0) and m.stats.n == 3  # the first execute is the warm-up
    assert conn.transport.pushed == [(folder / "model.pte", "/data/local/tmp/edgeseg/model.pte")]
    assert "--num_executions=4" in m.command
    conn.transport = FakeAdb(runner_present=False)
    col = device_column(conn, folder, {"file": "model.pte", "sha256": "ab" * 32}, tgt, plan, 4, shown)
    assert col.measured is None and "no executor_runner at /data/local/tmp/executor_runner" in col.note
    assert col.command == shown


class ConvOnly(torch.nn.Module):
    """3x3 stem, HardSwish, 1x1 head: every op runs in NHWC, so the only layout change an NCHW program needs is at
    its ends."""

    def __init__(self, channels_in=3):
        super().__init__()
        self.stem = torch.nn.Conv2d(channels_in, 8, 3, 2, 1)
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(torch.nn.functional.hardswish(self.stem(x)))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_xnnpack_programs_take_the_image_channels_last_without_a_transpose(tmp_path, precision):
    from edgeseg.artifact import LoadedArtifact
    from edgeseg.backends.executorch.profile import profile_etdump
    from edgeseg.backends.executorch.runtime import input_dim_orders

    torch.manual_seed(0)
    model, path = ConvOnly().eval(), tmp_path / "m.pte"
    calib = [torch.randn(1, 3, *SIZE) for _ in range(2)]
    info = export_executorch(model, torch.zeros(1, 3, *SIZE), path, "xnnpack", precision, calib)
    assert input_dim_orders(path.read_bytes()) == [(0, 2, 3, 1)] and info["input_dim_order"].startswith("NHWC")
    runner = ExecuTorchModel(path, 1)
    manifest = {"input": {"shape": [1, 3, *SIZE]}, "output": {"name": "logits"}}
    prof = profile_etdump(LoadedArtifact(path, manifest, runner, "executorch"), 1, 2, 1)
    # no transpose before the stem (int8: none of the quantized image); the only one left is the output's, where
    # the program returns NCHW logits (else the head's NHWC output is returned as a channels-last tensor)
    transposes = [k.op_type for k in prof.kernels if k.op_type.startswith("Transpose")]
    assert len(transposes) == (info["output_dim_order"] == "contiguous")
    x = calib[0]  # NCHW-contiguous, as every caller passes it: the runtime gives it in the program's dim order
    with torch.no_grad():
        ref = model(x)
    diff = (runner(x) - ref).abs().max().item()
    assert diff < (0.1 * ref.abs().max().item() if precision == "int8" else 1e-5)


def test_one_channel_images_and_other_delegates_stay_nchw(tmp_path):
    from edgeseg.backends.executorch.export import channels_last_input
    from edgeseg.backends.executorch.runtime import input_dim_orders

    path = tmp_path / "gray.pte"
    export_executorch(ConvOnly(channels_in=1).eval(), torch.zeros(1, 1, *SIZE), path, "xnnpack", "fp32")
    assert input_dim_orders(path.read_bytes()) == [(0, 1, 2, 3)]
    assert not channels_last_input(torch.zeros(1, 3, *SIZE), "coreml")
    assert not channels_last_input(torch.zeros(1, 3, *SIZE), "vulkan")
