"""`edgeseg sweep`: the matrix file, the job cache, failures that do not stop the others, --resume, and the same
matrix on a real local Ray cluster (a second node advertising a device as a custom resource; a worker killed
mid-job is retried)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgeseg.bench.report import BenchReport
from edgeseg.cli import app
from edgeseg.commands import sweep as sweep_cmd
from edgeseg.errors import EdgesegError
from edgeseg.sweep.matrix import load_matrix
from edgeseg.sweep.store import pack_artifact, unpack_artifact

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report attempts from the test clusters

# B0 with its shipped weights at a small size: two ONNX targets export in seconds
SMALL = {
    "models": [{"name": "efficientvit-b0", "weights": "camvid"}],
    "targets": ["onnx-fp32", "onnx-fp16"],
    "devices": ["host", "raspberry-pi-5"],
    "sizes": ["96x128"],
    "limit": 3,
    "parity_images": 2,
    "device_targets_only": False,
    "timing": {"warmup": 1, "runs": 3, "max_runs": 5, "max_seconds": 2},
}


def write_matrix(folder: Path, **changes) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({**SMALL, **changes}))
    return path


def stable_view(table: dict) -> list[tuple]:
    """What must not depend on where jobs ran: rows, sizes, parity, mIoU, and each cell's kind of figure (the
    latencies themselves are timings, noisy by nature)."""
    out = []
    for row in table["rows"]:
        kinds = tuple(sorted((d, c.split(" ")[-1], "ms" in c) for d, c in row["cells"].items()))
        out.append((row["model"], row["size"], row["target"], row["mb"], row["parity"], row["miou"], kinds))
    return out


# ---------------------------------------------------------------- the matrix file


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"targets": ["onnx-fp33"]}, r"field 'targets': item 0: unknown target 'onnx-fp33' \(valid: onnx-fp32"),
        ({"sizes": ["96"]}, r"field 'sizes': item 0: size '96' is not HxW"),
        ({"devices": ["host", "host"]}, r"devices lists an item twice"),
        ({"models": []}, r"field 'models': List should have at least 1 item"),
        ({"colour": "red"}, r"field 'colour': Extra inputs are not permitted"),
    ],
)
def test_matrix_errors_name_the_field(tmp_path, changes, message):
    with pytest.raises(EdgesegError, match=message):
        load_matrix(write_matrix(tmp_path, **changes))


def test_matrix_errors_before_anything_runs(tmp_path):
    cases = [
        ({"devices": ["jetson-orni"]}, r"unknown device 'jetson-orni'\. Did you mean"),
        ({"devices": ["jetson-orin", "jetson-agx-orin"]}, r"devices list jetson-agx-orin twice"),
        ({"sizes": ["100x128"]}, r"input size 100x128 is not a multiple of 32"),
        ({"models": [{"name": "efficientvit-b9"}]}, r"unknown model 'efficientvit-b9'"),
        ({"device_targets_only": True, "devices": ["jetson-orin"]}, r"device jetson-agx-orin runs trt-fp16, trt-int8"),
    ]
    for changes, message in cases:
        with pytest.raises(EdgesegError, match=message):
            sweep_cmd.sweep(write_matrix(tmp_path, **changes), tmp_path / "out")
        assert not (tmp_path / "out").exists()  # nothing written before the matrix is valid


def test_out_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    result = CliRunner().invoke(app, ["sweep", "--matrix", str(write_matrix(tmp_path)), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output, result.output
    assert "Traceback" not in result.output and (tmp_path / "out").read_text() == "not a folder"


def test_cli_missing_matrix_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["sweep", "--matrix", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "sweep matrix" in result.output and "not found" in result.output and "Traceback" not in result.output


def test_artifact_archive_is_checked(tmp_path):
    folder = tmp_path / "art"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"\x08\x01graph")
    from edgeseg.sweep.store import artifact_digest

    manifest = {"file": "model.onnx", "sha256": artifact_digest(folder / "model.onnx")}
    data, sha = pack_artifact(folder)
    assert unpack_artifact(data, sha, manifest, tmp_path / "in").joinpath("model.onnx").read_bytes() == b"\x08\x01graph"
    with pytest.raises(EdgesegError, match="corrupted in transit"):
        unpack_artifact(data[:-1] + b"x", sha, manifest, tmp_path / "in2")
    with pytest.raises(EdgesegError, match="does not match its manifest"):
        unpack_artifact(data, sha, {**manifest, "sha256": "0" * 64}, tmp_path / "in3")
    assert not (tmp_path / "in3" / "art").exists()


# ---------------------------------------------------------------- local execution


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The small matrix run in this process, plus an onnx-int8 target that fails (the bundled sample has no
    train/ split to calibrate on): its cell is recorded and the others finish."""
    folder = tmp_path_factory.mktemp("sweep-local")
    matrix = write_matrix(folder, targets=["onnx-fp32", "onnx-fp16", "onnx-int8"])
    result = sweep_cmd.sweep(matrix, folder / "out")
    return matrix, folder / "out", result


