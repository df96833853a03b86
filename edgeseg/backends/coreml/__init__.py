"""Core ML: coremltools 9 converts the torch.export program to an mlprogram (.mlpackage) on Linux; prediction
needs macOS, so parity here is measured only where coremltools can predict (int8: the PT2E graph the converter
is given, run by PyTorch, labelled "simulated"). int8 is W8A8 through litert-torch's PT2E quantizer, checked
against the mIoU budget on the held-out slice (no per-layer search)."""

from __future__ import annotations

from pathlib import Path

from edgeseg.artifact import LoadedArtifact
from edgeseg.backends.base import Backend, Built, ExportJob, Precision
from edgeseg.backends.registry import register_backend
from edgeseg.estimate.graph import COMMON_ACTIVATIONS, FusionRules
from edgeseg.lint import ALWAYS_FORBIDDEN, LintReport, RuleSet
from edgeseg.quantize.policy import PT2E_INT8_OPS, Int8Policy
from edgeseg.residency import Residency

_MACOS = "needs macOS (coremltools predict)"
_BUDGET_NOTE = "per-layer search runs for ONNX, TensorRT and TFLite int8; Core ML int8 is budget-checked only"


class CoreMLBackend(Backend):
    name = "coreml"
    suffix = ".mlpackage"
    extra = "coreml"
    packages = ("coremltools",)
    int8_packages = ("litert_torch", "torchao")  # PT2E quantizer
    precisions = {
        "fp32": Precision(_MACOS),
        "fp16": Precision(_MACOS),
        "int8": Precision(f"{_MACOS}; int8 parity simulated here in PyTorch"),
    }
    rules = RuleSet("coreml", 5, ALWAYS_FORBIDDEN, frozenset({"nearest", "linear", "cubic"}))
    # Core ML W8A8 through the same PT2E quantizer before conversion (iOS 17 quantize/dequantize, int8 weights).
    int8_policy = Int8Policy(
        "coreml",
        PT2E_INT8_OPS,
        True,
        "int8",
        note="PT2E W8A8 before conversion; the Neural Engine's int8-int8 path needs A17 Pro / M4 or newer",
    )
    ssh_timer = None
    device_note = "Core ML runs on Apple devices only"
    int8_float_rest = "fp16"
    fusion = FusionRules(
        "coreml",
        COMMON_ACTIVATIONS | frozenset({"Sigmoid", "Tanh", "HardSigmoid", "LeakyRelu"}),
        False,
        False,
        "coremltools MIL passes fuse_conv_batchnorm / fuse_conv_bias / fuse activation into conv",
    )
    profiler_note = "Core ML needs Xcode Instruments on macOS"
    code_modules = ("edgeseg.quantize.pt2e", "edgeseg.quantize.policy")

    def build(self, job: ExportJob) -> Built:
        from edgeseg.backends.coreml.export import export_coreml
        from edgeseg.backends.coreml.runtime import CoreMLModel, coreml_runtime_available
        from edgeseg.eval.evaluate import torch_predictor

        file, int8 = "model.mlpackage", job.int8
        int8_target = job.target.precision == "int8"
        calib_inputs = int8.calib.inputs(job.size) if int8_target else None
        info, mlmodel, simulated = export_coreml(
            job.module, job.example, job.folder / file, job.target.precision, job.output_name, calib_inputs
        )
        runner, note = None, "none: Core ML prediction needs macOS"
        if coreml_runtime_available():
            runner, note = CoreMLModel(job.folder / file, job.output_name), "coremltools predict (macOS)"
        elif simulated is not None:
            # the int8 numerics Core ML is given, run here by PyTorch: not Core ML itself, and labelled so
            runner = torch_predictor(simulated)
            note = "simulated: the PT2E int8 graph converted to Core ML, run by PyTorch (Core ML needs macOS)"
        if int8_target:
            info["quantization"] = {
                "policy": self.int8_policy.as_dict(),
                "int8_nodes": info.pop("int8_ops"),
                "mixed_precision": None
                if int8.max_miou_drop is None or runner is None
                else int8.holdout_check(runner, job.size, job.module, _BUDGET_NOTE),
            }
        from edgeseg.backends.coreml.lint import lint_coreml

        return Built(file, info, runner, note, lint_coreml(mlmodel, self.rules))

    def load(self, folder: Path, manifest: dict, threads: int | None) -> LoadedArtifact:
        from edgeseg.backends.coreml.runtime import CoreMLModel

        path = folder / manifest["file"]
        return LoadedArtifact(path, manifest, CoreMLModel(path, manifest["output"]["name"]), "coremltools (macOS)")

    def runs_here(self) -> bool:
        from edgeseg.backends.coreml.runtime import coreml_runtime_available

        return coreml_runtime_available()

    def lint(self, path: Path) -> LintReport:
        from edgeseg.backends.coreml.lint import lint_coreml

        return lint_coreml(path, self.rules)

    def residency(self, path: Path) -> list[Residency]:
        from edgeseg.backends.coreml.residency import coreml_residency

        return coreml_residency(path)


register_backend(CoreMLBackend())
