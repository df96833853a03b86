"""What a backend plugin is: the contract between ``edgeseg export`` / the runtimes and one deployment format.

A backend owns everything about its format: the targets it offers (one per precision), the pip extra and the
modules an export imports, export itself, the runtime that runs its artifacts here, its lint rules, its INT8
policy, the estimator's fusion rules, its op profiler and the source files whose hash enters the artifact cache
key. Model families never appear here: the rewrites an export applies are the model family's business
(``edgeseg.models.registry.deploy_rewrites``); a backend only names its format.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgeseg.artifact import LoadedArtifact, source_hash
from edgeseg.errors import EdgesegError
from edgeseg.estimate.graph import FusionRules
from edgeseg.lint import LintReport, RuleSet
from edgeseg.quantize.policy import Int8Policy
from edgeseg.residency import Residency


@dataclass(frozen=True)
class Target:
    """One row of the target table: a format at a precision (``trt-fp16``), derived from its backend."""

    name: str
    format: str  # the backend's name: onnx | tflite | coreml | tensorrt | ...
    precision: str  # fp32 | fp16 | int8
    suffix: str  # the model file's suffix
    runtime: str  # what runs it on this machine, or what it needs
    extra: str  # pip extra with its packages
    rules: str  # lint rule set (the backend's)


@dataclass
class Int8Request:
    """What an INT8 export gives its backend: the calibration set (with its held-out slice), the mIoU budget
    (points on the held-out slice; None: quantize everything the policy allows) and the dataset's classes."""

    calib: object  # edgeseg.quantize.calibration.CalibrationSet
    max_miou_drop: float | None
    spec: object  # edgeseg.data.datasets.DatasetSpec
    progress: Callable[[str], None] | None = None
    # the budget judges the mIoU drop, "worst-class": the largest per-class IoU drop, or "agreement": the share of
    # pixels whose argmax differs from the fp32 model's (no labels needed)
    objective: str = "mean"

    def holdout_scorer(self, reference, size: tuple[int, int]):
        from edgeseg.quantize.search import HoldoutScorer

        c = self.calib
        return HoldoutScorer(
            reference,
            c.holdout_images,
            c.holdout_labels,
            size,
            self.spec.num_classes,
            self.spec.ignore_index,
            objective=self.objective,
        )

    def holdout_check(self, runner, size: tuple[int, int], reference, note: str = "") -> dict:
        """A backend without a per-layer search measures its held-out drop against the budget and says so."""
        scorer = self.holdout_scorer(reference, size)
        miou, snr = scorer.score(runner)
        drop = scorer.miou_reference - miou
        return {
            "budget": self.max_miou_drop,
            "holdout_images": len(scorer.inputs),
            "miou_fp32": scorer.miou_reference,
            "miou_final": miou,
            "drop_final": round(drop, 3),
            "snr_db": round(snr, 2),
            "within_budget": drop <= self.max_miou_drop,
            "objective": self.objective,
            "float_layers": [],
            "note": note or "no per-layer search for this backend: the held-out drop is checked against the budget",
        }


@dataclass
class ExportJob:
    """One export handed to a backend: the deploy graph (``DeployWrapper`` around the rewritten model, in the
    dtype the target carries), a zero example input, the staging folder to write into, and the options."""

    target: Target
    module: torch.nn.Module
    example: torch.Tensor
    folder: Path
    output_name: str  # "logits" | "labels"
    opset: int
    int8: Int8Request | None = None

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.example.shape[-2:])

    def pt2e_int8(self, realize: Callable, sensitivity_on: str, probes_on: str) -> Pt2eInt8:
        """What a PT2E backend's export (TFLite, ExecuTorch) takes from an INT8 request: the calibration inputs
        and, under an mIoU budget, the float chooser that runs the mixed-precision search, each budget probe
        realized by ``realize(converted_module)`` (the backend's runtime). Float targets get neither."""
        if self.target.precision != "int8":
            return Pt2eInt8(None, None, sensitivity_on, probes_on)
        int8 = self.int8
        out = Pt2eInt8(int8.calib.inputs(self.size), None, sensitivity_on, probes_on)
        if int8.max_miou_drop is not None:
            from edgeseg.quantize.search import search_pt2e

            scorer = int8.holdout_scorer(self.module, self.size)

            def choose_float(switches, convert) -> list[str]:
                probe = lambda names: realize(convert(names))  # noqa: E731
                out.searched.append(search_pt2e(switches, scorer, int8.max_miou_drop, probe, int8.progress))
                return out.searched[0].nodes_to_exclude

            out.choose_float = choose_float
        return out


@dataclass
class Pt2eInt8:
    """A PT2E INT8 export's inputs (calibration, the search's float chooser) and, after it, the search's result."""

    calib_inputs: list | None
    choose_float: Callable | None
    sensitivity_on: str  # what the per-layer sensitivity was scored on
    probes_on: str  # what the budget probes were scored on
    searched: list = field(default_factory=list)

    def search_report(self) -> dict | None:
        """The manifest's ``mixed_precision`` entry (None: no search ran)."""
        if not self.searched:
            return None
        result = self.searched[0]
        return {
            **result.as_dict(),
            "within_budget": result.drop_final <= result.budget,
            "sensitivity_scored_on": self.sensitivity_on,
            "probes_scored_on": self.probes_on,
        }


@dataclass
class Built:
    """What a backend's export produced: the model file's name in the folder, manifest facts, a predictor that
    runs it here for parity (None where nothing can run it here), what measured parity (or why nothing could),
    and its lint report."""

    file: str
    info: dict
    runner: Callable | None
    parity_runtime: str
    lint: LintReport