def test_local_sweep_writes_bench_reports_per_device(local_sweep):
    _, out, result = local_sweep
    assert result["failed"] == 1
    state = json.loads((out / "sweep.json").read_text())
    assert state["status"] == "finished"
    failed = [j for j in state["jobs"].values() if j["status"] == "failed"]
    assert [j["label"] for j in failed] == ["efficientvit-b0 96x128 onnx-int8"]
    assert "onnx-int8 needs calibration images" in failed[0]["reason"]
    for device in ("host", "raspberry-pi-5"):
        report = BenchReport.model_validate_json((out / device / "bench.json").read_text())
        by_target = {r.target: r for r in report.results}
        assert set(by_target) == {"onnx-fp32", "onnx-fp16", "onnx-int8"}
        assert by_target["onnx-int8"].status == "failed"
        assert "needs calibration images" in by_target["onnx-int8"].reasons[0]
        ok = by_target["onnx-fp32"]
        assert ok.model == "efficientvit-b0" and ok.size == "96x128"
        assert ok.parity.argmax_agreement == 1.0 and 0.3 < ok.miou < 1.0  # shipped weights on 3 sample images
        assert (out / device / "report.html").is_file() and (out / device / "bench.md").is_file()
    host = BenchReport.model_validate_json((out / "host" / "bench.json").read_text())
    assert all(r.device.measured is not None for r in host.results if r.status != "failed")
    pi = BenchReport.model_validate_json((out / "raspberry-pi-5" / "bench.json").read_text())
    fp32 = next(r for r in pi.results if r.target == "onnx-fp32")
    assert fp32.device.measured is None and "no host configured" in fp32.device.note
    assert fp32.host is None  # a device cell does not re-time the artifact here: the host column does that
    page = (out / "report.html").read_text()
    assert page.count("<h2>") == 2 and "data:image/png;base64," in page


def test_second_run_comes_from_the_cache(local_sweep):
    matrix, out, first = local_sweep
    t0 = time.perf_counter()
    again = sweep_cmd.sweep(matrix, out)
    seconds = time.perf_counter() - t0
    statuses = {j["label"] + str(j.get("device")): j["status"] for j in again["jobs"].values()}
    done = [s for s in statuses.values() if s != "failed" and s != "skipped"]
    assert done and all(s == "cached" for s in done), statuses
    # no export or bench job ran: each cached artifact's mIoU is re-measured and its parity re-checked on one image
    # (cached figures are claims the folder makes; see edgeseg.commands.recheck), then the reports are written
    assert seconds < 30, f"a fully cached sweep took {seconds:.1f} s"
    assert again["table"] == first["table"]
    # the failed job is not cached: it is tried again (and fails again with the same reason)
    assert again["failed"] == 1


def test_unfinished_sweep_needs_resume(local_sweep, tmp_path):
    matrix, out, _ = local_sweep
    state = json.loads((out / "sweep.json").read_text())
    (out / "sweep.json").write_text(json.dumps({**state, "status": "running"}))
    with pytest.raises(EdgesegError, match="holds an unfinished sweep .*pass --resume"):
        sweep_cmd.sweep(matrix, out)
    resumed = sweep_cmd.sweep(matrix, out, resume=True)
    assert json.loads((out / "sweep.json").read_text())["status"] == "finished"
    assert resumed["failed"] == 1
    with pytest.raises(EdgesegError, match="--resume: .* holds no sweep"):
        sweep_cmd.sweep(matrix, tmp_path / "empty", resume=True)


