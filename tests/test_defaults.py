"""The headline commands on their defaults, in an empty folder: shipped weights when --weights is left out, an
explicit untrained init with --weights random (marked, no mIoU), and `edgeseg check` with no config."""

import json
import os

import pytest
from typer.testing import CliRunner

from edgeseg.cli import app

SIZE = "96x128"
runner = CliRunner()


@pytest.fixture
def empty_folder(tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(cwd)


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_export_without_weights_uses_the_shipped_ones_and_says_which(empty_folder):
    from edgeseg.models.weights import registered_tags

    r = runner.invoke(app, ["export", "--model", "efficientvit-b0", "--target", "onnx-fp32", "--size", SIZE])
    assert r.exit_code == 0, r.output
    sha = registered_tags("efficientvit-b0")["camvid"]["sha256"]
    assert f"weights: shipped efficientvit-b0 camvid (sha256 {sha[:12]})" in r.output
    m = _manifest(empty_folder / "artifacts" / f"efficientvit-b0-camvid-onnx-fp32-{SIZE}")
    assert m["weights"]["tag"] == "camvid" and m["weights"]["sha256"] == sha and not m["untrained"]
    assert m["parity"]["miou_reference"] is not None


def test_a_model_without_shipped_weights_names_the_choices(empty_folder):
    r = runner.invoke(app, ["export", "--model", "lvt", "--target", "onnx-fp32", "--size", SIZE])
    assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.strip().count("\n") == 0, r.output
    assert "--weights random" in r.output and "--weights PATH.pt" in r.output
    assert not (empty_folder / "artifacts").exists()


def test_random_weights_are_seeded_marked_untrained_and_show_no_miou(empty_folder):
    args = ["export", "--model", "lvt", "--weights", "random", "--target", "onnx-fp32", "--size", SIZE]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "untrained" in r.output
    folder = empty_folder / "artifacts" / f"lvt-camvid-onnx-fp32-{SIZE}-random"
    m = _manifest(folder)
    assert m["untrained"] and m["weights"]["tag"] == "random" and m["weights"]["seed"] == 0
    assert m["lint"]["clean"] and m["parity"]["argmax_agreement"] >= 0.999  # the graph still matches PyTorch
    assert m["parity"]["miou_reference"] is None and m["parity"]["miou_candidate"] is None

    again = runner.invoke(app, [*args, "--force"])  # seeded: the same weights, so the same graph bytes
    assert again.exit_code == 0 and _manifest(folder)["sha256"] == m["sha256"]

    ev = runner.invoke(app, ["eval", "--artifact", str(folder)])
    assert ev.exit_code == 2 and "untrained" in ev.output
    ev = runner.invoke(app, ["eval", "--model", "lvt", "--weights", "random"])
    assert ev.exit_code == 2 and "untrained" in ev.output

    # check with no config gates it on what applies to untrained weights, and needs no baseline to pass
    ck = runner.invoke(app, ["check"])
    assert ck.exit_code == 0, ck.output
    assert (empty_folder / "check.md").is_file() and "1/1 rows passed" in ck.output
    md = (empty_folder / "check.md").read_text()
    assert "no baseline yet" in md and "untrained" in md


def test_check_without_config_or_artifacts_says_what_to_do(empty_folder):
    r = runner.invoke(app, ["check"])
    assert r.exit_code == 2 and "no artifacts under artifacts/" in r.output and "edgeseg export" in r.output


def test_check_without_config_then_with_a_recorded_baseline(empty_folder):
    # the dataset's input size: a baseline is recorded only when every row passes (the host's mIoU floor)
    r = runner.invoke(app, ["export", "--model", "efficientvit-b0", "--target", "onnx-fp32"])
    assert r.exit_code == 0, r.output
    ck = runner.invoke(app, ["check", "--update-baseline"])
    assert (empty_folder / "baseline.json").is_file(), ck.output
    ck = runner.invoke(app, ["check"])
    md = (empty_folder / "check.md").read_text()
    assert "no baseline yet" not in md and "same artifact as the baseline" in md, md


def test_output_folders_that_are_files_and_broken_artifacts_are_one_line_errors(empty_folder):
    (empty_folder / "afile").write_text("not a folder")
    for args, needle in [
        (["export", "--model", "efficientvit-b0", "--target", "onnx-fp32", "--out", "afile"], "--out afile is a file"),
        (["bench", "--device", "host", "--artifacts-dir", "afile"], "--artifacts-dir afile is a file"),
        (["bench", "--device", "host", "--report", "afile"], "--report afile is a file"),
        (["check", "--artifacts-dir", "afile"], "--artifacts-dir afile is a file"),
        (["quantize", "--model", "efficientvit-b0", "--target", "onnx-fp32"], "not an INT8 target"),
    ]:
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.strip().count("\n") == 0, r.output
        assert needle in r.output, r.output
    assert (empty_folder / "afile").read_text() == "not a folder" and not (empty_folder / "bench").exists()

    broken = empty_folder / "artifacts" / "broken"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{")
    r = runner.invoke(app, ["check"])
    assert r.exit_code == 2 and "corrupt manifest" in r.output and "or remove" in r.output, r.output
    assert "check config" not in r.output  # no config was given: none is named
