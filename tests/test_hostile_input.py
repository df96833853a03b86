"""Hostile but realistic input: every case is built here at test time (small files, tiny models) and must end in
one line ``error: ...`` with exit 2 (or 130/143 for an interruption), write nothing half-done, and never write over
an input. Grouped by kind: one-line errors and option ranges, inputs never overwritten, interruption, disk full
and unwritable outputs, data validation, permissions."""

import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.errors import EdgesegError

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()
B0 = ("--model", "efficientvit-b0")


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result, result.output  # stderr is mixed in


def assert_user_error(result, text, *needles, code=2):
    assert result.exit_code == code, text
    assert "Traceback" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert text.strip().count("\n") == 0 and text.startswith("error: "), text
    for needle in needles:
        assert needle in text, text


def png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG (grey for (H, W), RGB for (H, W, 3)) written byte by byte: PIL cannot save 16-bit colour."""
    h, w = array.shape[:2]
    color_type = 2 if array.ndim == 3 else 0
    rows = b"".join(b"\x00" + array[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A few hundred bytes that declare ``width`` x ``height`` pixels (a decompression bomb's header)."""
    data = bytearray(png16(np.zeros((2, 2), dtype=np.uint16)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def tiny_dataset(root: Path, label_values=(0, 3), n: int = 2, size=(64, 64)) -> Path:
    """``root/val/images`` + ``root/val/labels``: n small RGB images, labels filled with ``label_values``."""
    rng = np.random.default_rng(0)
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "labels").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "val" / "images" / f"im{i}.png")
        label = np.full(size, label_values[0], dtype=np.uint8)
        label[: size[0] // 2] = label_values[1]
        Image.fromarray(label).save(root / "val" / "labels" / f"im{i}.png")
    return root


@pytest.fixture(scope="module")
def weights(random_b0_weights):
    return random_b0_weights


# ------------------------------------------------------------------------------ one-line errors and option ranges


def test_absurd_size_is_refused_with_the_limit(weights):
    result, text = run("eval", *B0, "--weights", weights, "--size", "100000x100000")
    assert_user_error(result, text, "100000x100000", "limit is 16,777,216")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("export", *B0, "--weights", "random", "-t", "onnx-fp32", "--parity-images", "0"), "--parity-images 0"),
        (("export", *B0, "--weights", "random", "-t", "onnx-fp32", "--parity-images", "-3"), "--parity-images -3"),
        (("export", *B0, "--weights", "random", "-t", "onnx-fp32", "--opset", "99"), "--opset 99 is not supported"),
        (("eval", *B0, "--weights", "random", "--limit", "-1"), "--limit -1"),
        (("eval", *B0, "--weights", "random", "--threads", "-1"), "--threads -1"),
        (("bench", "--device", "no-such-device", "--max-seconds", "-1"), "--max-seconds -1"),
        (("bench", "--device", "no-such-device", "--max-seconds", "nan"), "--max-seconds nan"),
        (("train", *B0, "--data", "no-such-data", "--out", "no-such-run", "--batch-size", "0"), "--batch-size 0"),
        (("op-profile", "no-such-artifact", "--runs", "1000000000"), "over 2,000 profiled runs"),
    ],
)
def test_out_of_range_options_are_one_line_errors(args, needle, tmp_path):
    result, text = run(*args, *(("--out", tmp_path) if args[0] == "export" else ()))
    assert_user_error(result, text, needle)
    assert not any(tmp_path.iterdir())


def test_known_opsets_match_torch_and_the_manifest_records_the_files_opset(monkeypatch, tmp_path):
    """--opset beyond torch's exporter is refused at the CLI (above); and what the manifest records is the opset the
    file holds (torch settles on 18 when it cannot convert to the one asked for), not the one requested."""
    import onnx
    import torch.onnx._constants as onnx_constants
    from onnx import TensorProto, helper

    from edgeseg.backends.onnx.export import export_onnx
    from edgeseg.export_request import MAX_OPSET

    assert onnx_constants.ONNX_MAX_OPSET == MAX_OPSET

    def exporter_keeping_18(module, args, path, **kwargs):  # what torch's exporter does for --opset 99
        io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("image", "logits")]
        graph = helper.make_graph([helper.make_node("Relu", ["image"], ["logits"])], "g", io[:1], io[1:])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)

    monkeypatch.setattr(torch.onnx, "export", exporter_keeping_18)
    info = export_onnx(torch.nn.ReLU(), torch.zeros(1, 3, 8, 8), tmp_path / "m.onnx", 99, "logits")
    assert info["opset"] == 18


