"""ExecuTorch: PyTorch's own on-device runtime. ``torch.export`` -> edge program -> one delegate's partitions ->
a ``.pte`` program, run here by ExecuTorch's Python runtime.

Targets: ``executorch-fp32`` and ``executorch-int8`` (XNNPACK delegate; int8 is PT2E with ExecuTorch's
XNNPACKQuantizer, the per-op float switches and the mixed-precision search to the mIoU budget that tflite-int8
has), ``executorch-coreml`` (Core ML delegate, fp16; lowered and linted here, runs on Apple platforms) and
``executorch-vulkan`` (Vulkan delegate, fp32; lowered and linted here, runs on an Android GPU with a runtime built
with Vulkan). Residency: the delegated / non-delegated node counts of the lowered edge program, recorded at export.
Android: the .pte is pushed over adb and run with ExecuTorch's ``executor_runner`` (``reach.executor_runner``).
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from edgeseg.artifact import LoadedArtifact
from edgeseg.backends.base import Backend, Built, ExportJob, Precision, Target
from edgeseg.backends.executorch.export import DELEGATES
from edgeseg.backends.registry import register_backend
from edgeseg.errors import EdgesegError
from edgeseg.estimate.graph import COMMON_ACTIVATIONS, FusionRules
from edgeseg.lint import ALWAYS_FORBIDDEN, LintReport, RuleSet
from edgeseg.quantize.policy import PT2E_INT8_OPS, Int8Policy
from edgeseg.residency import Residency

_XNNPACK = "executorch runtime (XNNPACK)"
_COREML_NEEDS = "needs an Apple platform (the Core ML delegate runs on macOS / iOS only)"
_VULKAN_NEEDS = (
    "needs a Vulkan device and an ExecuTorch runtime built with EXECUTORCH_BUILD_VULKAN=ON (the pip wheel's "
    "runtime has no Vulkan backend; on Android: executor_runner from such a build)"
)
_DEFAULT_RUNNER = "/data/local/tmp/executor_runner"
# target -> (delegate, precision, what runs it)
_TARGETS = {
    "fp32": ("xnnpack", "fp32", _XNNPACK),
    "int8": ("xnnpack", "int8", _XNNPACK),
    "coreml": ("coreml", "fp16", _COREML_NEEDS),
    "vulkan": ("vulkan", "fp32", _VULKAN_NEEDS),
}
README_IOS = """\
# Shipping this ExecuTorch program in an iOS / macOS app

`{file}` is an ExecuTorch program whose graph is delegated to {delegate}.

