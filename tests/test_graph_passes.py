"""Graph passes on captured programs (edgeseg.rewrite.graph) and bring-your-own-model (--model PATH.py:NAME).

Per family of examples/byom_models.py (written after the papers' public code): each pass's pattern is matched,
the rewritten program is exact on fresh random inputs with borders, and every tensor has rank <= 4 with no
hostile op left."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.errors import EdgesegError
from edgeseg.rewrite import graph as graph_mod
from edgeseg.rewrite.graph import GraphPass, passes, rewrite_graph

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "byom_models.py"
_spec = importlib.util.spec_from_file_location("byom_models_for_tests", EXAMPLES)
byom = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(byom)

SHAPE = (1, 3, 64, 64)


EXPECTED = {  # family -> the passes its hostile constructs need
    "swin": {
        "roll-as-slices",
        "constant-gather-fold",
        "select-rank-lower",
        "permute-rank-lower",
        "unit-dims-rank-lower",
    },
    "maxvit": {"constant-gather-fold", "select-rank-lower", "permute-rank-lower"},
    "halonet": {"im2col-as-conv", "constant-gather-fold", "permute-rank-lower"},
    "sasa": {"unfold-as-conv", "permute-rank-lower"},
    "gfnet": {"fft-filter-as-conv"},
    "botnet": {"einsum-region-as-matmul"},
}


def _fresh_inputs():
    g = torch.Generator().manual_seed(123)
    border = 5 * torch.randn(SHAPE, generator=g)
    border[..., :4, :] = 0  # a padded border, as fit_input pads images
    border[..., :, -8:] = -3
    return [torch.randn(SHAPE, generator=g), border]


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_family_rewritten_exact_rank4(family):
    torch.manual_seed(0)
    model = byom.FAMILIES[family]().eval()
    gm, report = rewrite_graph(model, SHAPE, family, "tflite-fp32")
    applied = {p["name"] for p in report["passes"] if p["applied"]}
    assert applied == EXPECTED[family]
    for p in report["passes"]:
        assert bool(p["matches"]) == (p["name"] in EXPECTED[family]), p
    assert report["before"]["max_rank"] > 4 or report["before"]["hostile_ops"]
    assert report["after"]["max_rank"] <= 4 and report["after"]["rank_over_4"] == []
    assert report["after"]["hostile_ops"] == {}
    with torch.no_grad():
        for x in _fresh_inputs():
            ref, out = model(x), gm(x)
            tol = 1e-5 * float(ref.abs().max()) if family in ("gfnet", "botnet") else 0.0
            assert float((out - ref).abs().max()) <= tol
            assert torch.equal(out.argmax(1), ref.argmax(1))
    # the rewritten module re-exports (the backends export it again), still rank <= 4
    again = torch.export.export(gm, (torch.zeros(SHAPE),))
    ranks = [len(n.meta["val"].shape) for n in again.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)]
    assert max(ranks) <= 4


def test_block_swaps_realise_any_permutation():
    sizes = [2, 3, 1, 4, 5, 2]
    x = torch.arange(240.0).reshape(sizes)
    for perm in ([0, 2, 4, 1, 3, 5], [5, 4, 3, 2, 1, 0], [1, 0, 3, 2, 5, 4], [0, 3, 1, 4, 2, 5]):
        y = x.reshape(-1)
        for dims in passes._block_swaps(sizes, perm):
            assert len(dims) == 4
            y = y.reshape(dims).permute(0, 2, 1, 3)
        assert torch.equal(y.reshape(-1), x.permute(perm).reshape(-1))


def test_inexact_pass_is_refused_not_applied(monkeypatch):
    """A pass whose rewrite changes the function is reported and left out; the result stays exact."""

    def wrong_roll(gm):
        found = passes.roll_to_slices(gm)
        for node in gm.graph.nodes:
            if node.target is torch.ops.aten.cat.default:
                node.args = (list(reversed(node.args[0])), *node.args[1:])  # shifts the wrong way
        return found

    broken = GraphPass("roll-as-slices", wrong_roll, "deliberately wrong", (torch.ops.aten.roll.default,))
    monkeypatch.setattr(graph_mod, "GRAPH_PASSES", (broken,))
    model = byom.swin().eval()
    gm, report = rewrite_graph(model, SHAPE, "swin", "onnx-fp32")
    (record,) = report["passes"]
    assert record["matches"] and not record["applied"] and "not exact" in record["refused"]
    assert report["after"]["hostile_ops"] == {"roll.default": 2}
    assert report["max_rel_diff"] == 0.0


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, 4)

    def forward(self, x):
        y = self.conv(x)
        keep = torch.nonzero(y[0, 0] > 0).shape[0]
        return y * keep


def test_data_dependent_op_is_one_line_error():
    with pytest.raises(EdgesegError) as info:
        rewrite_graph(_DataDependent().eval(), (1, 3, 32, 32), "user-bad", "tflite-fp32")
    msg = str(info.value)
    assert "\n" not in msg and "nonzero" in msg and "tflite-fp32" in msg and "torch.nonzero" in msg


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, 4)

    def forward(self, x):
        y = self.conv(x)
        if y.mean() > 0:  # data-dependent control flow
            return y
        return -y


def test_data_dependent_branch_is_one_line_error(capfd):
    with pytest.raises(EdgesegError) as info:
        rewrite_graph(_Branchy().eval(), (1, 3, 32, 32), "user-branchy", "onnx-fp32")
    msg = str(info.value)
    assert "\n" not in msg and "onnx-fp32" in msg and "if y.mean() > 0" in msg and "test_graph_passes.py" in msg
    assert "def forward" not in capfd.readouterr().err  # torch's partial-graph dump is not shown


USER_FILE = '''
import torch
import torch.nn as nn

class Tiny(nn.Module):
    """A shifted-window block in miniature: roll, 6-D window partition and reverse, 1x1 classifier."""
    def __init__(self):
        super().__init__()
        self.input_size = (32, 32)
        self.embed = nn.Conv2d(3, 8, 4, 4)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        x = self.embed(x).permute(0, 2, 3, 1)
        b, h, w, c = x.shape
        s = torch.roll(x, (-2, -2), (1, 2))
        win = s.view(b, h // 4, 4, w // 4, 4, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, 16, c)
        win = win + torch.softmax(win @ win.transpose(1, 2) / 8, -1) @ self.mix(win)
        y = win.view(b, h // 4, w // 4, 4, 4, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return self.head(torch.roll(y, (2, 2), (1, 2)).permute(0, 3, 1, 2))

def build():
    return Tiny()

def not_a_module():
    return 42

def wrong_rank():
    return nn.Flatten()
'''


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_net.py"
    path.write_text(USER_FILE)
    return path


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    "suffix, expect",
    [
        ("missing.py:build", "file not found"),
        ("my_net.py:nothing", "has no 'nothing'"),
        ("my_net.py:not_a_module", "returned a int, not an nn.Module"),
        ("my_net.py:wrong_rank", "must return (1, C, h, w) logits"),
        ("my_net.py:build()", "write PATH.py:NAME"),
        ("no_such_package.mod:build", "cannot import 'no_such_package.mod'"),
    ],
)
def test_user_model_errors_are_one_line(user_file, suffix, expect):
    spec = suffix if suffix.startswith("no_such") else f"{user_file.parent}/{suffix}"
    r = _run("rewrites", "--model", spec)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expect in r.output, r.output


def test_rewrites_command_lists_matches(user_file, tmp_path):
    out = tmp_path / "r.json"
    r = _run("rewrites", "--model", f"{user_file}:build", "--json", out)
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    assert report["model"].startswith("user-my-net-build") and report["dataset"] == "custom" and report["user_model"]
    passes_ = {p["name"]: p for p in report["graph"]["passes"]}
    assert len(passes_["roll-as-slices"]["matches"]) == 2 and passes_["roll-as-slices"]["applied"]
    assert len(passes_["permute-rank-lower"]["matches"]) == 2
    assert report["graph"]["after"]["max_rank"] == 4
    r = _run("rewrites")
    assert r.exit_code == 0 and "permute-rank-lower" in r.output and "fft-filter-as-conv" in r.output


def test_byom_export_onnx_parity_lint_rank4(user_file, tmp_path):
    """The user's file -> onnx-fp32: parity against the user's own module, lint clean, every tensor rank <= 4,
    the graph passes in the manifest."""
    import onnx

    r = _run(
        "export",
        "--model",
        f"{user_file}:build",
        "--target",
        "onnx-fp32",
        "--out",
        tmp_path / "a",
        "--parity-images",
        "2",
    )
    assert r.exit_code == 0, r.output
    (manifest,) = (tmp_path / "a").glob("*/manifest.json")
    m = json.loads(manifest.read_text())
    assert m["model"].startswith("user-my-net-build") and m["dataset"] == "custom" and len(m["classes"]) == 5
    assert m["output"]["shape"] == [1, 5, 8, 8]
    assert m["parity"]["argmax_agreement"] == 1.0 and m["parity"]["max_abs_diff"] < 1e-4
    assert m["lint"]["clean"], m["lint"]
    assert m["rewrites"]["roll-as-slices"] == 2 and m["rewrites"]["permute-rank-lower"] == 2
    model = onnx.shape_inference.infer_shapes(onnx.load(manifest.parent / m["file"]))
    ranks = [len(v.type.tensor_type.shape.dim) for v in model.graph.value_info]
    assert ranks and max(ranks) <= 4
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Col2Im", "Einsum", "ScatterND", "Loop", "NonZero", "DFT", "GatherND"}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(EXPECTED))
@pytest.mark.parametrize("target", ["onnx-fp32", "tflite-fp32"])
def test_family_exports(family, target, tmp_path, export_manifest):
    m = export_manifest(f"{EXAMPLES}:{family}", target, tmp_path / "a")
    assert m["parity"]["argmax_agreement"] == 1.0 and m["lint"]["clean"], (m["parity"], m["lint"])
    assert m["graph_passes"]["after"]["max_rank"] <= 4


def test_user_weights_file_and_spellings(user_file, tmp_path, monkeypatch):
    """--weights PATH loads the user's state dict strictly; a relative and an absolute path are one model."""
    from edgeseg.commands.evaluate import load_model

    spec = importlib.util.spec_from_file_location("my_net_for_weights", user_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(7)
    trained = mod.build()
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    loaded = load_model(f"{user_file}:build", None, str(tmp_path / "w.pt"))
    assert loaded.name.startswith("user-my-net-build") and not loaded.untrained
    assert torch.equal(loaded.model.head.weight, trained.head.weight)
    monkeypatch.chdir(user_file.parent)
    again = load_model("my_net.py:build", None, "random")
    assert again.name == loaded.name and again.untrained
    torch.save({"nope": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(EdgesegError):
        load_model(f"{user_file}:build", None, str(tmp_path / "bad.pt"))


def test_export_cache_key_follows_the_user_source(user_file):
    """An edit to the user's file changes the export code hash, so a cached artifact is not reused."""
    from edgeseg.backends import backend_for
    from edgeseg.commands.export import export_code_hash
    from edgeseg.models.registry import resolve_model_name

    name, dataset = resolve_model_name(f"{user_file}:build", None)
    assert dataset == "custom"
    before = export_code_hash(name, backend_for("onnx"))
    user_file.write_text(user_file.read_text() + "\n# edited\n")
    assert export_code_hash(name, backend_for("onnx")) != before


def test_as_built_weights_are_identified_by_their_values(user_file):
    """No --weights: the module as NAME() builds it, tagged as-built with its state-dict hash (not untrained)."""
    from edgeseg.commands.evaluate import load_model
    from edgeseg.models.user import state_sha256

    loaded = load_model(f"{user_file}:build", None, None)
    assert loaded.weights.tag == "as-built" and not loaded.untrained
    assert (
        loaded.weights_sha256()
        == state_sha256(loaded.model)
        == state_sha256(load_model(f"{user_file}:build", None, None).model)
    )


def test_byom_artifact_benches_and_checks_without_labels(user_file, tmp_path, monkeypatch):
    """A user model's artifact ("custom" classes: no labels to score) goes through bench and check: timed, parity
    re-checked, no mIoU, no example predictions, no crash."""
    r = _run("export", "--model", f"{user_file}:build", "--target", "onnx-fp32", "--out", tmp_path / "artifacts")
    assert r.exit_code == 0, r.output
    (folder,) = (tmp_path / "artifacts").glob("*/")
    r = _run("bench", "--device", "host", "--artifact", folder, "--report", tmp_path / "rep", "--max-seconds", "1")
    assert r.exit_code == 0, r.output
    row = json.loads((tmp_path / "rep" / "bench.json").read_text())["results"][0]
    assert row["miou"] is None and row["host"]["stats"]["median_ms"] > 0
    monkeypatch.chdir(tmp_path)
    r = _run("check")
    assert r.exit_code == 0, r.output