@dataclass(frozen=True)
class Precision:
    """A precision a backend offers: the runtime note shown in the target table."""

    runtime: str


class Backend(ABC):
    """Subclass, fill the class attributes, implement ``build`` and ``load``, and ``register_backend`` it."""

    name: str = ""  # manifests' "format"
    target_prefix: str = ""  # target names are ``<prefix>-<precision>``; default: the name
    suffix: str = ""
    extra: str = ""  # pip extra: pip install 'edgeseg[<extra>]'
    packages: tuple[str, ...] = ()  # modules every export imports
    int8_packages: tuple[str, ...] = ()  # modules INT8 exports import as well
    precisions: dict[str, Precision] = {}
    rules: RuleSet | None = None  # graph rules: rank, forbidden ops, resize modes (edgeseg.lint)
    int8_policy: Int8Policy | None = None
    graph_fp16: bool = False  # fp16 is carried in the exported graph (True) or applied by the backend's converter
    calib_methods: tuple[str, ...] = ("percentile",)  # what --calib-method may be for its INT8 target
    fusion: FusionRules | None = None  # what its runtime fuses into one kernel (the latency estimator's grouping)
    int8_float_rest: str = "fp32"  # what an int8 artifact's float ops run in (the estimator's assumption)
    graph_is_onnx: bool = False  # the model file is the ONNX graph itself (the estimator reads it directly)
    # how a device reached by edgeseg times this format's model file: over SSH with "trtexec" or edgeseg's Python
    # "runner" (bench/remote_runner.py), or None (the note says why); over adb with TFLite's benchmark_model
    ssh_timer: str | None = "runner"
    adb_timer: bool = False
    device_note: str = ""  # why a device cannot time it, where neither path can
    profiler_note: str = ""  # where per-op times come from when edgeseg cannot profile this format here
    code_modules: tuple[str, ...] = ()  # modules beside the backend package whose source shapes its artifacts

    # -- the target table -------------------------------------------------------------------------------------
    def targets(self) -> list[Target]:
        prefix = self.target_prefix or self.name
        return [
            Target(f"{prefix}-{p}", self.name, p, self.suffix, prec.runtime, self.extra, self.rules.name)
            for p, prec in self.precisions.items()
        ]

    # -- requirements -----------------------------------------------------------------------------------------
    def missing_packages(self, precision: str) -> list[str]:
        wanted = (*self.packages, *(self.int8_packages if precision == "int8" else ()))
        return [m for m in wanted if importlib.util.find_spec(m) is None]

    def require(self, target: Target) -> None:
        missing = self.missing_packages(target.precision)
        if missing:
            raise EdgesegError(f"target {target.name} needs {', '.join(missing)}: pip install 'edgeseg[{self.extra}]'")

    def versions(self) -> dict[str, str]:
        """Versions of the distributions its exports import (manifest and cache key)."""
        from importlib.metadata import PackageNotFoundError, version

        out = {}
        for module in ("torch", *self.packages):
            dist = module.replace("_", "-")
            try:
                out[dist] = version(dist)
            except PackageNotFoundError:
                out[dist] = "not installed"
        return out

    def code_hash(self) -> str:
        """sha256 prefix of the source that makes this backend's artifacts: the module defining the class (a
        package's ``__init__``: the whole package) and ``code_modules``."""
        return source_hash(type(self).__module__, *self.code_modules)

    # -- export and run ---------------------------------------------------------------------------------------
    @abstractmethod
    def build(self, job: ExportJob) -> Built:
        """Write the model file for ``job.target`` into ``job.folder``; INT8 targets quantize with the backend's
        policy and ``job.int8`` (calibration, budget)."""

    @abstractmethod
    def load(self, folder: Path, manifest: dict, threads: int | None) -> LoadedArtifact:
        """Open an artifact of this format with its runtime here (a one-line error says what it needs)."""

    @abstractmethod
    def lint(self, path: Path) -> LintReport:
        """Lint a model file of this format against the backend's rules."""

    def runs_here(self) -> bool:
        """Whether this machine can run the format's artifacts (for mIoU and latency here)."""
        return True

    @property
    def profiles_here(self) -> bool:
        """Whether ``edgeseg op-profile`` can time this format's artifacts per op here."""
        return type(self).profile is not Backend.profile

    def profile(self, folder: Path, manifest: dict, threads: int, runs: int, warmup: int):
        """Per-op time of an artifact here (``edgeseg.bench.opprofile.OpProfile``); None: no profiler here."""
        return None

    def residency(self, path: Path) -> list[Residency]:
        """Where the model file's nodes would run on each accelerator this format reaches (one record per
        accelerator, each naming the tool that measured it); [] where the backend has no way to tell."""
        return []

    def adb_command(self, reach, threads: int, runs: int) -> str | None:
        """The command that times this format's model file on an Android phone with the format's own runner
        (``bench_over_adb``); None: TFLite's benchmark_model where ``adb_timer``, else no adb path."""
        return None

    def bench_over_adb(self, transport, model_file: Path, reach, threads: int, warmup: int, runs: int) -> dict:
        """Push ``model_file`` over adb and time it with the format's own runner: ``stats`` (LatencyStats),
        ``command``, ``device_state``, ``runtime``; RuntimeError says why it could not."""
        raise RuntimeError(f"no adb runner for {self.name} artifacts")

    def would_be_command(self, remote_file: str, threads: int) -> str | None:
        """The command that times the model file on a device of this format's runtime; None: edgeseg's runner."""
        return None
