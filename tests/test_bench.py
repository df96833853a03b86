"""Bench on device profiles: profile validation, latency statistics on a fake clock, the SSH path against a real
OpenSSH server on 127.0.0.1, the adb path with a FAKE adb transport (no Android device exists here), the bench
report's JSON schema, and `edgeseg bench` for a device that is not reachable."""

import getpass
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeseg.bench import adb, stats
from edgeseg.bench.device import DeviceConnection, RemoteOptions, device_column, would_be_command
from edgeseg.bench.profiles import get_profile, load_profile, load_profiles
from edgeseg.bench.report import SCHEMA_VERSION, BenchReport, pareto_front
from edgeseg.cli import app
from edgeseg.commands import export as export_cmd
from edgeseg.errors import EdgesegError
from edgeseg.paths import PACKAGE_DIR, SAMPLE_DATA

runner = CliRunner()
SIZE = "96x128"  # smallest stride-32 size that keeps exports and timing to seconds
FAST_TIMING = ["--warmup", "1", "--runs", "3", "--max-runs", "3", "--max-seconds", "5", "--examples", "1"]


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result, result.output


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


GOOD_PROFILE = """\
name: {name}
title: A test board
aliases: [{alias}]
kind: raspberry-pi
targets: [onnx-fp32]
runtime: onnxruntime via edgeseg's runner
reach:
  method: ssh
  python: {python}
  workdir: {workdir}
threads: 1
budget_ms: 100000
miou_floor: 0.0
hardware:
  - fact: CPU
    value: whatever this machine is
    source: the test itself
"""


def good_profile(name="test-board", alias="tb", python=sys.executable, workdir="/tmp/edgeseg-bench") -> str:
    return GOOD_PROFILE.format(name=name, alias=alias, python=python, workdir=workdir)


# ---------------------------------------------------------------- device profiles


def test_shipped_profiles_aliases_and_preferred_targets():
    profiles = load_profiles()
    for name in ("host", "jetson-agx-orin", "jetson-orin-nano", "iphone-15-pro", "galaxy-s24", "pixel-8"):
        assert name in profiles
    assert "raspberry-pi-5" in profiles
    assert get_profile("jetson-orin").name == "jetson-agx-orin"
    assert get_profile("android").name == "galaxy-s24"
    assert get_profile("jetson-orin").targets[:2] == ["trt-fp16", "trt-int8"]
    assert get_profile("iphone-15-pro").targets[:2] == ["coreml-fp16", "coreml-int8"]
    assert get_profile("android").targets[:2] == ["tflite-int8", "tflite-fp16"]
    assert get_profile("raspberry-pi-5").targets[:2] == ["tflite-int8", "onnx-int8"]
    assert get_profile("host").reach.method == "local" and get_profile("host").reachable()
    for name in ("jetson-agx-orin", "galaxy-s24", "raspberry-pi-5"):
        assert not get_profile(name).reachable(), f"{name} ships without a host/serial: nothing is reachable"
    for p, _ in profiles.values():
        assert p.budget_ms == pytest.approx(33.3)
        if p.estimator is not None:  # spec-sheet facts carry their source; fitted factors say what they were fit on
            assert p.estimator.memory_gbps.source and all(v.source for v in p.estimator.peak_gflops.values())
            assert all(c.source and c.points >= 1 for c in p.estimator.calibrations.values())
        assert all(f.source for f in p.hardware)


def test_unknown_device_suggests_the_closest_name():
    with pytest.raises(EdgesegError, match=r"unknown device 'jetson-orn'.*Did you mean 'jetson-orin'"):
        get_profile("jetson-orn")


