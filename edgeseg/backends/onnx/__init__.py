"""ONNX: torch.export -> ONNX (onnxscript), simplified with onnxslim, run here by ONNX Runtime (CPU EP).

fp16 is carried in the graph (strongly typed: half weights and activations, fp32 attention core); int8 is ORT's
QDQ static quantization with the attention-aware policy, through the per-layer mixed-precision search when an
mIoU budget is given.
"""

from __future__ import annotations

from pathlib import Path

from edgeseg.artifact import LoadedArtifact
from edgeseg.backends.base import Backend, Built, ExportJob, Int8Request, Precision
from edgeseg.backends.registry import register_backend
from edgeseg.estimate.graph import FusionRules
from edgeseg.lint import ALWAYS_FORBIDDEN, LintReport, RuleSet, lint_onnx
from edgeseg.quantize.policy import Int8Policy
from edgeseg.residency import Residency

# ORT runs almost anything; the rank cap keeps graphs portable (TFLite/XNNPACK top out at 6-D, Core ML at 5).
ONNX_RULES = RuleSet("onnx", 6, ALWAYS_FORBIDDEN, frozenset({"nearest", "linear", "cubic"}))


def ort_version() -> str:
    from importlib.metadata import version

    return version("onnxruntime")


def quantize_onnx_artifact(policy: Int8Policy, fp32: Path, out: Path, int8: Int8Request, size) -> dict:
    """QDQ int8 of ``fp32`` into ``out`` with ``policy``; with a budget, through the mixed-precision search.
    Shared by the ONNX and TensorRT backends (TensorRT's explicit quantization reads the same Q/DQ graph)."""
    from edgeseg.backends.onnx.runtime import OnnxRuntimeModel
    from edgeseg.quantize.onnx_int8 import prepare_onnx, quantization_facts, quantize_onnx
    from edgeseg.quantize.search import search_onnx

    calib = int8.calib
    inputs = calib.inputs(size)
    if int8.max_miou_drop is None:
        return {"policy": policy.as_dict(), **quantize_onnx(fp32, out, inputs, policy, calib.method)}
    prepared = prepare_onnx(fp32, out.with_name("model.prep.onnx"))
    try:
        scorer = int8.holdout_scorer(OnnxRuntimeModel(fp32), size)
        result = search_onnx(
            prepared, out, inputs, policy, calib.method, scorer, OnnxRuntimeModel, int8.max_miou_drop, int8.progress
        )
    finally:
        prepared.unlink(missing_ok=True)
    return {
        "policy": policy.as_dict(),
        **quantization_facts(out, calib.method, result.nodes_to_exclude),
        "mixed_precision": result.as_dict(),
    }


def export_onnx_file(job: ExportJob, policy: Int8Policy, file: str = "model.onnx") -> dict:
    """The ONNX file for ``job`` (int8: the fp32 graph quantized with ``policy``); returns its manifest facts."""
    from edgeseg.backends.onnx.export import export_onnx

    if job.target.precision != "int8":
        return export_onnx(job.module, job.example, job.folder / file, job.opset, job.output_name)
    fp32 = job.folder / "model.fp32.onnx"
    info = export_onnx(job.module, job.example, fp32, job.opset, job.output_name)
    info["quantization"] = quantize_onnx_artifact(policy, fp32, job.folder / file, job.int8, job.size)
    fp32.unlink()
    return info


class OnnxBackend(Backend):
    name = "onnx"
    suffix = ".onnx"
    extra = "onnx"
    packages = ("onnx", "onnxruntime", "onnxslim", "onnxscript")
    precisions = {
        "fp32": Precision("onnxruntime (CPU)"),
        "fp16": Precision("onnxruntime (CPU; no native fp16 here, slower than fp32)"),
        # measured side by side on x86 (docs/generated/openvino-table.md): QDQ int8 ran 0.68-0.70x of onnx-fp32's
        # speed on ORT's CPU EP at 1 and 2 threads; its int8 kernels pay for the Q/DQ around the float attention
        "int8": Precision("onnxruntime (CPU); int8 QDQ: for ARM/NPU EPs; slower than fp32 on x86 CPU EP"),
    }
    rules = ONNX_RULES
    # ORT CPU: U8S8 (uint8 activations, int8 weights) was faster than S8S8 on this avx512_vnni CPU.
    int8_policy = Int8Policy("onnx", ("Conv",), False, "uint8", note="ONNX Runtime QDQ; U8S8 is ORT CPU's fast path")
    graph_fp16 = True
    calib_methods = ("percentile", "minmax", "entropy")
    graph_is_onnx = True
    fusion = FusionRules(
        "onnxruntime",
        frozenset({"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid"}),
        True,
        False,
        "onnxruntime graph optimizations: ConvBNFusion, ConvAddFusion, ConvActivationFusion, MatMulAddFusion, "
        "NCHWc Conv+Sum fusion (level 3)",
    )
    code_modules = ("edgeseg.quantize.onnx_int8", "edgeseg.quantize.search", "edgeseg.quantize.policy")

    def build(self, job: ExportJob) -> Built:
        from edgeseg.backends.onnx.runtime import OnnxRuntimeModel

        info = export_onnx_file(job, self.int8_policy)
        path = job.folder / "model.onnx"
        return Built("model.onnx", info, OnnxRuntimeModel(path), f"onnxruntime {ort_version()} (CPU)", self.lint(path))

    def load(self, folder: Path, manifest: dict, threads: int | None) -> LoadedArtifact:
        from edgeseg.backends.onnx.runtime import OnnxRuntimeModel

        path = folder / manifest["file"]
        return LoadedArtifact(path, manifest, OnnxRuntimeModel(path, threads), "onnxruntime (CPU)")

    def lint(self, path: Path) -> LintReport:
        return lint_onnx(path, self.rules)

    def profile(self, folder: Path, manifest: dict, threads: int, runs: int, warmup: int):
        from edgeseg.bench.opprofile import profile_ort

        return profile_ort(folder / manifest["file"], "onnxruntime (CPU)", threads, runs, warmup)

    def residency(self, path: Path) -> list[Residency]:
        from edgeseg.backends.onnx.residency import onnx_residency

        return onnx_residency(path)


register_backend(OnnxBackend())
