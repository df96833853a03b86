"""Nothing a folder says about itself is trusted: a corpus of hostile folders and files, built at test time.

Integrity (a model file that no longer hashes to its manifest, a manifest with wrong types), paths that leave their
folder (manifest ``file``, export cache, check baseline copies, sweep cache entries and archives), claims re-checked
by content (parity on one image, a sweep's cached mIoU and bench rows), hostile archives, printed commands that are
pasted into a shell, YAML that is ambiguous (duplicate keys), not UTF-8, too deep or not finite, matrices and
profiles of absurd size, and ONNX Runtime's own log line on a truncated model."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edgeseg import check as chk
from edgeseg.artifact import cached_manifest, read_manifest
from edgeseg.cli import app
from edgeseg.errors import EdgesegError
from edgeseg.sweep.store import SweepStore, unpack_artifact

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def invoke(*args):
    r = runner.invoke(app, [str(a) for a in args])
    return r, r.output


def one_error_line(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in output, output
    return lines[0]


# ------------------------------------------------------------------------------------------------ fixtures


def conv_graph(weight: np.ndarray, size=(32, 32)) -> onnx.ModelProto:
    """A 1x1 convolution 3 -> 11 classes: an ONNX "segmenter" that loads and runs in milliseconds."""
    h, w = size
    node = helper.make_node("Conv", ["image", "W"], ["logits"])
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 11, h, w])],
        [numpy_helper.from_array(weight.astype(np.float32), "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def tiny_artifact(folder: Path, seed: int = 0, **changes) -> Path:
    """An onnx-fp32 artifact folder as `edgeseg export` writes it (manifest fields, sha256), of ``conv_graph``."""
    folder.mkdir(parents=True, exist_ok=True)
    weight = np.random.default_rng(seed).standard_normal((11, 3, 1, 1))
    onnx.save(conv_graph(weight), folder / "model.onnx")
    data = (folder / "model.onnx").read_bytes()
    manifest = {
        "model": "efficientvit-b0",
        "dataset": "camvid",
        "weights": {"tag": "random", "path": None},
        "untrained": True,
        "target": "onnx-fp32",
        "format": "onnx",
        "precision": "fp32",
        "input": {"name": "image", "shape": [1, 3, 32, 32]},
        "output": {"name": "logits", "shape": [1, 11, 32, 32]},
        "parity": {"images": 2, "argmax_agreement": 1.0, "max_abs_diff": 0.0, "snr_db": 120.0, "runtime": "ort"},
        "lint": {"rules": "onnx", "clean": True, "errors": 0, "warnings": 0},
        "file": "model.onnx",
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "cache_key": "k",
        **changes,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def flip_a_byte(path: Path) -> None:
    """One bit of one weight flipped: still valid ONNX, different numbers."""
    model = onnx.load(str(path))
    raw = bytearray(model.graph.initializer[0].raw_data)
    data = path.read_bytes()
    at = data.index(bytes(raw)) + 5
    path.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :])


# ------------------------------------------------------------------------------------------------ integrity


def test_a_tampered_model_file_is_one_line_everywhere_and_no_verify_opts_in(tmp_path):
    art = tiny_artifact(tmp_path / "art")
    flip_a_byte(art / "model.onnx")
    for args in (
        ["lint", art],
        ["op-profile", art, "--runs", "1", "--warmup", "0"],
        ["eval", "--artifact", art, "--limit", "1"],
        ["bench", "--device", "host", "--artifact", art, "--report", tmp_path / "r"],
    ):
        r, out = invoke(*args)
        line = one_error_line(out)
        assert r.exit_code == 2 and "does not match its manifest" in line and "model.onnx" in line, args
        assert "--no-verify" in line
    r, out = invoke("lint", art, "--no-verify")
    assert r.exit_code == 0, out
    r, out = invoke("op-profile", art, "--runs", "1", "--warmup", "0", "--no-verify")
    assert r.exit_code == 0, out


def test_a_manifest_with_wrong_field_types_is_one_line(tmp_path):
    cases = [
        ({"input": {"shape": ["1", 3, 32, 32]}}, "field 'input.shape.0'"),
        ({"input": {"shape": [1, 3, 32]}}, "field 'input.shape'"),
        ({"sha256": 5}, "field 'sha256'"),
        ({"parity": {"images": 2, "argmax_agreement": "1.0"}}, "field 'parity.argmax_agreement'"),
        ({"lint": {"clean": "yes"}}, "field 'lint.clean'"),
        ({"file": ["model.onnx"]}, "field 'file'"),
    ]
    for i, (changes, field) in enumerate(cases):
        art = tiny_artifact(tmp_path / f"a{i}", **changes)
        r, out = invoke("lint", art)
        line = one_error_line(out)
        assert r.exit_code == 2 and "corrupt manifest" in line and field in line, (changes, out)


def test_the_hash_is_computed_once_per_file_state(tmp_path, monkeypatch):
    import edgeseg.artifact as artifact_mod

    art = tiny_artifact(tmp_path / "art")
    calls = []
    real = artifact_mod.artifact_sha256
    monkeypatch.setattr(artifact_mod, "artifact_sha256", lambda p: calls.append(p) or real(p))
    for _ in range(3):  # bench reads an artifact several times per run: listed, mIoU, timing, examples
        read_manifest(art)
    assert len(calls) == 1
    st = (art / "model.onnx").stat()
    os.utime(art / "model.onnx", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: hashed again
    read_manifest(art)
    assert len(calls) == 2


# ------------------------------------------------------------------------------------------------ paths


def test_a_manifest_file_outside_its_folder_is_refused(tmp_path):
    outside = tiny_artifact(tmp_path / "victim")  # a real model elsewhere, with its real sha256
    sha = json.loads((outside / "manifest.json").read_text())["sha256"]
    link = tiny_artifact(tmp_path / "link")
    (link / "model.onnx").unlink()
    (link / "model.onnx").symlink_to(outside / "model.onnx")
    cases = {
        "dotdot": tiny_artifact(tmp_path / "dotdot", file="../victim/model.onnx", sha256=sha),
        "absolute": tiny_artifact(tmp_path / "absolute", file=str(outside / "model.onnx"), sha256=sha),
        "symlink": link,
    }
    for name, art in cases.items():
        for args in (["lint", art], ["eval", "--artifact", art, "--limit", "1"]):
            r, out = invoke(*args)
            line = one_error_line(out)
            assert r.exit_code == 2 and "points outside" in line, (name, args, out)


def test_the_export_cache_serves_only_an_intact_entry_inside_its_folder(tmp_path):
    art = tiny_artifact(tmp_path / "art")
    assert cached_manifest(art, "k")["file"] == "model.onnx"
    tiny_artifact(tmp_path / "victim")
    escaping = tiny_artifact(
        tmp_path / "esc",
        file="../victim/model.onnx",
        sha256=json.loads((tmp_path / "art/manifest.json").read_text())["sha256"],
    )
    assert cached_manifest(escaping, "k") is None
    flip_a_byte(art / "model.onnx")
    assert cached_manifest(art, "k") is None


def write_baseline(path: Path, sha: str, copy: str) -> Path:
    rows = {"m/onnx-fp32/32x32/host": {"artifact": {"sha256": sha, "bytes": 1, "copy": copy}}}
    path.write_text(json.dumps({"version": chk.BASELINE_VERSION, "rows": rows}))
    return path


def test_a_baseline_copy_must_be_in_its_folder_and_hash_to_the_baseline(tmp_path):
    with pytest.raises(EdgesegError, match="points outside"):
        chk.read_baseline(write_baseline(tmp_path / "b1.json", "0" * 64, "../../etc"), False)
    with pytest.raises(EdgesegError, match="is not in b2.artifacts/"):
        tiny_artifact(tmp_path / "elsewhere")
        chk.read_baseline(write_baseline(tmp_path / "b2.json", "0" * 64, "elsewhere"), False)
    # a copy whose own manifest agrees with its (swapped) file, but not with the sha256 the baseline recorded
    copy = tiny_artifact(tmp_path / "b3.artifacts" / "row", seed=1)
    baseline = chk.read_baseline(write_baseline(tmp_path / "b3.json", "a" * 64, "b3.artifacts/row"), False)
    with pytest.raises(EdgesegError, match="record the baseline again"):
        baseline.artifact_folder("m/onnx-fp32/32x32/host")
    sha = json.loads((copy / "manifest.json").read_text())["sha256"]
    baseline = chk.read_baseline(write_baseline(tmp_path / "b3.json", sha, "b3.artifacts/row"), False)
    assert baseline.artifact_folder("m/onnx-fp32/32x32/host") == copy.resolve()


def test_a_sweep_cache_entry_is_served_only_for_a_verified_artifact_inside_the_store(tmp_path):
    store = SweepStore(tmp_path / "out")
    good = tiny_artifact(store.artifacts / "good")
    manifest = json.loads((good / "manifest.json").read_text())
    victim = tiny_artifact(tmp_path / "victim")
    entries = {
        "ok": {"folder": "good", "manifest": manifest, "miou": 0.5},
        "escape": {"folder": "../../victim", "manifest": json.loads((victim / "manifest.json").read_text())},
        "forged": {"folder": "good", "manifest": {**manifest, "parity": {**manifest["parity"], "images": 99}}},
    }
    (store.root / "cache" / "artifact").mkdir(parents=True)
    for key, entry in entries.items():
        (store.root / "cache" / "artifact" / f"{key}.json").write_text(json.dumps(entry))
    assert store.cached_artifact("ok")["folder"] == "good"
    assert store.cached_artifact("escape") is None and "points outside" in store.refused["escape"]
    assert store.cached_artifact("forged") is None and "not the one in" in store.refused["forged"]
    flip_a_byte(good / "model.onnx")
    assert store.cached_artifact("ok") is None and "does not match its manifest" in store.refused["ok"]


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> tuple[bytes, str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def _member(name: str, data: bytes | None = None, kind=tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    if kind == tarfile.DIRTYPE:
        info.mode = 0o755
    if data is not None:
        info.size = len(data)
    return info, data


def test_hostile_sweep_archives_are_one_line_errors(tmp_path):
    model = b"\x08\x01graph"
    sha = hashlib.sha256(model).hexdigest()
    manifest = {"file": "model.onnx", "sha256": sha}
    art = _member("art", kind=tarfile.DIRTYPE)
    cases = {
        "dotdot": [art, _member("art/../../evil.onnx", model)],
        "absolute": [art, _member("/tmp/evil-edgeseg.onnx", model)],
        "symlink out": [art, _member("art/model.onnx", kind=tarfile.SYMTYPE, link="/etc/passwd")],
        "hardlink out": [art, _member("art/model.onnx", kind=tarfile.LNKTYPE, link="/etc/passwd")],
        "two folders": [art, _member("art/model.onnx", model), _member("other", kind=tarfile.DIRTYPE)],
    }
    for name, members in cases.items():
        data, digest = _tar(members)
        into = tmp_path / name.replace(" ", "-")
        with pytest.raises(EdgesegError, match="archive refused|points outside") as exc:
            unpack_artifact(data, digest, manifest, into)
        assert "\n" not in str(exc.value), name
        assert [p.name for p in into.iterdir()] == [], name  # nothing left behind
    # an archive whose manifest names a model file by an absolute path outside the folder
    data, digest = _tar([art, _member("art/model.onnx", model)])
    with pytest.raises(EdgesegError, match="points outside"):
        unpack_artifact(data, digest, {"file": str(tmp_path / "victim.onnx"), "sha256": sha}, tmp_path / "abs")


def test_a_sweep_that_stops_never_leaves_sweep_json_running(tmp_path, monkeypatch):
    from edgeseg.commands import sweep as sweep_cmd

    matrix = tmp_path / "sweep.yaml"
    matrix.write_text(
        yaml.safe_dump(
            {
                "models": [{"name": "efficientvit-b0", "weights": "random"}],
                "targets": ["onnx-fp32"],
                "devices": ["host"],
                "sizes": ["64x64"],
            }
        )
    )

    def boom(self, key):
        raise RuntimeError("disk went away")

    monkeypatch.setattr(SweepStore, "cached_artifact", boom)
    with pytest.raises(RuntimeError):
        sweep_cmd.sweep(matrix, tmp_path / "out")
    state = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert state["status"] == "failed" and "disk went away" in state["reason"]


# ------------------------------------------------------------------------------------------------ re-checked claims


def test_a_recorded_parity_is_rechecked_on_one_image():
    from edgeseg.commands.recheck import recheck_parity

    def reference(seed):
        conv = torch.nn.Conv2d(3, 11, 1, bias=False)
        w = np.random.default_rng(seed).standard_normal((11, 3, 1, 1)).astype(np.float32)
        conv.weight.data = torch.from_numpy(w)
        return conv

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        art = tiny_artifact(Path(d) / "art", seed=0)
        manifest = read_manifest(art)[1]
        image = np.random.default_rng(3).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        assert recheck_parity(art, manifest, image, 1, reference(0)) == manifest["parity"]  # the claim holds
        swapped = recheck_parity(art, manifest, image, 1, reference(1))  # another model behind the same record
        assert swapped["rechecked"] and swapped["images"] == 1 and swapped["argmax_agreement"] < 0.9
        assert "does not hold" in swapped["runtime"]


# ------------------------------------------------------------------------------------------------ printed commands


def test_printed_commands_are_shell_quoted(tmp_path):
    from edgeseg.backends import get_target
    from edgeseg.bench.device import would_be_command
    from edgeseg.bench.profiles import get_profile
    from edgeseg.bench.stats import TimingPlan
    from edgeseg.gates import Evidence, judge_absolute

    folder = str(tmp_path / "art$(touch pwned)")
    pasted = []
    for device, target in (("jetson-orin", "trt-fp16"), ("pixel-8", "tflite-fp16"), ("host", "onnx-fp32")):
        profile = get_profile(device)
        cmd = would_be_command(profile, profile.reach, folder, get_target(target), TimingPlan(), 2)
        command = cmd.split("   #")[0]
        if profile.reach.method in ("ssh", "adb"):
            assert shlex.split(command)[:6] == ["edgeseg", "bench", "--device", profile.name, "--artifact", folder]
        pasted.append(command)
    lint = next(
        g
        for g in judge_absolute(
            Evidence(precision="fp32", folder=folder, lint={"clean": False, "errors": 1, "rules": "onnx"})
        )
        if g.name == "lint"
    )
    pasted.append(lint.reason().split("(", 1)[1].rsplit(")", 1)[0])
    for command in pasted:
        subprocess.run(["sh", "-c", f"true {command}"], cwd=tmp_path, check=False, capture_output=True)
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------------------ YAML and bounds


def test_yaml_duplicate_keys_non_utf8_and_deep_nesting_are_one_line(tmp_path):
    from edgeseg.bench.profiles import load_profile
    from edgeseg.sweep.matrix import load_matrix

    dup = tmp_path / "edgeseg.yaml"
    dup.write_text("thresholds:\n  max_miou_drop: 1\n  max_miou_drop: 50\nmodels: []\n")
    with pytest.raises(EdgesegError, match=r"line 3: key 'max_miou_drop' is given twice \(first on line 2\)"):
        chk.load_config(dup)
    latin = tmp_path / "dev.yaml"
    latin.write_bytes("name: dev\ntitle: Caf\xe9\n".encode("latin-1"))
    with pytest.raises(EdgesegError, match=r"device profile .*dev.yaml: not UTF-8 text \(byte 0xe9"):
        load_profile(latin)
    deep = tmp_path / "sweep.yaml"
    deep.write_text("models: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(EdgesegError, match="nested deeper than 64 levels"):
        load_matrix(deep)
    tag = tmp_path / "tag.yaml"
    tag.write_text("models: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(EdgesegError, match="not valid YAML"):
        load_matrix(tag)
    for f in (dup, latin, deep):
        r, out = invoke("sweep", "--matrix", f, "--out", tmp_path / "o")
        assert r.exit_code == 2 and "Traceback" not in out, out


def test_config_values_must_be_finite(tmp_path):
    from edgeseg.bench.profiles import load_profile
    from edgeseg.sweep.matrix import load_matrix

    config = tmp_path / "edgeseg.yaml"
    for field in ("min_snr_db: .nan", "latency_noise: .inf", "max_latency_ratio: .nan", "max_miou_drop: .inf"):
        config.write_text(
            f"thresholds:\n  {field}\nmodels:\n- name: efficientvit-b0\n  weights: random\n  targets: [onnx-fp32]\n"
        )
        with pytest.raises(EdgesegError, match=f"field 'thresholds.{field.split(':')[0]}'"):
            chk.load_config(config)
    shipped = yaml.safe_load((REPO / "edgeseg/assets/devices/host.yaml").read_text())
    for field, value in (("budget_ms", float("inf")), ("miou_floor", float("nan"))):
        path = tmp_path / "host.yaml"
        path.write_text(yaml.safe_dump({**shipped, field: value}))
        with pytest.raises(EdgesegError, match=f"field '{field}'"):
            load_profile(path)
    matrix = tmp_path / "sweep.yaml"
    matrix.write_text("models: [efficientvit-b0]\ntargets: [onnx-fp32]\ndevices: [host]\nmiou_floor: .nan\n")
    with pytest.raises(EdgesegError, match="field 'miou_floor'"):
        load_matrix(matrix)


def test_a_matrix_of_a_million_cells_and_absurd_lists_are_refused_up_front(tmp_path):
    from edgeseg.backends import TARGETS
    from edgeseg.bench.profiles import load_profile
    from edgeseg.sweep.matrix import MAX_CELLS, load_matrix

    targets = list(TARGETS)[:10]
    sizes = [f"{32 * (i + 1)}x32" for i in range(100)]
    models = ["efficientvit-b0"] * 200
    devices = [f"dev{i}" for i in range(1_000_000 // (200 * 100 * len(targets)))]
    matrix = tmp_path / "sweep.yaml"
    matrix.write_text(yaml.safe_dump({"models": models, "targets": targets, "devices": devices, "sizes": sizes}))
    cells = 200 * 100 * len(targets) * len(devices)
    with pytest.raises(EdgesegError, match=f"{cells} cells .* more than the limit of {MAX_CELLS}"):
        load_matrix(matrix)
    r, out = invoke("sweep", "--matrix", matrix, "--out", tmp_path / "out")
    assert r.exit_code == 2 and f"{cells} cells" in out and not (tmp_path / "out").exists()
    shipped = yaml.safe_load((REPO / "edgeseg/assets/devices/host.yaml").read_text())
    path = tmp_path / "host.yaml"
    path.write_text(yaml.safe_dump({**shipped, "aliases": [f"a{i}" for i in range(100_000)]}))
    with pytest.raises(EdgesegError, match="field 'aliases': List should have at most 64 items"):
        load_profile(path)


# ------------------------------------------------------------------------------------------------ noise


def test_a_truncated_onnx_profiled_prints_one_error_line_only(tmp_path):
    art = tiny_artifact(tmp_path / "art")
    data = (art / "model.onnx").read_bytes()
    (art / "model.onnx").write_bytes(data[: len(data) // 2])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for extra in ([], ["--no-verify"]):  # verified: the hash stops it; unverified: ONNX Runtime refuses it
        p = subprocess.run(
            [sys.executable, "-m", "edgeseg", "op-profile", str(art), "--runs", "1", *extra],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert p.returncode == 2, p.stderr
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr


# ------------------------------------------------------------------------------------------------ end to end
# The toy TorchScript backend of test_toy_backend (a torch.jit trace: seconds, not minutes) through a real sweep,
# bench and its caches: forged figures in the sweep's cache and a swapped model file with an updated sha256.


@pytest.fixture(scope="module")
def toy_sweep(tmp_path_factory):
    from test_toy_backend import TorchScriptBackend

    from edgeseg.backends import register_backend, unregister_backend
    from edgeseg.commands import sweep as sweep_cmd

    backend = register_backend(TorchScriptBackend())
    try:
        folder = tmp_path_factory.mktemp("toy-sweep")
        matrix = folder / "sweep.yaml"
        matrix.write_text(
            yaml.safe_dump(
                {
                    "models": [{"name": "efficientvit-b0", "weights": "camvid"}],
                    "targets": ["toyscript-fp32"],
                    "devices": ["host"],
                    "sizes": ["64x64"],
                    "limit": 1,
                    "parity_images": 1,
                    "miou_floor": 0.6,  # shipped weights at 64x64 on one image score far below it
                    "device_targets_only": False,
                    "timing": {"warmup": 1, "runs": 3, "max_runs": 3, "max_seconds": 2},
                }
            )
        )
        first = sweep_cmd.sweep(matrix, folder / "out")
        yield matrix, folder / "out", first
    finally:
        unregister_backend(backend.name)


def host_row(out: Path) -> dict:
    (row,) = json.loads((out / "host" / "bench.json").read_text())["results"]
    return row


def test_a_cached_sweep_writes_its_state_once_not_per_job(toy_sweep, monkeypatch):
    from edgeseg.commands import sweep as sweep_cmd

    matrix, out, _ = toy_sweep
    writes = []
    real_write = SweepStore.write_state
    monkeypatch.setattr(SweepStore, "write_state", lambda self, state: writes.append(1) or real_write(self, state))
    again = sweep_cmd.sweep(matrix, out)
    assert {j["status"] for j in again["jobs"].values()} == {"cached"}
    assert len(writes) == 3  # started, every job queued or cached (one write), finished: not one per job


def test_forged_sweep_cache_figures_do_not_pass_a_floor(toy_sweep):
    from edgeseg.commands import sweep as sweep_cmd

    matrix, out, _ = toy_sweep
    honest = host_row(out)
    assert honest["status"] == "failed_check" and honest["miou"] < 0.6
    for path in (out / "cache" / "artifact").glob("*.json"):
        entry = json.loads(path.read_text())
        path.write_text(json.dumps({**entry, "miou": 0.99}))
    for path in (out / "cache" / "bench").glob("*.json"):
        entry = json.loads(path.read_text())
        entry["result"].update(miou=0.99, status="passed", reasons=[])
        path.write_text(json.dumps(entry))
    sweep_cmd.sweep(matrix, out)
    row = host_row(out)
    assert row["miou"] == pytest.approx(honest["miou"]) and row["status"] == "failed_check", row
    assert any("floor" in r for r in row["reasons"]), row["reasons"]
    assert json.loads(next((out / "cache" / "artifact").glob("*.json")).read_text())["miou"] != 0.99


def test_a_swapped_model_with_an_updated_sha256_does_not_pass_as_cached(toy_sweep, tmp_path):
    from edgeseg.artifact import artifact_sha256
    from edgeseg.commands import sweep as sweep_cmd
    from edgeseg.models.registry import create_model

    matrix, out, _ = toy_sweep
    (folder,) = [p for p in (out / "artifacts").iterdir() if p.is_dir()]
    torch.manual_seed(1)
    other, _ = create_model("efficientvit-b0", "camvid")  # untrained: another model behind the same record
    with torch.no_grad():
        torch.jit.trace(other.eval(), torch.zeros(1, 3, 64, 64)).save(str(folder / "model.ts"))
    sha = artifact_sha256(folder / "model.ts")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "sha256": sha}))
    for path in (out / "cache" / "artifact").glob("*.json"):  # the cache entry updated to match, too
        entry = json.loads(path.read_text())
        entry["manifest"]["sha256"] = sha
        path.write_text(json.dumps(entry))

    r, output = invoke(
        "bench", "--device", "host", "--artifact", folder, "--report", tmp_path / "r", "--limit", "1",
        "--warmup", "1", "--runs", "3", "--max-runs", "3", "--max-seconds", "2", "--examples", "0",
    )  # fmt: skip
    assert r.exit_code == 0, output
    (row,) = json.loads((tmp_path / "r" / "bench.json").read_text())["results"]
    assert row["parity"]["images"] == 1 and row["parity"]["argmax_agreement"] < 0.9, row["parity"]
    assert any(reason.startswith("parity") for reason in row["reasons"]), row["reasons"]

    config = tmp_path / "edgeseg.yaml"
    config.write_text(yaml.safe_dump({"limit": 1, "artifacts": [{"path": str(folder)}]}))
    r, output = invoke(
        "check", "--config", config, "--baseline", tmp_path / "b.json", "--update-baseline",
        "--markdown", tmp_path / "c.md",
    )  # fmt: skip
    assert r.exit_code == 1 and not (tmp_path / "b.json").exists(), output
    fail = next(line for line in output.splitlines() if line.startswith("FAIL"))
    assert "parity" in fail, output

    for _ in range(2):  # the re-measured parity is what the cache says from now on, run after run
        sweep_cmd.sweep(matrix, out)
        row = host_row(out)
        assert row["parity"]["argmax_agreement"] < 0.9 and any(r.startswith("parity") for r in row["reasons"]), row


def test_the_estimator_serves_only_graphs_it_sealed(tmp_path, monkeypatch):
    """A file dropped (or edited) under the estimation-graph cache is rebuilt, not costed."""
    import edgeseg.backends.onnx.export as onnx_export
    from edgeseg.commands.estimate import estimation_graph

    built = []

    def fake_export(module, example, path, opset, output_name):  # the real export takes minutes here
        built.append(path)
        h, w = example.shape[2:]
        onnx.save(conv_graph(np.ones((11, 3, 1, 1)), (h, w)), path)

    monkeypatch.setattr(onnx_export, "export_onnx", fake_export)
    path, _ = estimation_graph("efficientvit-b0", "camvid", "onnx-fp32", "64x64", cache=tmp_path)
    assert len(built) == 1 and estimation_graph("efficientvit-b0", "camvid", "onnx-fp32", "64x64", cache=tmp_path)[0]
    assert len(built) == 1  # an intact sealed graph is served from the cache

    path.write_bytes(b"not a graph at all")  # a stray file under the graph's name
    estimation_graph("efficientvit-b0", "camvid", "onnx-fp32", "64x64", cache=tmp_path)
    assert len(built) == 2 and onnx.load(str(path)).graph.node[0].op_type == "Conv"

    model = onnx.load(str(path))  # edited in place, its metadata kept
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.zeros((11, 3, 1, 1), np.float32), "W"))
    onnx.save(model, str(path))
    estimation_graph("efficientvit-b0", "camvid", "onnx-fp32", "64x64", cache=tmp_path)
    assert len(built) == 3