@pytest.mark.parametrize(
    "edit, field, words",
    [
        (
            lambda t: t.replace("targets: [onnx-fp32]", "targets: [trt-fp99]"),
            "targets",
            "item 0: unknown target 'trt-fp99' (valid: onnx-fp32,",
        ),
        (lambda t: t.replace("budget_ms: 100000", "budget_ms: -5"), "budget_ms", "greater than 0"),
        (lambda t: t.replace("miou_floor: 0.0\n", ""), "miou_floor", "Field required"),
        (lambda t: t.replace("method: ssh", "method: telnet"), "reach.method", "'local', 'ssh', 'adb' or 'none'"),
        (lambda t: t + "latency_ms: 3.0\n", "latency_ms", "Extra inputs are not permitted"),
        (lambda t: t.replace("    source: the test itself\n", ""), "hardware.0.source", "Field required"),
    ],
)
def test_bad_profile_names_file_and_field(tmp_path, edit, field, words):
    path = write(tmp_path / "test-board.yaml", edit(good_profile()))
    with pytest.raises(EdgesegError) as err:
        load_profile(path)
    text = str(err.value)
    assert str(path) in text and f"field '{field}'" in text and words in text, text
    assert "\n" not in text


def test_bad_yaml_and_misnamed_file(tmp_path):
    broken = write(tmp_path / "a" / "test-board.yaml", "name: test-board\ntargets: [onnx-fp32\n")
    with pytest.raises(EdgesegError, match=r"test-board.yaml: line \d+ is not valid YAML"):
        load_profile(broken)
    misnamed = write(tmp_path / "b" / "other.yaml", good_profile())
    with pytest.raises(EdgesegError, match=r"other.yaml: field 'name' is 'test-board'; name the file test-board.yaml"):
        load_profile(misnamed)


def test_user_profiles_extend_and_override(tmp_path):
    write(tmp_path / "test-board.yaml", good_profile())
    host = load_profile(Path(PACKAGE_DIR / "assets" / "devices" / "host.yaml"))
    write(tmp_path / "host.yaml", (PACKAGE_DIR / "assets/devices/host.yaml").read_text().replace("0.60", "0.5"))
    assert get_profile("tb", tmp_path).name == "test-board"
    assert get_profile("host", tmp_path).miou_floor == 0.5 != host.miou_floor
    with pytest.raises(EdgesegError, match="unknown device 'tb'"):
        get_profile("tb")  # only with --profiles
    result, text = run("devices", "--profiles", tmp_path, "--facts")
    assert result.exit_code == 0, text
    assert "test-board" in text and "tb" in text and "source: the test itself" in text


def test_alias_clash_and_cli_errors_are_one_line(tmp_path):
    write(tmp_path / "test-board.yaml", good_profile(alias="jetson-orin"))
    with pytest.raises(EdgesegError, match="alias 'jetson-orin' is also claimed by .*jetson-agx-orin.yaml"):
        load_profiles(tmp_path)
    result, text = run("devices", "--profiles", tmp_path)
    assert result.exit_code == 2 and text.startswith("error: ") and text.strip().count("\n") == 0, text
    assert "test-board.yaml" in text
    result, text = run("devices", "--profiles", tmp_path / "missing")
    assert result.exit_code == 2 and "not a folder" in text, text


# ---------------------------------------------------------------- statistics


class FakeClock:
    """A clock that only moves when the timed function runs: each call takes the next duration (ms) given."""

    def __init__(self, durations_ms):
        self.now = 0.0
        self.durations = list(durations_ms)
        self.calls = 0

    def timer(self) -> float:
        return self.now

    def fn(self):
        self.now += self.durations[self.calls] / 1000.0
        self.calls += 1


def test_statistics_on_a_fake_timer_exclude_the_warmup():
    timed = [float(x) for x in range(1, 11)]  # 1..10 ms, shuffled below
    order = [7, 2, 10, 1, 5, 9, 3, 8, 4, 6]
    clock = FakeClock([500.0] * 3 + [timed[i - 1] for i in order])
    plan = stats.TimingPlan(warmup=3, min_runs=10, max_runs=10, max_seconds=60, rel_ci=0.0)
    t = stats.measure(clock.fn, plan, timer=clock.timer)
    assert clock.calls == 13
    assert t.samples_ms == pytest.approx([float(i) for i in order])  # the 500 ms warm-up calls are not samples
    s = t.stats
    assert (s.n, s.warmup) == (10, 3)
    assert s.median_ms == pytest.approx(5.5)
    assert s.mean_ms == pytest.approx(5.5)
    assert s.std_ms == pytest.approx(np.sqrt(sum((x - 5.5) ** 2 for x in timed) / 9))  # sample std (ddof 1)
    assert s.p90_ms == pytest.approx(9.1)  # linear interpolation between order statistics
    assert s.p99_ms == pytest.approx(9.91)
    assert (s.min_ms, s.max_ms) == (pytest.approx(1.0), pytest.approx(10.0))
    assert s.fps == pytest.approx(1000 / 5.5)
    assert s.median_ci95_ms == pytest.approx((1.0, 10.0))  # ranks 5 -+ 1.96 sqrt(10) / 2 cover all 10 samples
    assert t.stop == "max-runs"


