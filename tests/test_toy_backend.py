"""A new backend is one module: this file defines a toy TorchScript backend, registers it, and edgeseg's own
commands list it, export with it (parity, lint, manifest, cache), lint it, evaluate and bench it, with no change
anywhere else."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgeseg.artifact import LoadedArtifact
from edgeseg.backends import (
    TARGETS,
    Backend,
    Built,
    ExportJob,
    Precision,
    backend_for,
    register_backend,
    unregister_backend,
)
from edgeseg.cli import app
from edgeseg.lint import LintReport, RuleSet

SIZE = "96x128"


class TorchScriptBackend(Backend):
    """TorchScript (torch.jit.trace): a format torch itself runs, so the whole path runs here."""

    name = "toyscript"
    suffix = ".ts"
    extra = "toyscript"
    packages = ("torch",)
    precisions = {"fp32": Precision("torch.jit (CPU)")}
    rules = RuleSet("toyscript", 4, frozenset({"aten::unfold"}), frozenset({"bilinear"}))

    def build(self, job: ExportJob) -> Built:
        path = job.folder / "model.ts"
        with torch.no_grad():
            torch.jit.trace(job.module, job.example).save(str(path))
        loaded = torch.jit.load(str(path))

        def run(x):
            with torch.no_grad():
                return loaded(x)

        return Built("model.ts", {"exporter": "torch.jit.trace"}, run, "torch.jit (CPU)", self.lint(path))

    def load(self, folder: Path, manifest: dict, threads: int | None) -> LoadedArtifact:
        path = folder / manifest["file"]
        module = torch.jit.load(str(path))

        def run(x):
            with torch.no_grad():
                return module(x)

        return LoadedArtifact(path, manifest, run, "torch.jit (CPU)")

    def lint(self, path: Path) -> LintReport:
        report = LintReport(self.rules.name)
        for node in torch.jit.load(str(path)).inlined_graph.nodes():
            kind = node.kind()
            report.ops[kind] = report.ops.get(kind, 0) + 1
            if kind in self.rules.forbidden:
                report.add("error", "forbidden-op", kind, f"{kind} is not allowed")
        return report


@pytest.fixture
def toy():
    backend = register_backend(TorchScriptBackend())
    yield backend
    unregister_backend(backend.name)
    assert "toyscript-fp32" not in TARGETS


def test_a_backend_registered_from_one_module_lists_exports_lints_and_runs(toy, random_b0_weights, tmp_path):
    runner = CliRunner()
    listed = runner.invoke(app, ["targets"])
    assert listed.exit_code == 0 and "toyscript-fp32" in listed.output

    args = ["export", "--model", "efficientvit-b0", "--weights", random_b0_weights, "--target", "toyscript-fp32"]
    r = runner.invoke(app, [*args, "--size", SIZE, "--out", str(tmp_path), "--parity-images", "2"])
    assert r.exit_code == 0, r.output
    folder = tmp_path / f"efficientvit-b0-camvid-toyscript-fp32-{SIZE}"
    m = json.loads((folder / "manifest.json").read_text())
    assert m["format"] == "toyscript" and m["file"] == "model.ts" and m["lint"]["clean"]
    assert m["parity"]["max_abs_diff"] <= 1e-4 and m["parity"]["argmax_agreement"] >= 0.999
    assert m["rewrites"]["attention-fp32-normaliser"] == 4  # rewrites that want every format reach a new one
    assert backend_for("toyscript") is toy

    again = runner.invoke(app, [*args, "--size", SIZE, "--out", str(tmp_path), "--parity-images", "2"])
    assert again.exit_code == 0 and "(cached)" in again.output

    assert runner.invoke(app, ["lint", str(folder)]).exit_code == 0
    ev = runner.invoke(app, ["eval", "--artifact", str(folder), "--limit", "2", "--json", str(tmp_path / "e.json")])
    assert ev.exit_code == 0, ev.output
    assert json.loads((tmp_path / "e.json").read_text())["runtime"] == "torch.jit (CPU)"

    timing = ["--warmup", "1", "--runs", "3", "--max-runs", "3", "--max-seconds", "5", "--examples", "0"]
    b = runner.invoke(
        app,
        [
            "bench",
            "--device",
            "host",
            "--artifact",
            str(folder),
            "--report",
            str(tmp_path / "r"),
            "--limit",
            "1",
            *timing,
        ],
    )
    assert b.exit_code == 0, b.output
    (row,) = json.loads((tmp_path / "r" / "bench.json").read_text())["results"]
    assert row["target"] == "toyscript-fp32" and row["host"]["runtime"] == "torch.jit (CPU)"


def test_a_backends_code_enters_the_cache_key(toy):
    from edgeseg.commands.export import export_code_hash

    onnx_hash = export_code_hash("efficientvit-b0", backend_for("onnx"))
    assert export_code_hash("efficientvit-b0", toy) != onnx_hash  # each backend's own source
    assert export_code_hash("lvt", backend_for("onnx")) != onnx_hash  # each model family's own source
    assert export_code_hash("efficientvit-b0", backend_for("onnx")) == onnx_hash  # stable


def test_registering_a_taken_name_is_refused(toy):
    with pytest.raises(ValueError, match="registered twice"):
        register_backend(TorchScriptBackend())
