"""--num-classes and --classes for a user's own model (--model PATH.py:NAME): NAME(num_classes=N), the class names
of its "custom" label set in eval, predict's legend, bench and the artifact's manifest, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.errors import EdgesegError
from edgeseg.models.user import UserModelOptions, parse_model_options, user_model_options

USER_FILE = """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.input_size = (32, 32)
        self.embed = nn.Conv2d(3, 8, 4, 4)
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        return self.head(self.embed(x).relu())

def build(num_classes=4):
    return Net(num_classes)

def fixed():
    return Net(4)

def ignores(num_classes=4):
    return Net(4)
"""



@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "seg_net.py"
    path.write_text(USER_FILE)
    return path


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(r, expect: str) -> None:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.output, r.output
    assert expect in r.output, r.output


def _labelled_data(root: Path, classes: int) -> Path:
    """Two 32x32 images with labels 0..classes-1 (and an ignored border)."""
    g = np.random.default_rng(0)
    for split in ("val",):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(g.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / split / "images" / f"f{i}.png")
            label = g.integers(0, classes, (32, 32)).astype(np.uint8)
            label[:2] = 255
            Image.fromarray(label).save(root / split / "labels" / f"f{i}.png")
    return root


def test_num_classes_calls_name_with_it(user_file):
    from edgeseg.commands.evaluate import load_model

    with user_model_options(UserModelOptions(num_classes=6)):
        loaded = load_model(f"{user_file}:build", None, None)
    assert loaded.name.endswith("-c6") and loaded.dataset == "custom"
    assert loaded.spec.num_classes == 6 and loaded.spec.classes[0] == "class0"
    assert loaded.model(torch.zeros(1, 3, 32, 32)).shape == (1, 6, 8, 8)
    plain = load_model(f"{user_file}:build", None, None)  # without the option: NAME() as written
    assert plain.spec.num_classes == 4 and plain.name != loaded.name


def test_class_names_reach_eval_predict_and_the_manifest(user_file, tmp_path):
    """--num-classes 3 --classes road,car,person: the export's manifest records the names and colours, eval of the
    artifact reports per-class IoU under them, predict's overlays come with a legend, bench's report lists them,
    and another set of names is another export (not the cached one)."""
    spec = f"{user_file}:build"
    out = tmp_path / "a"
    r = _run(
        "export",
        "--model",
        spec,
        "--num-classes",
        3,
        "--classes",
        "road,car,person",
        "--target",
        "onnx-fp32",
        "--out",
        out,
        "--parity-images",
        1,
    )
    assert r.exit_code == 0, r.output
    (manifest_path,) = out.glob("*/manifest.json")
    m = json.loads(manifest_path.read_text())
    assert m["model"].endswith("-c3") and m["classes"] == ["road", "car", "person"] and len(m["palette"]) == 3
    assert m["output"]["shape"] == [1, 3, 8, 8]

    data = _labelled_data(tmp_path / "data", 3)
    r = _run("eval", "--artifact", manifest_path.parent, "--data", data, "--json", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    assert list(json.loads((tmp_path / "e.json").read_text())["iou"]) == ["road", "car", "person"]
    r = _run(
        "eval",
        "--model",
        spec,
        "--num-classes",
        3,
        "--classes",
        "road,car,person",
        "--data",
        data,
        "--json",
        tmp_path / "e2.json",
    )
    assert r.exit_code == 0, r.output
    assert list(json.loads((tmp_path / "e2.json").read_text())["iou"]) == ["road", "car", "person"]

    r = _run(
        "predict",
        "--artifact",
        manifest_path.parent,
        "--images",
        data / "val" / "images",
        "--out",
        tmp_path / "pred",
        "--overlay",
    )
    assert r.exit_code == 0, r.output
    legend = Image.open(tmp_path / "pred" / "overlay" / "legend.png")
    assert legend.height >= 3 * 20  # one row per class
    pixels = {tuple(int(v) for v in p) for p in np.asarray(legend.convert("RGB")).reshape(-1, 3)}
    assert {tuple(c) for c in m["palette"]} <= pixels  # each class's colour is drawn

    r = _run(
        "bench",
        "--device",
        "host",
        "--artifact",
        manifest_path.parent,
        "--report",
        tmp_path / "rep",
        "--max-seconds",
        1,
    )
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "rep" / "bench.json").read_text())["model"]["classes"] == ["road", "car", "person"]
    assert "person</span>" in (tmp_path / "rep" / "report.html").read_text()

    from edgeseg.models import registry

    registry.MODELS.pop(m["model"]), registry._USER_SPECS.pop(m["model"])  # as a new process would start
    r = _run(
        "export",
        "--model",
        spec,
        "--num-classes",
        3,
        "--classes",
        "sky,tree,grass",
        "--target",
        "onnx-fp32",
        "--out",
        out,
        "--parity-images",
        1,
    )
    assert r.exit_code == 0, r.output
    (again,) = out.glob("*/manifest.json")  # the same folder, exported again: the names are part of the cache key
    assert again == manifest_path and json.loads(again.read_text())["classes"] == ["sky", "tree", "grass"]


def test_class_files(tmp_path):
    (tmp_path / "c.txt").write_text("road\ncar\nperson\n\n")
    assert parse_model_options(None, str(tmp_path / "c.txt")).classes == ("road", "car", "person")
    (tmp_path / "l.yaml").write_text("- road\n- car\n")
    assert parse_model_options(2, str(tmp_path / "l.yaml")).classes == ("road", "car")
    (tmp_path / "m.yaml").write_text("names: [road, car]\ncolors: [[1, 2, 3], [4, 5, 6]]\n")
    options = parse_model_options(None, str(tmp_path / "m.yaml"))
    assert options.classes == ("road", "car") and options.palette == ((1, 2, 3), (4, 5, 6))
    assert parse_model_options(None, "road, car ,person").classes == ("road", "car", "person")
    bad = {
        "gap.txt": ("road\n\ncar\n", "name 2 is empty"),
        "colors.yaml": ("names: [road, car]\ncolors: [[1, 2, 3]]\n", "one [r, g, b]"),
        "keys.yaml": ("labels: [road]\n", "unknown key(s): labels"),
        "broken.yaml": ("names: [road\n", "not valid YAML"),
        "nested.yaml": ("- [road]\n", "expected a YAML list of class names"),
    }
    for name, (text, expect) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(EdgesegError, match=expect.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            parse_model_options(None, str(tmp_path / name))


@pytest.mark.parametrize(
    "name, args, expect",
    [
        ("fixed", ["--num-classes", "5"], "fixed takes no num_classes argument: add a num_classes parameter"),
        ("ignores", ["--num-classes", "5"], "ignores(num_classes=5) returns 4 output channels"),
        ("build", ["--num-classes", "0"], "--num-classes must be at least 1"),
        ("build", ["--classes", "a,,b,c"], "name 2 is empty"),
        ("build", ["--classes", "a,b,a,c"], "class 'a' is named twice"),
        ("build", ["--classes", "missing/classes.txt"], "file not found"),
        (
            "build",
            ["--classes", "a,b"],
            "names 2 classes but build returns 4 output channels: give 4 names, or pass --num-classes 2",
        ),
        ("fixed", ["--classes", "a,b"], "give 4 names"),
        ("build", ["--num-classes", "3", "--classes", "a,b"], "but --num-classes is 3: give 3 names"),
        ("build", ["--classes", "a,b,c,d", "--dataset", "camvid"], "--dataset camvid has its own"),
    ],
)
def test_bad_options_are_one_line_errors(user_file, name, args, expect):
    r = _run("rewrites", "--model", f"{user_file}:{name}", *args)
    _one_line_error(r, expect)
    assert not (user_file.parent / "a").exists()


def test_options_need_a_user_model(tmp_path):
    _one_line_error(_run("rewrites", "--model", "efficientvit-b0", "--classes", "a,b"), "apply to your own model")
    _one_line_error(
        _run("eval", "--artifact", tmp_path, "--num-classes", "3"), "an artifact keeps the classes it was exported with"
    )


def test_every_command_taking_model_takes_the_class_options():
    import typer

    def commands(group, prefix=""):
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                yield from commands(cmd, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", {o for p in cmd.params for o in getattr(p, "opts", [])}

    with_model = {name: opts for name, opts in commands(typer.main.get_command(app)) if "--model" in opts}
    assert {"export", "eval", "predict", "bench", "rewrites"} <= set(with_model)
    assert all({"--num-classes", "--classes"} <= opts for opts in with_model.values()), with_model


def test_the_example_families_take_num_classes():
    from edgeseg.commands.evaluate import load_model

    examples = Path(__file__).resolve().parent.parent / "examples" / "byom_models.py"
    with user_model_options(parse_model_options(3, "road,car,person")):
        loaded = load_model(f"{examples}:swin", None, None)
    assert loaded.name == "user-byom-models-swin-c3" and loaded.spec.classes == ("road", "car", "person")
    assert loaded.model(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 16, 16)


def test_export_size_is_a_multiple_of_the_user_models_stride(user_file):
    """A stride-4 user model takes 36x44 (not a multiple of 32, which only edgeseg's own models need); 38x44 is a
    one-line error naming its stride and the nearest sizes."""
    r = _run("rewrites", "--model", f"{user_file}:fixed", "--size", "36x44")
    assert r.exit_code == 0, r.output
    r = _run("rewrites", "--model", f"{user_file}:fixed", "--size", "38x44")
    _one_line_error(r, "38x44 is not a multiple of 4 (the output stride of")
    assert "use 40x44 or 36x44" in r.output
    r = _run("rewrites", "--model", "efficientvit-b0", "--size", "36x44")
    _one_line_error(r, "36x44 is not a multiple of 32 (edgeseg's models downsample 32x)")


def _check_config(tmp_path: Path, model: dict, data: Path) -> Path:
    import yaml

    config = {
        "data": str(data),
        "parity_images": 2,
        "out": str(tmp_path / "artifacts"),
        "timing": {"warmup": 1, "runs": 2, "rounds": 1},
        "models": [{"weights": "random", "targets": ["onnx-fp32"], **model}],
    }
    path = tmp_path / "edgeseg.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_check_config_sets_num_classes_and_class_names(user_file, tmp_path):
    """A check config's models entry takes num_classes and classes as --num-classes / --classes do (a class file
    beside the config); the artifact's manifest carries the names and the head has that many channels."""
    data = _labelled_data(tmp_path / "data", 3)
    (tmp_path / "names.txt").write_text("road\ncar\nperson\n")
    model = {"name": f"{user_file}:build", "num_classes": 3, "classes": "names.txt"}
    config = _check_config(tmp_path, model, data)
    r = _run("check", "--config", config, "--update-baseline", "--markdown", tmp_path / "check.md")
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    manifests = list((tmp_path / "artifacts").glob("*/manifest.json"))
    assert len(manifests) == 1, r.output
    m = json.loads(manifests[0].read_text())
    assert m["classes"] == ["road", "car", "person"] and m["output"]["shape"][1] == 3


@pytest.mark.parametrize(
    "model, expect",
    [
        ({"name": "efficientvit-b0", "classes": ["a", "b"]}, "models.0: num_classes / classes apply to your own model"),
        ({"num_classes": 3, "classes": ["road", "car"]}, "models.0: classes 'road,car' names 2 classes"),
        ({"classes": ["road", "road,car"]}, "models.0: class name 'road,car' holds a comma"),
    ],
)
def test_check_config_class_options_errors_are_one_line(user_file, tmp_path, model, expect):
    model = {"name": f"{user_file}:build", **model}
    config = _check_config(tmp_path, model, _labelled_data(tmp_path / "data", 3))
    _one_line_error(_run("check", "--config", config, "--update-baseline", "--markdown", tmp_path / "check.md"), expect)
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())