def test_timing_stops_when_stable_or_out_of_time():
    steady = FakeClock([4.0] * 100)
    t = stats.measure(steady.fn, stats.TimingPlan(warmup=0, min_runs=20, max_runs=100), timer=steady.timer)
    assert (t.stop, t.stats.n, t.stats.std_ms) == ("stable", 20, pytest.approx(0.0, abs=1e-9))
    noisy = FakeClock([1.0, 100.0] * 200)
    plan = stats.TimingPlan(warmup=0, min_runs=5, max_runs=400, max_seconds=1.0)
    t = stats.measure(noisy.fn, plan, timer=noisy.timer)
    assert t.stop == "max-seconds" and 5 <= t.stats.n < 400
    assert sum(t.samples_ms) / 1000 == pytest.approx(noisy.now)
    with pytest.raises(ValueError):
        stats.TimingPlan(warmup=0, min_runs=10, max_runs=5)


def test_interleaved_timer_rotates_the_first_call():
    """The one round-robin timer (check's latency ratio, benchmarks' time_interleaved): warm-up passes untimed,
    then every call once per pass, the first one rotating so none always follows another."""
    now, log = [0.0], []

    def call(name):
        def run():
            log.append(name)
            now[0] += {"a": 0.001, "b": 0.002, "c": 0.004}[name]

        return run

    (samples,) = stats.interleave([call("a"), call("b"), call("c")], runs=3, warmup=2, timer=lambda: now[0])
    assert log == list("abc" * 2) + list("abcbcacab")
    assert samples == [pytest.approx([1.0] * 3), pytest.approx([2.0] * 3), pytest.approx([4.0] * 3)]
    with pytest.raises(ValueError):
        stats.interleave([call("a")], runs=0, warmup=0)


def test_median_interval_and_reported_summaries():
    a = sorted(np.random.default_rng(0).normal(10, 1, 400))
    lo, hi = stats.median_ci95(a)
    assert lo < float(np.median(a)) < hi and hi - lo < 0.5
    s = stats.from_summary(n=50, warmup=5, mean_ms=8.0, std_ms=None)  # a tool that prints no median
    assert s.median_ms is None and s.fps == pytest.approx(125.0)
    assert pareto_front([(10, 60), (5, 50), (20, 70), (12, 55)]) == [1, 0, 2]


# ---------------------------------------------------------------- SSH against a real OpenSSH server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """sshd on 127.0.0.1 (a free high port) with a generated host key; this user logs in with a generated client key.
    Only key authentication; known_hosts holds the generated host key, so nothing is ever accepted on first use."""
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd_bin).is_file() or not shutil.which("ssh-keygen"):
        pytest.skip("OpenSSH server not installed (apt-get install openssh-server)")
    d = tmp_path_factory.mktemp("sshd")
    host_pub = _keygen(d / "host_key")
    _keygen(d / "client_key")
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = _free_port()
    config = write(
        d / "sshd_config",
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"StrictModes no\nPidFile {d / 'sshd.pid'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n",
    )
    # sshd started by root needs its privilege-separation directory, which Debian's service unit creates at boot
    privsep = Path("/run/sshd")
    if getpass.getuser() == "root" and not privsep.is_dir():
        try:
            privsep.mkdir(mode=0o755, parents=True)
        except OSError as exc:
            pytest.skip(f"sshd cannot start: cannot create {privsep} ({exc.strerror})")
    log = open(d / "sshd.log", "w")  # noqa: SIM115 (kept open while sshd runs)
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while "Server listening" not in (d / "sshd.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip(f"sshd cannot start here: {(d / 'sshd.log').read_text().strip()[-300:]}")
        time.sleep(0.05)
    known_hosts = write(d / "known_hosts", f"[127.0.0.1]:{port} {host_pub}\n")
    _keygen(d / "other_host_key")
    other = write(d / "other_known_hosts", f"[127.0.0.1]:{port} {(d / 'other_host_key.pub').read_text()}")
    yield {
        "host": f"{getpass.getuser()}@127.0.0.1",
        "port": port,
        "known_hosts": known_hosts,
        "wrong_known_hosts": other,
        "identity": d / "client_key",
        "workdir": d / "remote",
    }
    proc.terminate()
    proc.wait(10)
    log.close()


def tiny_onnx(path: Path) -> Path:
    """A 1x3x16x16 -> 1x4x16x16 convolution: the smallest model edgeseg's runner times like a real one."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["image", "w"], ["logits"], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 16, 16])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def ssh_target(sshd, known_hosts=None):
    from edgeseg.bench.ssh import SshTarget

    return SshTarget(
        sshd["host"], sshd["port"], known_hosts or sshd["known_hosts"], sshd["identity"], str(sshd["workdir"])
    )


