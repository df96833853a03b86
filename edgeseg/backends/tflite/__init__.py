"""TFLite: litert-torch converts the torch.export program directly (no TensorFlow); ai-edge-litert runs it here
with XNNPACK. fp16 is TFLite's fp16-weights scheme; int8 is PT2E static quantization with per-op float switches
and the mixed-precision search to the mIoU budget. I/O is NHWC."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from edgeseg.artifact import LoadedArtifact
from edgeseg.backends.base import Backend, Built, ExportJob, Precision
from edgeseg.backends.registry import register_backend
from edgeseg.estimate.graph import COMMON_ACTIVATIONS, FusionRules
from edgeseg.lint import ALWAYS_FORBIDDEN, LintReport, RuleSet
from edgeseg.quantize.policy import PT2E_INT8_OPS, Int8Policy
from edgeseg.residency import Residency

_XNNPACK = "ai-edge-litert (XNNPACK)"


class TFLiteBackend(Backend):
    name = "tflite"
    suffix = ".tflite"
    extra = "tflite"
    packages = ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")
    precisions = {"fp32": Precision(_XNNPACK), "fp16": Precision(_XNNPACK), "int8": Precision(_XNNPACK)}
    # TFLite has no bicubic resize; the GPU delegate takes at most 4-D tensors.
    rules = RuleSet("tflite", 4, ALWAYS_FORBIDDEN | {"Gelu"}, frozenset({"nearest", "linear"}))
    # litert-torch PT2E: its static op set (conv, linear, add, mul, cat) is int8; matmul, div and sum stay float.
    int8_policy = Int8Policy(
        "tflite",
        PT2E_INT8_OPS,
        True,
        "int8",
        note="litert-torch PT2E; Hardswish rewritten to add/clamp/mul so XNNPACK keeps int8 in one partition",
    )
    adb_timer = True
    fusion = FusionRules(
        "tflite",
        COMMON_ACTIVATIONS | frozenset({"Tanh"}),
        False,
        False,
        "TFLite builtin ops' fused_activation_function (NONE, RELU, RELU_N1_TO_1, RELU6, TANH); BN folded at "
        "conversion",
    )
    code_modules = ("edgeseg.quantize.pt2e", "edgeseg.quantize.search", "edgeseg.quantize.policy")

    def build(self, job: ExportJob) -> Built:
        from edgeseg.backends.tflite.export import export_tflite
        from edgeseg.backends.tflite.runtime import LiteRtModel

        file = "model.tflite"
        pt2e = job.pt2e_int8(
            LiteRtModel,
            "the PT2E int8 graph run by PyTorch (the numerics the converter is given)",
            "converted .tflite artifacts run by ai-edge-litert; the last is this artifact",
        )
        path = job.folder / file
        info = export_tflite(
            job.module,
            job.example,
            path,
            job.target.precision,
            job.output_name == "logits",
            pt2e.calib_inputs,
            pt2e.choose_float,
        )
        runner = LiteRtModel(path)
        if job.target.precision == "int8":
            info["quantization"] = {
                "policy": self.int8_policy.as_dict(),
                "int8_nodes": runner.int8_ops(),
                "mixed_precision": pt2e.search_report(),
            }
        return Built(file, info, runner, f"ai-edge-litert {version('ai-edge-litert')} (XNNPACK)", self.lint(path))

    def load(self, folder: Path, manifest: dict, threads: int | None) -> LoadedArtifact:
        from edgeseg.backends.tflite.runtime import LiteRtModel

        path = folder / manifest["file"]
        return LoadedArtifact(path, manifest, LiteRtModel(path, threads), _XNNPACK)

    def lint(self, path: Path) -> LintReport:
        from edgeseg.backends.tflite.lint import lint_tflite

        return lint_tflite(path, self.rules)

    def profile(self, folder: Path, manifest: dict, threads: int, runs: int, warmup: int):
        from edgeseg.bench.opprofile import profile_tflite

        return profile_tflite(self.load(folder, manifest, threads), threads, runs, warmup)

    def residency(self, path: Path) -> list[Residency]:
        from edgeseg.backends.tflite.residency import tflite_residency

        return tflite_residency(path)


register_backend(TFLiteBackend())
