"""TensorRT: a strongly typed, TensorRT-ready ONNX (precision in the graph; int8 as explicit symmetric Q/DQ) and,
where TensorRT and a CUDA GPU exist, the engine built from it. Elsewhere the exact ``trtexec`` command is written
beside the ONNX (``build_engine.sh``), the manifest says why no engine was built, and parity runs the ONNX in
ONNX Runtime, labelled so."""

from __future__ import annotations

from pathlib import Path

from edgeseg.artifact import LoadedArtifact
from edgeseg.backends.base import Backend, Built, ExportJob, Precision
from edgeseg.backends.onnx import export_onnx_file, ort_version
from edgeseg.backends.registry import register_backend
from edgeseg.estimate.graph import ELEMENTWISE, FusionRules
from edgeseg.lint import ALWAYS_FORBIDDEN, LintReport, RuleSet, lint_onnx
from edgeseg.quantize.policy import Int8Policy
from edgeseg.residency import Residency

_NEEDS = "needs TensorRT + CUDA"


class TensorRTBackend(Backend):
    name = "tensorrt"
    target_prefix = "trt"
    suffix = ".engine"
    extra = "onnx"  # TensorRT itself: JetPack / NVIDIA's index, not PyPI
    packages = ("onnx", "onnxruntime", "onnxslim", "onnxscript")
    precisions = {"fp32": Precision(_NEEDS), "fp16": Precision(_NEEDS), "int8": Precision(_NEEDS)}
    rules = RuleSet("tensorrt", 8, ALWAYS_FORBIDDEN, frozenset({"nearest", "linear", "cubic"}))
    # TensorRT's explicit quantization: Q/DQ scales with zero point 0, int8 activations.
    int8_policy = Int8Policy(
        "tensorrt", ("Conv",), True, "int8", note="explicit symmetric Q/DQ for a strongly typed TensorRT build"
    )
    graph_fp16 = True
    calib_methods = ("percentile", "minmax", "entropy")
    ssh_timer = "trtexec"
    int8_float_rest = "fp16"
    graph_is_onnx = True
    # TensorRT's builder fuses conv + activation / elementwise sum, chains of pointwise ops, and elides concats.
    fusion = FusionRules(
        "tensorrt",
        frozenset(ELEMENTWISE - {"QuantizeLinear", "DequantizeLinear", "Cast"}),
        True,
        True,
        "TensorRT developer guide, 'Types of Fusions': convolution + activation / elementwise sum, pointwise fusion; "
        "concatenation layer elision",
        True,
    )
    code_modules = ("edgeseg.backends.onnx", "edgeseg.quantize.onnx_int8", "edgeseg.quantize.search")

    def build(self, job: ExportJob) -> Built:
        from edgeseg.backends.onnx.runtime import OnnxRuntimeModel
        from edgeseg.backends.tensorrt.export import build_engine, trtexec_command
        from edgeseg.backends.tensorrt.runtime import tensorrt_status

        file = "model.onnx"
        info = export_onnx_file(job, self.int8_policy, file)
        command = trtexec_command(file, "model.engine")
        (job.folder / "build_engine.sh").write_text(
            f'#!/bin/sh\n# strongly typed build of the TensorRT-ready ONNX\ncd "$(dirname "$0")" && {command}\n'
        )
        info["trtexec"] = command
        ok, why = tensorrt_status()
        if ok:
            info.update(build_engine(job.folder / file, job.folder / "model.engine"))
        else:
            info["engine"] = None
            info["engine_not_built"] = why
        return Built(
            file,
            info,
            OnnxRuntimeModel(job.folder / file),
            f"onnxruntime {ort_version()} (CPU) on the TensorRT-ready ONNX (engine parity needs TensorRT + CUDA)",
            self.lint(job.folder / file),
        )

    def load(self, folder: Path, manifest: dict, threads: int | None) -> LoadedArtifact:
        from edgeseg.backends.onnx.runtime import OnnxRuntimeModel
        from edgeseg.backends.tensorrt.runtime import TensorRTModel, tensorrt_status

        ok, why = tensorrt_status()
        engine = folder / manifest["engine"] if manifest.get("engine") else None
        if engine is not None and engine.is_file() and ok:
            model = TensorRTModel(engine)
            return LoadedArtifact(engine, manifest, model, f"TensorRT {model.version} engine (CUDA)")
        reason = "no engine built in this artifact" if ok else f"the engine {why}"
        path = folder / manifest["file"]
        note = f"onnxruntime (CPU) on the TensorRT-ready ONNX, not the engine ({reason})"
        return LoadedArtifact(path, manifest, OnnxRuntimeModel(path, threads), note)

    def lint(self, path: Path) -> LintReport:
        return lint_onnx(path, self.rules)

    def profile(self, folder: Path, manifest: dict, threads: int, runs: int, warmup: int):
        from edgeseg.bench.opprofile import profile_ort

        prof = profile_ort(folder / manifest["file"], "onnxruntime (CPU)", threads, runs, warmup)
        prof.notes.append(
            "the TensorRT-ready ONNX profiled in ONNX Runtime, not the engine (use trtexec --dumpProfile)"
        )
        return prof

    def residency(self, path: Path) -> list[Residency]:
        from edgeseg.backends.tensorrt.residency import tensorrt_residency

        return tensorrt_residency(path)


register_backend(TensorRTBackend())