def test_ssh_runner_on_a_local_sshd(sshd, tmp_path):
    from edgeseg.bench.ssh import SshSession, bench_with_runner, device_state

    model = tiny_onnx(tmp_path / "model.onnx")
    with SshSession(ssh_target(sshd)) as session:
        state = device_state(session)
        r = bench_with_runner(session, model, "tiny-1234", sys.executable, warmup=2, runs=7, threads=1)
    copied = sshd["workdir"] / "tiny-1234" / "model.onnx"
    assert copied.read_bytes() == model.read_bytes()  # the artifact travelled over SFTP
    assert (sshd["workdir"] / "tiny-1234" / "remote_runner.py").is_file()
    assert r["runtime"].startswith("onnxruntime") and r["threads"] == 1
    assert r["stats"].n == 7 and r["stats"].warmup == 2 and len(r["samples_ms"]) == 7
    assert all(x > 0 for x in r["samples_ms"]) and r["stats"].median_ms > 0
    assert r["remote_machine"]["python"] == sys.version.split()[0]
    assert "remote_runner.py model.onnx --warmup 2 --runs 7 --threads 1" in r["command"]
    assert state["kernel"] and state["loadavg"]


def test_ssh_refuses_an_unknown_host_key(sshd, tmp_path):
    from edgeseg.bench.ssh import SshSession

    with pytest.raises(EdgesegError, match=r"host key of 127.0.0.1:\d+ is not trusted .*never accepts unknown keys"):
        with SshSession(ssh_target(sshd, sshd["wrong_known_hosts"])):
            pass
    empty = write(tmp_path / "known_hosts", "")
    with pytest.raises(EdgesegError, match="is not trusted"):
        with SshSession(ssh_target(sshd, empty)):
            pass
    with pytest.raises(EdgesegError, match=r"no known_hosts file at .*ssh-keyscan -p \d+ 127.0.0.1"):
        with SshSession(ssh_target(sshd, tmp_path / "absent")):
            pass
    assert not (sshd["workdir"] / "never").exists()


# ---------------------------------------------------------------- adb with a FAKE transport (no Android device here)

BENCHMARK_MODEL_OUTPUT = """\
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/edgeseg/model.tflite]
INFO: Use xnnpack: [1]
INFO: Loaded model /data/local/tmp/edgeseg/model.tflite
INFO: The input model file size (MB): 1.10
INFO: Initialized session in 45.2ms.
INFO: Running benchmark for at least 10 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=56 first=12110 curr=8790 min=8701 max=12110 avg=8950.4 std=512
INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=120 first=8850 curr=8800 min=8620 max=9910 avg=8841.7 std=201
INFO: Inference timings in us: Init: 45210, First inference: 12110, Warmup (avg): 8950.4, Inference (avg): 8841.7
"""


