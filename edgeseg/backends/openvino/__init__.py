"""OpenVINO: edgeseg's rewritten graph as OpenVINO IR (``openvino.save_model``), run here by the CPU plugin.

fp32 and bf16 are the same f32 IR compiled with a pinned ``INFERENCE_PRECISION_HINT`` (f32 / bf16; recorded in
the manifest and applied by edgeseg's runtime; bf16 is refused on a CPU whose plugin has no bf16 path). fp16 is
the fp16-compressed IR for Intel GPU / NPU (the CPU plugin here decompresses it and runs f32). int8 is NNCF
post-training quantization with edgeseg's calibration sampler, attention-aware policy and mIoU budget
(``edgeseg.backends.openvino.int8``). Devices: ``benchmark_app`` over SSH on Intel edge boxes.
"""

from __future__ import annotations

from pathlib import Path

from edgeseg.artifact import LoadedArtifact
from edgeseg.backends.base import Backend, Built, ExportJob, Precision
from edgeseg.backends.openvino.int8 import OPENVINO_INT8_POLICY
from edgeseg.backends.openvino.lint import OPENVINO_RULES
from edgeseg.backends.registry import register_backend
from edgeseg.estimate.graph import ELEMENTWISE, FusionRules
from edgeseg.lint import LintReport
from edgeseg.residency import Residency

_CPU = "OpenVINO CPU plugin"


class OpenVinoBackend(Backend):
    name = "openvino"
    suffix = ".xml"
    extra = "openvino"
    packages = ("openvino", "onnx", "onnxslim", "onnxscript")
    int8_packages = ("nncf",)
    precisions = {
        "fp32": Precision(f"{_CPU} (f32 pinned)"),
        "bf16": Precision(f"{_CPU} (bf16 pinned; needs AVX512_BF16 or AMX)"),
        "fp16": Precision(f"{_CPU} runs it f32 here; fp16 on Intel GPU / NPU"),
        "int8": Precision(f"{_CPU} (NNCF int8; float rest f32)"),
    }
    rules = OPENVINO_RULES
    int8_policy = OPENVINO_INT8_POLICY
    calib_methods = ("percentile", "minmax")
    ssh_timer = "benchmark_app"
    # the CPU plugin's graph transformations (src/plugins/intel_cpu/src/graph_optimizer.cpp): Conv + bias /
    # activation / FakeQuantize / Sum (residual) fusions, and eltwise chains fused into one JIT kernel
    fusion = FusionRules(
        "openvino-cpu",
        frozenset(ELEMENTWISE - {"QuantizeLinear", "DequantizeLinear", "Cast"}),
        True,
        True,
        "OpenVINO CPU plugin graph optimizer: FuseConvolutionAndBias, FuseConvolutionAndSimpleOperation, "
        "FuseConvolutionSumAndConvolutionSumActivation, FuseEltwiseAndSimple (eltwise chains), FakeQuantize into "
        "the producing kernel",
    )
    code_modules = (
        "edgeseg.backends.onnx.export",
        "edgeseg.quantize.search",
        "edgeseg.quantize.policy",
        "edgeseg.quantize.calibration",
    )

    def versions(self) -> dict[str, str]:
        """Export versions plus NNCF's (it makes the int8 IR; the cache key must change with it)."""
        from importlib.metadata import PackageNotFoundError, version

        out = super().versions()
        try:
            out["nncf"] = version("nncf")
        except PackageNotFoundError:
            out["nncf"] = "not installed"
        return out

    def build(self, job: ExportJob) -> Built:
        from edgeseg.backends.openvino.export import convert_from_onnx, save_ir
        from edgeseg.backends.openvino.runtime import OpenVinoModel, openvino_version, require_bf16, runtime_config

        tgt = job.target
        if tgt.precision == "bf16":
            require_bf16(tgt.name)
        source = job.folder / "model.src.onnx"
        model, info = convert_from_onnx(job, source)
        source.unlink()
        if tgt.precision == "int8":
            from edgeseg.backends.openvino.int8 import quantize_openvino

            def runner_of(m):
                return OpenVinoModel(m, "int8")

            model, info["quantization"] = quantize_openvino(model, job, self.int8_policy, runner_of)
        path = job.folder / "model.xml"
        info.update(save_ir(model, path, compress_to_fp16=tgt.precision == "fp16"))
        runner = OpenVinoModel(path, tgt.precision, None, tgt.name)
        info["openvino"] = {"runtime": runtime_config(tgt.precision, None), "effective": runner.effective}
        info["residency"] = [r.model_dump() for r in self.residency(path)]
        lint = self.lint(path)
        return Built("model.xml", info, runner, f"openvino {openvino_version()} ({_CPU})", lint)

    def load(self, folder: Path, manifest: dict, threads: int | None) -> LoadedArtifact:
        from edgeseg.backends.openvino.runtime import OpenVinoModel

        path = folder / manifest["file"]
        model = OpenVinoModel(path, manifest["precision"], threads, manifest["target"])
        settings = ", ".join(f"{k}={v}" for k, v in model.effective.items())
        return LoadedArtifact(path, manifest, model, f"{_CPU} ({settings})")

    def lint(self, path: Path) -> LintReport:
        from edgeseg.backends.openvino.lint import lint_openvino

        return lint_openvino(path, self.rules)

    def residency(self, path: Path) -> list[Residency]:
        from edgeseg.backends.openvino.lint import residency

        return residency(path)

    def profile(self, folder: Path, manifest: dict, threads: int, runs: int, warmup: int):
        from edgeseg.backends.openvino.profile import profile_openvino

        return profile_openvino(folder, manifest, threads, runs, warmup)

    def would_be_command(self, remote_file: str, threads: int) -> str | None:
        from edgeseg.backends.openvino.benchmark_app import benchmark_app_command

        return benchmark_app_command("benchmark_app", remote_file, "CPU", threads, None)


register_backend(OpenVinoBackend())