def test_runs_never_outlast_max_seconds():
    """--runs 1000000000 with --max-seconds 1: the timed loop stops on time, before min_runs."""
    from edgeseg.bench.stats import TimingPlan, measure

    clock = iter(np.arange(0, 1e6, 0.05))
    calls = []

    def fn():
        calls.append(1)
        if len(calls) > 10_000:
            raise AssertionError("max_seconds ignored")

    plan = TimingPlan(warmup=1_000_000_000, min_runs=1_000_000_000, max_runs=1_000_000_000, max_seconds=1.0)
    timing = measure(fn, plan, timer=lambda: float(next(clock)))
    assert timing.stop == "max-seconds"
    assert len(calls) < 100 and timing.stats.warmup < 100


def test_os_errors_and_image_bombs_become_one_line(capsys):
    from edgeseg.cli.common import user_errors

    def raising(exc):
        @user_errors
        def command():
            raise exc

        with pytest.raises(typer.Exit) as info:
            command()
        return info.value.exit_code, capsys.readouterr().err

    code, err = raising(PermissionError(errno.EACCES, "Permission denied", "/data/out/report.json"))
    assert code == 2 and err.startswith("error: permission denied: /data/out/report.json") and err.count("\n") == 1
    code, err = raising(OSError(errno.ENOSPC, "No space left on device", "/tmp/x.json"))
    assert code == 2 and "no space left" in err and "/tmp/x.json" in err and "free there" in err
    code, err = raising(Image.DecompressionBombError("Image size (10000000000 pixels) exceeds limit"))
    assert code == 2 and err.startswith("error: Image size") and err.count("\n") == 1


def test_json_that_is_a_folder_or_under_a_file_is_one_line(weights, tmp_path):
    (tmp_path / "folder.json").mkdir()
    result, text = run("eval", *B0, "--weights", weights, "--limit", "1", "--json", tmp_path / "folder.json")
    assert_user_error(result, text, "folder.json is a folder")
    (tmp_path / "afile").write_text("x")
    result, text = run("eval", *B0, "--weights", weights, "--limit", "1", "--json", tmp_path / "afile" / "r.json")
    assert_user_error(result, text, "afile")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder.json"]