class FakeAdb:
    """A FAKE adb transport: records pushes and shell commands and answers like a phone would. It checks edgeseg's
    side of the adb path (staging, device state, the benchmark_model command, parsing); no phone is involved."""

    def __init__(self, output=BENCHMARK_MODEL_OUTPUT, rc=0):
        self.pushed, self.commands, self.output, self.rc = [], [], output, rc

    def push(self, local, remote):
        self.pushed.append((Path(local), remote))

    def shell(self, command, timeout):
        self.commands.append(command)
        if command.startswith("getprop ro.product.model"):
            return 0, "SM-S921B\n"
        if command.startswith("getprop"):
            return 0, "\n"
        if "scaling_governor" in command:
            return 0, "walt\nwalt\nwalt\n"
        if "benchmark_model" in command:
            return self.rc, self.output
        return 0, ""


def test_adb_path_with_a_fake_transport(tmp_path):
    model = write(tmp_path / "model.tflite", "not a real model: the fake transport never runs it")
    fake = FakeAdb()
    r = adb.bench_over_adb(fake, model, "/data/local/tmp/benchmark_model", 4, "xnnpack", 10, 120, cpu_mask="f0")
    assert fake.pushed == [(model, "/data/local/tmp/edgeseg/model.tflite")]
    cmd = fake.commands[-1]
    assert cmd == r["command"]
    assert cmd.startswith("taskset f0 /data/local/tmp/benchmark_model --graph=/data/local/tmp/edgeseg/model.tflite")
    for flag in ("--num_threads=4", "--use_xnnpack=true", "--warmup_runs=10", "--num_runs=120"):
        assert flag in cmd
    s = r["stats"]
    assert (s.n, s.warmup) == (120, 56)
    assert s.mean_ms == pytest.approx(8.8417) and s.std_ms == pytest.approx(0.201)
    assert (s.min_ms, s.max_ms) == (pytest.approx(8.62), pytest.approx(9.91))
    assert s.median_ms is None and s.p90_ms is None  # this build prints no median: none is invented
    assert r["init_ms"] == pytest.approx(45.21) and r["first_inference_ms"] == pytest.approx(12.11)
    assert r["device_state"] == {"ro.product.model": "SM-S921B", "cpu_governors": "walt"}
    with pytest.raises(RuntimeError, match=r"benchmark_model \(exit 1\): no benchmark_model timings"):
        adb.bench_over_adb(
            FakeAdb("ERROR: Could not open model", 1), model, "/data/local/tmp/benchmark_model", 4, "gpu", 1, 5
        )


def test_device_column_over_a_fake_adb(tmp_path, monkeypatch):
    """The bench's adb branch end to end with the FAKE transport in place of adbutils (no Android device here)."""
    from edgeseg.backends import get_target

    fake = FakeAdb()
    monkeypatch.setattr(adb, "AdbutilsTransport", lambda serial: fake)
    profile = get_profile("android")
    reach = RemoteOptions(serial="R5CX1234").apply(profile.reach)
    profile = profile.model_copy(update={"reach": reach})
    folder = tmp_path / "efficientvit-b0-camvid-tflite-int8-96x128"
    write(folder / "model.tflite", "fake")
    conn = DeviceConnection(profile, reach)
    plan = stats.TimingPlan(warmup=2, min_runs=5, max_runs=9)
    manifest = {"file": "model.tflite", "sha256": "ab" * 32}
    col = device_column(conn, folder, manifest, get_target("tflite-int8"), plan, 4, "would-be")
    m = col.measured
    assert m is not None and col.device == "galaxy-s24"
    assert m.machine == "galaxy-s24 (adb R5CX1234)" and m.runtime == "benchmark_model (xnnpack)"
    assert m.stats.mean_ms == pytest.approx(8.8417) and m.stats.median_ms is None
    assert "--num_runs=9" in m.command and "taskset f0" in m.command
    onnx = device_column(conn, folder, manifest, get_target("onnx-fp32"), plan, 4, "would-be")
    assert onnx.measured is None and "runs .tflite only" in onnx.note


def test_adbutils_missing_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "adbutils", None)  # as if the bench extra were not installed
    with pytest.raises(EdgesegError, match=r"needs adbutils: pip install 'edgeseg\[bench\]'"):
        adb.AdbutilsTransport("R5CX1234")


# ---------------------------------------------------------------- bench end to end and the report schema