# ---------------------------------------------------------------- a real local Ray cluster


def _kill_first(title: str, killed: list, stop: threading.Event) -> None:
    """SIGKILL the first process whose title is ``title`` (Ray names a worker ``ray::<function>`` while it runs
    that function): a worker dying mid-job, as on an out-of-memory kill or a lost node."""
    while not stop.is_set() and not killed:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith(title):
                time.sleep(1.0)  # let it get into the export
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.2)


def test_ray_cluster_same_table_retry_and_device_node(local_sweep, tmp_path):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    matrix_local, _, local = local_sweep
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})  # two workers for artifact jobs
    # a node standing in for the Raspberry Pi: no CPUs for export work, one unit of the device's resource
    cluster.add_node(num_cpus=0, resources={"raspberry-pi-5": 1})
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_first, args=("ray::sweep_artifact_job", killed, stop), daemon=True)
    killer.start()
    try:
        result = sweep_cmd.sweep(matrix_local, tmp_path / "out", cluster=cluster.address)
    finally:
        stop.set()
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    assert killed, "no artifact job was seen running to kill"
    assert result["failed"] == 1  # only the onnx-int8 job, as locally: the killed one was retried
    state = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert state["executor"].startswith("Ray cluster")
    # bench rows for the device come from the node advertising it, measured there, and say it stands in
    pi = BenchReport.model_validate_json((tmp_path / "out" / "raspberry-pi-5" / "bench.json").read_text())
    for r in pi.results:
        if r.status == "failed":
            continue
        assert r.device.measured is not None and r.device.measured.machine.startswith("Ray node")
        assert "stands in for raspberry-pi-5" in (r.device.note or "")
        assert Path(r.artifact.folder).is_dir()  # the driver's copy, unpacked after the hash check

    # the same table as in this process, except the device node now measures the Pi's cells
    def host_only(view):
        return [(*row[:6], tuple(k for k in row[6] if k[0] == "host")) for row in view]

    local_view, ray_view = stable_view(local["table"]), stable_view(result["table"])
    assert host_only(ray_view) == host_only(local_view)
    assert len(ray_view) == len(local_view) == 3


def test_cluster_address_error_is_one_line(tmp_path):
    pytest.importorskip("ray")
    matrix = write_matrix(tmp_path)
    result = CliRunner().invoke(
        app, ["sweep", "--matrix", str(matrix), "--out", str(tmp_path / "o"), "--cluster", "127.0.0.1:1"]
    )
    assert result.exit_code == 2, result.output
    assert "nothing answers at 127.0.0.1:1" in result.output and "Traceback" not in result.output


def _sleep_on_device(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


def test_ray_bench_job_fails_when_its_device_node_leaves():
    """A bench job waits for the node advertising its device; when that node leaves the cluster, the job fails
    with the reason instead of waiting forever."""
    ray = pytest.importorskip("ray")
    import sys

    from ray.cluster_utils import Cluster

    from edgeseg.sweep.executors import RayExecutor

    # workers cannot import this test module: send the sleeping function by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    device_node = cluster.add_node(num_cpus=0, resources={"jetson-agx-orin": 1})
    try:
        executor = RayExecutor(cluster.address)
        assert executor.device_resources() == {"jetson-agx-orin": 1.0}
        ref = executor.submit(_sleep_on_device, 60.0, device="jetson-agx-orin")
        time.sleep(2.0)
        cluster.remove_node(device_node)
        t0 = time.perf_counter()
        handle, result, error = executor.wait([ref], poll_seconds=1.0)
        assert handle == ref and result is None
        assert "no node advertises jetson-agx-orin any more" in str(error), error
        assert time.perf_counter() - t0 < 45
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def test_class_names_on_a_shipped_model_are_one_line(tmp_path):
    """num_classes / classes in a matrix are for your own model (PATH.py:NAME), as the CLI's options are."""
    models = [{"name": "efficientvit-b0", "weights": "camvid", "classes": ["a", "b"]}]
    matrix = write_matrix(tmp_path, models=models)
    result = CliRunner().invoke(app, ["sweep", "--matrix", str(matrix), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "sweep matrix: models.0: num_classes / classes apply to your own model" in result.output