def test_decompression_bomb_image_is_one_line(weights, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    bomb_png(images / "bomb.png")
    result, text = run("predict", *B0, "--weights", weights, "--images", images, "--out", tmp_path / "pred")
    assert_user_error(result, text, "bomb.png", "too many pixels (10,000,000,000 pixels)", "limit is 89,478,485")
    assert not (tmp_path / "pred").exists()


# ------------------------------------------------------------------------------ inputs are never overwritten


@pytest.fixture
def photo_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(folder / "photo.png")
    return folder


@pytest.mark.parametrize(("out", "relation"), [(".", "is"), ("pred", "lies inside"), ("..", "contains")])
def test_predict_refuses_an_out_overlapping_its_images(weights, photo_folder, out, relation):
    before = (photo_folder / "photo.png").read_bytes()
    result, text = run("predict", *B0, "--weights", weights, "--images", photo_folder, "--out", photo_folder / out)
    assert_user_error(result, text, relation, "--images")
    assert (photo_folder / "photo.png").read_bytes() == before
    assert sorted(p.name for p in photo_folder.iterdir()) == ["photo.png"]


def test_predict_replaces_its_own_outputs_but_not_other_files_unless_forced(weights, photo_folder, tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    shutil.copy(photo_folder / "photo.png", out / "photo.png")  # somebody's file where a label map would go
    before = (out / "photo.png").read_bytes()
    args = ("predict", *B0, "--weights", weights, "--images", photo_folder, "--out", out)
    result, text = run(*args)
    assert_user_error(result, text, "would overwrite", "photo.png", "--force")
    assert (out / "photo.png").read_bytes() == before
    result, text = run(*args, "--force")
    assert result.exit_code == 0, text
    assert Image.open(out / "photo.png").mode == "L"
    result, text = run(*args)  # its own output: replaced without --force
    assert result.exit_code == 0, text


def test_json_never_replaces_a_file_that_is_not_a_report(weights, tmp_path):
    image = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(image)
    before = image.read_bytes()
    result, text = run("eval", *B0, "--weights", weights, "--limit", "1", "--json", image)
    assert_user_error(result, text, "photo.png", "not a JSON report")
    assert image.read_bytes() == before


def test_staging_never_replaces_a_folder_edgeseg_did_not_write(tmp_path):
    from edgeseg.artifact import staging

    folder = tmp_path / "efficientvit-b0-camvid-onnx-fp32-96x128"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(EdgesegError, match="not an artifact folder"):
        with staging(folder):
            pass
    assert (folder / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


# ------------------------------------------------------------------------------ interruption


def test_an_interrupt_wrapped_by_torch_export_is_not_swallowed_by_the_fallback(monkeypatch, tmp_path):
    """A KeyboardInterrupt landing in torch's lazy imports surfaces as TorchExportError <- AttributeError <-
    KeyboardInterrupt: the TorchScript fallback must not run."""
    from edgeseg.backends.onnx.export import export_onnx

    calls = []

    def fake_export(*args, dynamo=True, **kwargs):
        calls.append(dynamo)
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            try:
                raise AttributeError("partially initialized module 'torch._dynamo'")
            except AttributeError as inner:
                raise RuntimeError("Failed to export the model with torch.export") from inner

    monkeypatch.setattr(torch.onnx, "export", fake_export)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(torch.nn.Conv2d(3, 2, 1), torch.zeros(1, 3, 8, 8), tmp_path / "m.onnx", 18, "logits")
    assert calls == [True]  # the legacy exporter never ran


_SLOW_EXPORT = r"""
import sys, time
from edgeseg.backends.onnx import OnnxBackend

def slow_build(self, job):
    (job.folder / "model.onnx").write_bytes(b"half-written")
    time.sleep(120)

OnnxBackend.build = slow_build
from edgeseg.cli import main
sys.argv = ["edgeseg", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_a_signal_during_export_exits_with_its_code_and_leaves_no_staging(tmp_path, sig, code, word):
    script = tmp_path / "slow_export.py"
    script.write_text(_SLOW_EXPORT)
    out = tmp_path / "artifacts"
    stderr = (tmp_path / "stderr.txt").open("w")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [*B0, "--weights", "random", "-t", "onnx-fp32", "--size", "64x64", "--parity-images", "1", "--out", out]
    # started as a shell starts a background job: SIGINT ignored (edgeseg must still stop on it)
    proc = subprocess.Popen(
        [sys.executable, str(script), "export", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".*.tmp/model.onnx")):  # the export is inside its staging folder
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr.txt").read_text()
            time.sleep(0.1)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in text and f"({word})" in text
    assert [line for line in text.splitlines() if line.startswith("error:")] == [text.strip().splitlines()[-1]]
    assert list(out.iterdir()) == []  # no staging folder, no artifact


def test_stale_staging_from_a_killed_process_is_removed_live_ones_kept(tmp_path):
    from edgeseg.artifact import _lock, staging

    folder = tmp_path / "art"
    stale, young, live = (tmp_path / f".art.{k}.tmp" for k in ("stale", "young", "live"))
    for d in (stale, young, live):
        d.mkdir()
        (d / "model.onnx").write_bytes(b"x")
    old = time.time() - 3600
    for d in (stale, live):
        os.utime(d, (old, old))
    lock = _lock(live)  # a running export holds its staging folder locked
    try:
        with staging(folder) as tmp:
            (tmp / "manifest.json").write_text("{}")
    finally:
        os.close(lock)
    assert not stale.exists() and young.exists() and live.exists() and folder.is_dir()


# ------------------------------------------------------------------------------ disk full, unwritable outputs


def test_export_refuses_before_writing_when_the_disk_is_too_full(monkeypatch, tmp_path):
    """litert-torch aborts the process (LLVM fatal error) on ENOSPC: the free space is checked before writing."""
    from edgeseg.backends import backend_for

    missing = backend_for("tflite").missing_packages("fp32")
    if missing:
        pytest.skip(f"TFLite export needs {', '.join(missing)}")
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1_000_000))
    out = tmp_path / "artifacts"
    args = ("--size", "64x64", "--parity-images", "1", "--out", out)
    result, text = run("export", *B0, "--weights", "random", "-t", "tflite-fp32", *args)
    assert_user_error(result, text, "not enough space", str(out), "MB needed", "1.0 MB free")
    assert not out.exists() or list(out.iterdir()) == []


def test_a_full_disk_during_a_write_names_the_path_and_leaves_nothing(monkeypatch, tmp_path):
    from edgeseg.io import atomic_write_bytes

    def full(self, data):
        Path.write_text(self, "partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(EdgesegError, match=r"no space left on the device writing .*report.json \(.* free there\)"):
        atomic_write_bytes(tmp_path / "report.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_outputs_are_one_line(weights, photo_folder, tmp_path):
    (tmp_path / "a-file").write_text("x")
    result, text = run("predict", *B0, "--weights", weights, "--images", photo_folder, "--out", tmp_path / "a-file")
    assert_user_error(result, text, "a-file is a file")
    if os.geteuid() == 0:
        return  # root writes through permissions: the read-only folder case below cannot happen here
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    result, text = run("eval", *B0, "--weights", weights, "--limit", "1", "--json", ro / "r.json")
    assert_user_error(result, text, "permission denied", "r.json")


# ------------------------------------------------------------------------------ data validation


def test_labels_outside_the_classes_are_an_error_or_a_counted_warning(weights, tmp_path):
    data = tiny_dataset(tmp_path / "data", label_values=(3, 200))
    args = ("eval", *B0, "--weights", weights, "--data", data)
    result, text = run(*args)
    assert_user_error(result, text, "im0.png", "200", "0..10", "--ignore-invalid-labels")
    result, text = run(*args, "--ignore-invalid-labels", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, text
    assert "warning: 4,096 label pixels in 2 file(s)" in text
    assert json.loads((tmp_path / "r.json").read_text())["invalid_label_pixels"] == 2 * 32 * 64


def test_16bit_labels_do_not_alias(tmp_path):
    from edgeseg.data.datasets import read_label

    (tmp_path / "big.png").write_bytes(png16(np.array([[3, 259], [11, 0]], dtype=np.uint16)))
    with pytest.raises(EdgesegError, match=r"big.png holds class indices above 255 \(259\)"):
        read_label(tmp_path / "big.png")
    (tmp_path / "ok.png").write_bytes(png16(np.array([[3, 11], [0, 1]], dtype=np.uint16)))
    label = read_label(tmp_path / "ok.png")
    assert label.dtype == np.uint8 and label.tolist() == [[3, 11], [0, 1]]


def test_16bit_images_are_scaled_not_clipped(tmp_path):
    from edgeseg.data.datasets import read_image

    grey = np.array([[0, 32896, 65535, 257]], dtype=np.uint16)
    (tmp_path / "grey16.png").write_bytes(png16(grey))
    assert read_image(tmp_path / "grey16.png")[0, :, 0].tolist() == [0, 128, 255, 1]
    rgb8 = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    (tmp_path / "rgb16.png").write_bytes(png16(rgb8.astype(np.uint16) * 257))  # the same picture at 16 bits
    assert np.array_equal(read_image(tmp_path / "rgb16.png"), rgb8)
    (tmp_path / "unscaled16.png").write_bytes(png16(rgb8.astype(np.uint16)))  # 8-bit values in a 16-bit file
    with pytest.raises(EdgesegError, match="unscaled16.png is a 16-bit file whose values all lie below 256"):
        read_image(tmp_path / "unscaled16.png")


def test_pixel_bombs_are_refused_for_images_and_labels(tmp_path):
    from edgeseg.data.datasets import read_image, read_label

    bomb = bomb_png(tmp_path / "bomb.png", 20_000, 5_000)  # 100 M pixels: over the limit, under PIL's error
    for read in (read_image, read_label):
        with pytest.raises(EdgesegError, match=r"bomb.png declares too many pixels \(20000x5000\)"):
            read(bomb)


def test_weights_with_nan_are_refused_naming_the_tensors(tmp_path):
    from edgeseg.models.registry import create_model

    model, _ = create_model("efficientvit-b0", "camvid")
    state = model.state_dict()
    floats = [k for k, v in state.items() if v.is_floating_point()]
    key_nan, key_inf = floats[3], floats[-1]
    state[key_nan] = state[key_nan].clone().fill_(float("nan"))
    state[key_inf] = state[key_inf].clone().fill_(float("inf"))
    torch.save(state, tmp_path / "nan.pt")
    result, text = run("eval", *B0, "--weights", tmp_path / "nan.pt")
    assert_user_error(result, text, "NaN or infinite", "2 tensor(s)", key_nan, key_inf)


def test_parity_with_nan_outputs_fails():
    from edgeseg.eval.parity import compare

    image = np.zeros((32, 32, 3), dtype=np.uint8)
    reference = lambda x: torch.zeros(1, 3, 4, 4)  # noqa: E731
    candidate = lambda x: torch.full((1, 3, 4, 4), float("nan"))  # noqa: E731
    with pytest.raises(EdgesegError, match="the exported model outputs NaN or infinite logits"):
        compare(reference, candidate, [image], (32, 32))


# ------------------------------------------------------------------------------ permissions


def test_artifact_folders_get_umask_permissions_like_their_files(tmp_path):
    from edgeseg.artifact import staging

    mask = os.umask(0o022)
    try:
        with staging(tmp_path / "art") as tmp:
            (tmp / "manifest.json").write_text("{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "art").stat().st_mode & 0o777 == 0o755


def test_calibration_refuses_a_huge_non_image_before_reading_it_whole(tmp_path):
    """A 1 GB sparse file named .jpg among the calibration images: one line, and the file is never read into memory
    (it used to be hashed with read_bytes before anything decoded it)."""
    import tracemalloc

    from edgeseg.data.datasets import CAMVID
    from edgeseg.quantize.calibration import select_calibration

    images, labels = tmp_path / "train" / "images", tmp_path / "train" / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((32, 48, 3), 40 * i, np.uint8)).save(images / f"a_{i}.png")
        Image.fromarray(np.full((32, 48), i, np.uint8)).save(labels / f"a_{i}.png")
    with open(images / "huge.jpg", "wb") as f:
        f.truncate(1 << 30)
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(labels / "huge.png")
    tracemalloc.start()
    try:
        with pytest.raises(EdgesegError, match="huge.jpg"):
            select_calibration(tmp_path, CAMVID, size=4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak / 2**20:.0f} MiB"


def test_train_never_restarts_over_an_earlier_run_and_json_never_replaces_a_manifest(camvid, tmp_path):
    from edgeseg.cli.common import check_json_out
    from edgeseg.train.trainer import TrainConfig, train

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {}}, run / "last.pt")
    before = (run / "last.pt").read_bytes()
    cfg = TrainConfig(model="efficientvit-b0", dataset="camvid", data=str(camvid), out=str(run), epochs=1)
    with pytest.raises(EdgesegError, match="holds a training run already .* pass --resume"):
        train(cfg)
    assert (run / "last.pt").read_bytes() == before

    manifest = tmp_path / "art" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"target": "onnx-fp32", "sha256": "ab" * 32, "file": "model.onnx"}))
    with pytest.raises(EdgesegError, match="is an artifact's manifest"):
        check_json_out(manifest)
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"miou": 0.5}))
    assert check_json_out(report) == report  # an earlier report is replaced


def test_bench_never_replaces_a_report_it_did_not_write(tmp_path):
    """A user's own report.html in the --report folder is refused before any timing; an earlier edgeseg report in
    the same folder is replaced."""
    from edgeseg.bench.report import refuse_foreign_reports

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("<html><body>quarterly numbers</body></html>")
    result = CliRunner().invoke(app, ["bench", "--device", "host", "--artifact", str(tmp_path), "--report", str(mine)])
    assert result.exit_code == 2 and "report.html, which edgeseg bench did not write" in result.output
    assert (mine / "report.html").read_text() == "<html><body>quarterly numbers</body></html>"
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "bench.md").write_text("# edgeseg bench: efficientvit-b0 on host\n")
    (earlier / "bench.json").write_text('{"schema_version": 4}')
    refuse_foreign_reports(earlier)  # replaced without a word