# The bench.json contract, object by object. Renaming, adding or removing a key breaks readers: bump
# report.SCHEMA_VERSION and update this table in the same change.
BENCH_JSON_V5 = {
    "BenchReport": {"schema_version", "edgeseg", "created", "command", "device", "model", "data", "host", "timing",
                    "results", "recommendation", "warnings"},
    "DeviceInfo": {"name", "title", "kind", "runtime", "reach", "budget_ms", "miou_floor"},
    "ModelInfo": {"name", "dataset", "weights", "classes", "palette"},
    "DataInfo": {"path", "split", "images"},
    "TimingInfo": {"threads", "warmup", "min_runs", "max_runs", "max_seconds", "rel_ci"},
    "TargetResult": {"target", "model", "size", "status", "reasons", "artifact", "parity", "miou", "miou_images",
                     "host", "device", "accuracy", "residency"},
    "ArtifactInfo": {"folder", "file", "sha256", "bytes", "cached", "lint_clean", "weights_sha256", "runtime", "input"},
    "Accuracy": {"images", "resamples", "miou_ci95", "per_class", "boundary_iou", "boundary_iou_ci95",
                 "boundary_dilation", "vs_reference", "per_image"},
    "ClassIoU": {"iou", "ci95", "delta"},
    "Comparison": {"against", "images", "difference", "ci95", "verdict", "margin", "boundary_difference"},
    "PerImage": {"names", "iou_inter", "iou_union", "boundary_inter", "boundary_union"},
    "Recommendation": {"target", "text", "ties", "budget_points", "reference", "considered"},
    "ParityInfo": {"images", "argmax_agreement", "max_abs_diff", "snr_db", "runtime"},
    "Measurement": {"kind", "machine", "runtime", "method", "stats", "secondary", "stop", "state", "command"},
    "DeviceColumn": {"device", "measured", "note", "command", "estimate"},
    "Stats": {"n", "warmup", "median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms",
              "median_ci95_ms", "fps"},
    "Estimate": {"kind", "label", "device", "target", "precision", "latency_ms", "compute_bound_ms",
                 "memory_bound_ms", "launch_ms", "overhead_ms", "by_class_ms", "gflops", "mbytes", "kernels",
                 "graph", "calibrated_target", "calibration_source", "validation", "notes"},
    "Validation": {"method", "points", "median_abs_pct_error", "max_abs_pct_error"},
}  # fmt: skip


def test_bench_json_schema_is_pinned():
    schema = BenchReport.model_json_schema()
    objects = {"BenchReport": schema, **schema["$defs"]}
    assert {k: set(v["properties"]) for k, v in objects.items()} == BENCH_JSON_V5, (
        "bench.json keys changed: bump edgeseg.bench.report.SCHEMA_VERSION and update BENCH_JSON_V5"
    )
    assert SCHEMA_VERSION == 5 and schema["properties"]["schema_version"]["enum"] == [3, 4, 5]  # v3, v4 still read
    # every key is always written (null where unknown), so readers can rely on them
    assert set(schema["required"]) >= BENCH_JSON_V5["BenchReport"] - {"schema_version", "recommendation", "warnings"}
    assert set(objects["Stats"]["required"]) == BENCH_JSON_V5["Stats"]


def check_bench_json(path: Path) -> dict:
    """A written bench.json parses back into the schema and has every pinned key at each level."""
    doc = json.loads(path.read_text())
    BenchReport.model_validate(doc)
    assert doc["schema_version"] == 5
    assert set(doc) == BENCH_JSON_V5["BenchReport"]
    for r in doc["results"]:
        assert set(r) == BENCH_JSON_V5["TargetResult"]
        assert set(r["device"]) == BENCH_JSON_V5["DeviceColumn"]
        if r["host"]:
            assert set(r["host"]) == BENCH_JSON_V5["Measurement"]
            assert set(r["host"]["stats"]) == BENCH_JSON_V5["Stats"]
    return doc


@pytest.fixture(scope="module")
def b0_onnx(random_b0_weights, tmp_path_factory):
    """An onnx-fp32 artifact of an untrained B0 at 96x128 (random weights: mIoU is near zero, timing is real)."""
    out = tmp_path_factory.mktemp("artifacts")
    m = export_cmd.export("efficientvit-b0", "camvid", random_b0_weights, "onnx-fp32", SIZE, out, parity_images=2)
    return Path(m["folder"])


