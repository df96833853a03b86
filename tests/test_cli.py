"""The command line: user errors are one line, exit != 0, no traceback; eval/predict work end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.models.registry import create_model
from edgeseg.paths import SAMPLE_DATA

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args))
    return result, result.output  # click >= 8.2 mixes stderr into output


def assert_user_error(result, text, *needles):
    assert result.exit_code == 2, text
    assert "Traceback" not in text
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert text.strip().count("\n") == 0 and text.startswith("error: "), text
    for needle in needles:
        assert needle in text, text


@pytest.fixture(scope="module")
def random_weights(random_b0_weights):
    return random_b0_weights


def test_unknown_model_lists_valid_names():
    result, text = run("eval", "--model", "efficientvit-b9", "--weights", "x.pt")
    assert_user_error(result, text, "unknown model 'efficientvit-b9'", "efficientvit-b0", "efficientvit-l2")


def test_missing_weights_file():
    result, text = run("eval", "--model", "efficientvit-b0", "--weights", "nope/missing.pt")
    assert_user_error(result, text, "weights file not found", "missing.pt")


def test_wrong_keys_state_dict_names_the_keys(tmp_path):
    model, _ = create_model("efficientvit-b0", "camvid")
    state = model.state_dict()
    state["backbone.bogus.weight"] = torch.zeros(2)
    del state["head.middle.op_list.0.main.depth_conv.conv.weight"]
    torch.save(state, tmp_path / "bad.pt")
    result, text = run("eval", "--model", "efficientvit-b0", "--weights", str(tmp_path / "bad.pt"))
    assert_user_error(result, text, "head.middle.op_list.0.main.depth_conv.conv.weight", "backbone.bogus.weight")


def test_weights_for_another_head_are_refused(random_weights):
    result, text = run(
        "eval", "--model", "efficientvit-b0", "--dataset", "cityscapes", "--weights", str(random_weights)
    )
    assert_user_error(result, text, "shape mismatch", "(11, 128, 1, 1) vs model (19, 128, 1, 1)")


def test_corrupt_weights_file(tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    result, text = run("eval", "--model", "efficientvit-b0", "--weights", str(tmp_path / "corrupt.pt"))
    assert_user_error(result, text, "not a valid PyTorch checkpoint")


def test_size_not_multiple_of_32_is_explained(random_weights):
    result, text = run("eval", "--model", "efficientvit-b0", "--weights", str(random_weights), "--size", "500x1000")
    assert_user_error(result, text, "500x1000 is not a multiple of 32", "512x1024")


def test_missing_data_folder(random_weights, tmp_path):
    result, text = run(
        "eval", "--model", "efficientvit-b0", "--weights", str(random_weights), "--data", str(tmp_path / "nowhere")
    )
    assert_user_error(result, text, "val/images")


def test_console_script_error_has_no_traceback():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeseg",
            "predict",
            "--model",
            "segformer-b7",
            "--weights",
            "camvid",
            "--images",
            ".",
            "--out",
            "x",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "unknown model 'segformer-b7'" in proc.stderr


def test_eval_writes_json_report(random_weights, tmp_path):
    out = tmp_path / "eval.json"
    result, text = run(
        "eval", "--model", "efficientvit-b0", "--weights", str(random_weights), "--limit", "1", "--json", str(out)
    )
    assert result.exit_code == 0, text
    report = json.loads(out.read_text())
    assert report["images"] == 1 and 0 <= report["miou"] <= 1
    assert set(report["iou"]) >= {"sky", "pole", "bicyclist"}
    assert "padded to 384x480" in report["input"]


def test_predict_writes_label_maps_of_input_size(random_weights, tmp_path):
    images = SAMPLE_DATA / "val" / "images"
    result, text = run(
        "predict",
        "--model",
        "efficientvit-b0",
        "--weights",
        str(random_weights),
        "--images",
        str(images),
        "--out",
        str(tmp_path / "pred"),
        "--overlay",
    )
    assert result.exit_code == 0, text
    for src in sorted(images.iterdir()):
        label = Image.open(tmp_path / "pred" / f"{src.stem}.png")
        assert label.mode == "L" and label.size == Image.open(src).size
        assert np.asarray(label).max() < 11
        assert (tmp_path / "pred" / "overlay" / f"{src.stem}.png").is_file()
    assert not list((tmp_path / "pred").glob("*.tmp"))


def test_models_table_lists_every_variant(tmp_path):
    result, text = run("models", "--json", str(tmp_path / "m.json"))
    assert result.exit_code == 0, text
    rows = json.loads((tmp_path / "m.json").read_text())["models"]
    names = {(r["model"], r["dataset"]) for r in rows}
    assert ("efficientvit-b0", "camvid") in names and ("efficientvit-l2", "ade20k") in names
    assert ("efficientvit-b0", "ade20k") not in names
    b0 = next(r for r in rows if (r["model"], r["dataset"]) == ("efficientvit-b0", "cityscapes"))
    assert abs(b0["gmacs"] - 4.39) < 0.01 and b0["input"] == "1024x2048"


def test_renamed_commands_keep_their_old_names_as_hidden_aliases(tmp_path):
    """`edgeseg op-profile` (was `profile`, a word that also names a device profile) and `edgeseg fit-latency` (was
    `calibrate`, a word that also names INT8 calibration): the old names still run, hidden from --help, after a
    one-line note on stderr naming the new one."""
    listed = [line.strip("│ ").split(" ")[0] for line in runner.invoke(app, ["--help"]).output.splitlines()]
    assert "op-profile" in listed and "fit-latency" in listed
    assert "profile" not in listed and "calibrate" not in listed
    for old, new, args, needle in (
        ("profile", "op-profile", [str(tmp_path / "missing")], "artifact not found"),
        ("calibrate", "fit-latency", ["--device", "pixel-8", "--from", "published"], "no estimator data"),
    ):
        result = runner.invoke(app, [old, *args])
        assert result.exit_code == 2 and needle in result.output, result.output
        note, error = result.stderr.strip().split("\n")
        assert note == f"note: `edgeseg {old}` is deprecated and will be removed: use `edgeseg {new}`"
        assert error.startswith("error: ") and needle in error
        result = runner.invoke(app, [new, *args])
        assert result.exit_code == 2 and "deprecated" not in result.output and needle in result.output