- Add the ExecuTorch Swift package (https://github.com/pytorch/executorch, branch `swiftpm-{version}`) to the app
  and link the products `executorch`, `backend_{lib}` and `kernels_optimized` (portable kernels run whatever the
  delegate did not take: see `lint.json`).
- Bundle `{file}` as an app resource and load it with `Module(filePath:)` (Swift) or `executorch::extension::Module`
  (C++); call `forward` with a float32 tensor of shape {shape} (RGB/255, ImageNet mean/std, NCHW).
- The Core ML delegate compiles the embedded mlprogram on first load (cached by the OS afterwards); it needs
  iOS 17 / macOS 14 or newer (the minimum deployment target it was lowered for).
"""


def residency_of(delegate: str, delegation: dict) -> Residency:
    """The residency record of a lowered program's delegation summary (``export.delegation``)."""
    return Residency(
        accelerator=delegate,
        tool=f"executorch {version('executorch')} delegation info",
        nodes_total=delegation["nodes_total"],
        nodes_supported=delegation["nodes_delegated"],
        partitions=delegation["partitions"],
        unsupported_ops=delegation["non_delegated_ops"],
        note="edge-program nodes taken by the delegate's partitioner at export (the rest run on portable kernels)",
    )


class ExecuTorchBackend(Backend):
    name = "executorch"
    suffix = ".pte"
    extra = "executorch"
    packages = ("executorch", "torchao")
    precisions = {k: Precision(runtime) for k, (_, _, runtime) in _TARGETS.items()}
    # XNNPACK takes static shapes up to 6-D; Vulkan's texture layout up to 4-D is the limit that binds a .pte meant
    # for every delegate, so edgeseg's graphs are held to 4-D as for TFLite's GPU delegate.
    rules = RuleSet("executorch", 4, ALWAYS_FORBIDDEN, frozenset({"nearest", "linear"}))
    int8_policy = Int8Policy(
        "executorch",
        (*PT2E_INT8_OPS, "Gemm"),
        True,
        "int8",
        note="ExecuTorch XNNPACKQuantizer (PT2E): conv/linear/add/mul/cat int8; HardSwish on XNNPACK's int8 kernel",
    )
    ssh_timer = None
    device_note = "ExecuTorch programs are timed here or on Android over adb with executor_runner"
    fusion = FusionRules(
        "executorch",
        COMMON_ACTIVATIONS,
        False,
        False,
        "XNNPACK delegate: conv/linear + clamp (ReLU, ReLU6, HardTanh) fused; BN folded at lowering",
    )
    code_modules = ("edgeseg.quantize.pt2e", "edgeseg.quantize.search", "edgeseg.quantize.policy")

    def targets(self) -> list[Target]:
        return [
            Target(f"executorch-{name}", self.name, precision, self.suffix, runtime, self.extra, self.rules.name)
            for name, (_, precision, runtime) in _TARGETS.items()
        ]

    def require(self, target: Target) -> None:
        super().require(target)
        if target.name == "executorch-coreml":
            import importlib.util

            if importlib.util.find_spec("coremltools") is None:
                raise EdgesegError("target executorch-coreml needs coremltools: pip install 'edgeseg[coreml]'")

    @staticmethod
    def delegate_of(target_name: str) -> str:
        return _TARGETS[target_name.removeprefix("executorch-")][0]

    def build(self, job: ExportJob) -> Built:
        from edgeseg.backends.executorch.export import export_executorch
        from edgeseg.backends.executorch.runtime import ExecuTorchModel, registered_backends

        file = "model.pte"
        delegate = self.delegate_of(job.target.name)
        int8_target = job.target.precision == "int8"
        pt2e = job.pt2e_int8(
            lambda program: ExecuTorchModel(program, threads=2),
            "the PT2E int8 graph run by PyTorch (the numerics the lowering is given)",
            "lowered .pte programs run by ExecuTorch's runtime; the last is this artifact",
        )

        path = job.folder / file
        info = export_executorch(
            job.module, job.example, path, delegate, job.target.precision, pt2e.calib_inputs, pt2e.choose_float
        )
        info["residency"] = [residency_of(delegate, info["delegation"]).model_dump()]
        runner, note = None, f"none: {self.precisions[job.target.name.removeprefix('executorch-')].runtime}"
        if DELEGATES[delegate] in registered_backends():
            runner = ExecuTorchModel(path, threads=2)
            note = f"executorch {version('executorch')} runtime ({delegate})"
        if int8_target:
            info["quantization"] = {
                "int8_nodes": info.pop("int8_nodes"),
                "policy": self.int8_policy.as_dict(),
                "mixed_precision": pt2e.search_report(),
            }
        if delegate == "coreml":
            (job.folder / "README.md").write_text(
                README_IOS.format(
                    file=file,
                    delegate="Core ML (fp16 mlprogram)",
                    version=version("executorch"),
                    lib="coreml",
                    shape=list(job.example.shape),
                )
            )
        from edgeseg.backends.executorch.lint import lint_executorch

        return Built(file, info, runner, note, lint_executorch(path, self.rules, delegate, info["delegation"]))

    def load(self, folder: Path, manifest: dict, threads: int | None) -> LoadedArtifact:
        from edgeseg.backends.executorch.runtime import ExecuTorchModel, registered_backends

        delegate = manifest.get("delegate", "xnnpack")
        if DELEGATES[delegate] not in registered_backends():
            need = _COREML_NEEDS if delegate == "coreml" else _VULKAN_NEEDS
            raise EdgesegError(f"{manifest['target']} cannot run here: it {need}")
        path = folder / manifest["file"]
        model = ExecuTorchModel(path, threads)
        return LoadedArtifact(path, manifest, model, f"executorch {version('executorch')} runtime ({delegate})")

    def runs_here(self) -> bool:
        from edgeseg.backends.executorch.runtime import registered_backends

        return "XnnpackBackend" in registered_backends()

    def lint(self, path: Path) -> LintReport:
        from edgeseg.backends.executorch.lint import lint_executorch, read_plan

        manifest = _manifest_beside(path)
        delegates = read_plan(path).delegate_calls
        delegate = manifest.get("delegate") or (max(delegates, key=delegates.get) if delegates else "xnnpack")
        return lint_executorch(path, self.rules, delegate, manifest.get("delegation"))

    def residency(self, path: Path) -> list[Residency]:
        """The manifest's records (node counts from the edge program at export); a bare .pte gives what its
        execution plan tells: partitions per delegate and the ops left to the portable kernels (each delegated
        partition counted as one node, the tool says so)."""
        manifest = _manifest_beside(path)
        if manifest.get("residency"):
            return [Residency(**r) for r in manifest["residency"]]
        from edgeseg.backends.executorch.lint import read_plan

        plan = read_plan(path)
        left = plan.compute_left
        return [
            Residency(
                accelerator=accel,
                tool=f"executorch {version('executorch')} .pte execution plan",
                nodes_total=partitions + sum(left.values()),
                nodes_supported=partitions,
                partitions=partitions,
                unsupported_ops=left,
                note="no manifest: each delegate call counts as one node (node counts are recorded at export)",
            )
            for accel, partitions in plan.delegate_calls.items()
        ]

    def adb_command(self, reach, threads: int, runs: int) -> str | None:
        from edgeseg.backends.executorch.adb import REMOTE_DIR, executor_runner_command

        binary = reach.executor_runner or _DEFAULT_RUNNER
        return executor_runner_command(binary, f"{REMOTE_DIR}/model{self.suffix}", threads, runs, reach.cpu_mask)

    def bench_over_adb(self, transport, model_file: Path, reach, threads: int, warmup: int, runs: int) -> dict:
        from edgeseg.backends.executorch.adb import bench_over_adb

        if not reach.executor_runner:
            raise RuntimeError(
                "no executor_runner path in the profile (reach.executor_runner, e.g. " + _DEFAULT_RUNNER + ")"
            )
        return bench_over_adb(transport, model_file, reach.executor_runner, threads, warmup, runs, reach.cpu_mask)

    def profile(self, folder: Path, manifest: dict, threads: int, runs: int, warmup: int):
        from edgeseg.backends.executorch.profile import profile_etdump

        return profile_etdump(self.load(folder, manifest, threads), threads, runs, warmup)


def _manifest_beside(path: Path) -> dict:
    """The manifest of the artifact folder holding ``path`` ({} for a bare .pte)."""
    candidate = Path(path).parent / "manifest.json"
    if Path(path).is_file() and candidate.is_file():
        try:
            manifest = json.loads(candidate.read_text())
        except (OSError, ValueError):
            return {}
        if manifest.get("format") == "executorch" and manifest.get("file") == Path(path).name:
            return manifest
    return {}


register_backend(ExecuTorchBackend())