def test_bench_unreachable_device_shows_host_figures(b0_onnx, tmp_path):
    rep = tmp_path / "report"
    result, text = run(
        "bench", "--device", "jetson-orin", "--artifact", b0_onnx, "--data", SAMPLE_DATA, "--limit", "2",
        "--report", rep, *FAST_TIMING,
    )  # fmt: skip
    assert result.exit_code == 0, text
    flat = " ".join(text.split())
    assert "not measured on jetson-agx-orin: no host configured" in flat
    assert f"would run: edgeseg bench --device jetson-agx-orin --artifact {b0_onnx} --host USER@HOST" in flat
    assert "remote_runner.py model.onnx" in flat
    doc = check_bench_json(rep / "bench.json")
    (r,) = doc["results"]
    assert r["target"] == "onnx-fp32" and r["miou"] is not None and r["miou_images"] == 2
    # judged by the gate registry (edgeseg.gates), as check judges: untrained numbers miss the profile's floor
    assert r["status"] == "failed_check" and f"miou floor: mIoU {100 * r['miou']:.2f} % < 60.00 %" in r["reasons"]
    assert r["host"]["kind"] == "measured" and r["host"]["stats"]["n"] == 3 and r["host"]["stats"]["warmup"] == 1
    assert r["host"]["runtime"].startswith("onnxruntime")
    assert r["device"]["measured"] is None and r["device"]["estimate"] is None
    assert r["device"]["note"].startswith("not measured on jetson-agx-orin: no host configured")
    md = (rep / "bench.md").read_text()
    assert "| onnx-fp32 |" in md and "not measured on jetson-agx-orin" in md and "nothing is estimated" in md
    assert f"edgeseg op-profile {r['artifact']['folder']}" in md  # bench links to the per-op profile
    page = (rep / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # Pareto plot and example predictions, embedded


def test_would_be_commands_for_jetson_and_android():
    from edgeseg.backends import get_target

    plan = stats.TimingPlan()
    jetson = get_profile("jetson-orin")
    cmd = would_be_command(jetson, jetson.reach, "art/b0-trt-fp16", get_target("trt-fp16"), plan, 4)
    assert cmd.startswith("edgeseg bench --device jetson-agx-orin --artifact art/b0-trt-fp16 --host USER@HOST")
    assert "/usr/src/tensorrt/bin/trtexec --onnx=model.onnx --stronglyTyped" in cmd
    assert "--useCudaGraph --noDataTransfers --useSpinWait" in cmd
    phone = get_profile("android")
    cmd = would_be_command(phone, phone.reach, "art/b0-tflite-int8", get_target("tflite-int8"), plan, 4)
    assert "--serial SERIAL" in cmd and "taskset f0 /data/local/tmp/benchmark_model" in cmd
    assert "--num_threads=4" in cmd and "--use_xnnpack=true" in cmd


def test_bench_over_ssh_with_a_user_profile(sshd, b0_onnx, tmp_path):
    """`edgeseg bench` on a user profile reached over SSH (the local sshd): the artifact is copied there and timed
    by edgeseg's runner with the remote python, next to the measurement here."""
    profiles = write(tmp_path / "profiles" / "test-board.yaml", good_profile(workdir=sshd["workdir"])).parent
    rep = tmp_path / "report"
    result, text = run(
        "bench", "--device", "tb", "--profiles", profiles, "--artifact", b0_onnx, "--data", SAMPLE_DATA,
        "--limit", "1", "--host", sshd["host"], "--port", sshd["port"], "--known-hosts", sshd["known_hosts"],
        "--identity", sshd["identity"], "--threads", "1", "--report", rep, *FAST_TIMING,
    )  # fmt: skip
    assert result.exit_code == 0, text
    doc = check_bench_json(rep / "bench.json")
    (r,) = doc["results"]
    d = r["device"]["measured"]
    assert d is not None, r["device"]["note"]
    assert d["machine"] == f"test-board ({sshd['host']})" and d["runtime"].startswith("onnxruntime")
    assert d["stats"]["n"] == 3 and d["state"]["kernel"] and d["state"]["runner_machine"]["python"]
    assert r["host"]["stats"]["n"] == 3 and doc["device"]["reach"] == f"ssh {sshd['host']}"
    assert (sshd["workdir"] / f"{b0_onnx.name}-{r['artifact']['sha256'][:8]}" / "model.onnx").is_file()
    assert "measured:" in (rep / "bench.md").read_text()

    # the same device with a host key it does not know: not measured, said plainly, exit 0, host figures kept
    result, text = run(
        "bench", "--device", "tb", "--profiles", profiles, "--artifact", b0_onnx, "--data", SAMPLE_DATA,
        "--limit", "1", "--host", sshd["host"], "--port", sshd["port"], "--known-hosts", sshd["wrong_known_hosts"],
        "--identity", sshd["identity"], "--threads", "1", "--report", rep, *FAST_TIMING,
    )  # fmt: skip
    assert result.exit_code == 0, text
    (r,) = check_bench_json(rep / "bench.json")["results"]
    assert r["device"]["measured"] is None and "is not trusted" in r["device"]["note"]
    assert r["host"] is not None


def test_bench_user_errors_are_one_line(tmp_path):
    for args, needle in [
        (["--device", "jetson-orn", "--model", "efficientvit-b0"], "Did you mean 'jetson-orin'"),
        (["--device", "host", "--targets", "onnx-fp99"], "onnx-fp99"),
        (["--device", "host", "--artifact", tmp_path], "no manifest.json"),
        (["--device", "iphone-15-pro", "--model", "efficientvit-b0", "--host", "me@phone"], "not reached over SSH"),
        (["--device", "host", "--model", "efficientvit-b0", "--targets", "onnx-fp99"], "onnx-fp99"),
    ]:
        result, text = run("bench", *args, "--report", tmp_path / "r")
        assert result.exit_code == 2 and text.startswith("error: ") and text.strip().count("\n") == 0, text
        assert needle in text, text
    assert not (tmp_path / "r").exists()


def test_bench_without_a_model_exports_the_default_then_reuses_the_artifacts(tmp_path, monkeypatch):
    """`edgeseg bench --device D` alone: the default model exported to D's targets (INT8 skipped without
    calibration data, not failed), and on the next run the artifacts already there are benched."""
    monkeypatch.delenv("EDGESEG_CALIB_DATA", raising=False)
    arts, rep = tmp_path / "arts", tmp_path / "rep"
    args = ("--device", "host", "--targets", "onnx-fp32,onnx-int8", "--size", "96x128", "--artifacts-dir", arts)
    result, text = run("bench", *args, "--report", rep, "--limit", "1", *FAST_TIMING)
    assert result.exit_code == 0, text
    assert "exporting efficientvit-b0" in text and "weights: shipped efficientvit-b0 camvid" in text
    doc = check_bench_json(rep / "bench.json")
    by_target = {r["target"]: r for r in doc["results"]}
    assert by_target["onnx-fp32"]["artifact"] is not None  # exported and judged (96x128 may miss the floor)
    assert by_target["onnx-int8"]["status"] == "skipped" and "--calib-data" in by_target["onnx-int8"]["reasons"][0]
    assert [p.name for p in arts.iterdir()] == ["efficientvit-b0-camvid-onnx-fp32-96x128"]

    result, text = run("bench", *args, "--report", rep, "--limit", "1", *FAST_TIMING)
    assert result.exit_code == 0 and "benching the 1 artifact(s)" in text, text
    assert [r["target"] for r in check_bench_json(rep / "bench.json")["results"]] == ["onnx-fp32"]


def test_bench_rejects_a_bad_size_before_any_export(tmp_path):
    for size, message in (("7x7", "not a multiple of 32"), ("abc", "is not HxW")):
        r = CliRunner().invoke(
            app, ["bench", "--device", "host", "--model", "efficientvit-b0", "--size", size, "--out", str(tmp_path)]
        )
        assert r.exit_code == 2 and message in r.output, r.output
        assert not list(tmp_path.iterdir())  # nothing exported, no report written
