"""Where an artifact's time goes on this machine: per kernel and per op type, with what falls off the fast path.

ONNX Runtime: the session's own profiler (``SessionOptions.enable_profiling``) records every kernel of every run
after graph optimisation, so a row is a *fused* kernel (``FusedConv`` = Conv + activation, NCHWc-blocked convs,
``QLinearConv`` for int8) under the node name ORT gave it. Runs are told apart by their ``model_run`` events; the
warm-up runs are dropped and each kernel's time is its mean over the timed runs: means add up (the kernels' means
sum to the mean run), medians do not (on a loaded machine a preemption lands in a different kernel each run, so
the sum of per-kernel medians falls well short of the median run). "Explained" is the sum of the kernel means
over the mean ``model_run``: what is left is the executor's own overhead between kernels. The median run is
reported beside it as the latency figure.
Off the fast path here means time spent converting rather than computing: layout reorders (NCHW <-> NCHWc,
Transpose) and, in int8 artifacts, QuantizeLinear / DequantizeLinear around ops that run in float.

TFLite (ai-edge-litert): the Python interpreter exposes no per-op timer, so the profile gives what it can
measure honestly: the XNNPACK partitions (DELEGATE nodes) and every op left outside them (these run on the
reference kernels, and each partition boundary costs a tensor hand-over), and the whole ``invoke`` time. Per-op
times inside XNNPACK need TFLite's ``benchmark_model --enable_op_profiling=true`` (command given in the report).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeseg.artifact import LoadedArtifact
from edgeseg.backends import BACKENDS, backend_for
from edgeseg.backends.tflite.runtime import executed_ops
from edgeseg.bench.host import inference_call
from edgeseg.errors import EdgesegError

LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput", "Transpose"})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


@dataclass
class Kernel:
    name: str  # the node name after the runtime's graph optimisation
    op_type: str
    ms: float  # mean over the timed runs
    share: float  # of the mean run time


@dataclass
class OpTypeRow:
    op_type: str
    count: int
    ms: float | None  # None where the runtime has no per-op timer (TFLite)
    share: float | None
    path: str  # "compute", "int8 compute", "layout", "quantize/dequantize"


@dataclass
class OpProfile:
    artifact: str
    runtime: str
    threads: int
    runs: int
    warmup: int
    run_ms: float  # median time of one inference as the runtime measured it
    run_mean_ms: float  # the shares' denominator (means add up; see the module docstring)
    kernels: list[Kernel] = field(default_factory=list)
    by_type: list[OpTypeRow] = field(default_factory=list)
    explained: float | None = None  # sum of kernel means / run_mean_ms (None where no per-op timer exists)
    explained_per_run: list[float] = field(default_factory=list)
    off_path: dict[str, dict] = field(default_factory=dict)  # kind -> {count, ms, share, note}
    partitions: int | None = None  # TFLite: XNNPACK delegate partitions
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _path_of(op_type: str) -> str:
    if op_type in LAYOUT_OPS:
        return "layout"
    if op_type in QDQ_OPS:
        return "quantize/dequantize"
    if op_type.startswith("QLinear") or "Integer" in op_type or op_type in ("QGemm", "QAttention"):
        return "int8 compute"
    return "compute"


def off_path_summary(by_type: list, mean_ms: float, notes: dict[str, str]) -> dict[str, dict]:
    """Time off the compute path, per kind (``notes``: kind -> why it costs): count, ms and share of the run, from
    op-type rows whose ``path`` names the kind. Every runtime's profiler reports the same summary."""
    out = {}
    for kind, note in notes.items():
        rows = [r for r in by_type if r.path == kind]
        if rows:
            ms = sum(r.ms for r in rows)
            out[kind] = {"count": sum(r.count for r in rows), "ms": ms, "share": ms / mean_ms, "note": note}
    return out


def _group(kernels: list[Kernel], total_ms: float) -> list[OpTypeRow]:
    acc: dict[str, list[float]] = defaultdict(list)
    for k in kernels:
        acc[k.op_type].append(k.ms)
    rows = [OpTypeRow(t, len(v), sum(v), sum(v) / total_ms, _path_of(t)) for t, v in acc.items()]
    return sorted(rows, key=lambda r: -r.ms)


def profile_ort(onnx_file: Path, runtime: str, threads: int, runs: int, warmup: int) -> OpProfile:
    from edgeseg.backends.onnx.runtime import OnnxRuntimeModel

    with tempfile.TemporaryDirectory(prefix="edgeseg-profile-") as tmp:
        model = OnnxRuntimeModel(onnx_file, threads, profile_prefix=str(Path(tmp) / "ort"))  # spinning off, as bench
        session = model.session
        x = np.random.default_rng(0).standard_normal(model.input_shape).astype(np.float32)
        for _ in range(warmup + runs):
            session.run(None, {model.input_name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    return _parse_ort_events(events, str(onnx_file), runtime, threads, runs, warmup)


def _parse_ort_events(events: list[dict], artifact: str, runtime: str, threads: int, runs: int, warmup: int):
    """Kernel medians over the timed runs from an ORT profile (a chrome-trace event list)."""
    model_runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    model_runs.sort(key=lambda e: e["ts"])
    if len(model_runs) < warmup + 1:
        raise EdgesegError(f"the ONNX Runtime profile holds {len(model_runs)} runs, expected {warmup + runs}")
    timed = model_runs[warmup:]
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    per_kernel: dict[tuple[str, str], list[float]] = defaultdict(list)
    per_run: list[float] = []  # share of each run inside kernels: on a loaded CPU the gaps between kernels grow
    for r in timed:
        start, end = r["ts"], r["ts"] + r["dur"]
        seen: dict[tuple[str, str], float] = defaultdict(float)
        for e in nodes:
            if start <= e["ts"] <= end:
                key = (e["name"][: -len("_kernel_time")], e.get("args", {}).get("op_name", "?"))
                seen[key] += e["dur"] / 1000.0
        for key, ms in seen.items():
            per_kernel[key].append(ms)
        per_run.append(sum(seen.values()) / (r["dur"] / 1000.0))
    run_ms = statistics.median(r["dur"] / 1000.0 for r in timed)
    mean_ms = statistics.fmean(r["dur"] / 1000.0 for r in timed)
    kernels = [Kernel(n, op, sum(v) / len(timed), 0.0) for (n, op), v in per_kernel.items()]
    kernels.sort(key=lambda k: -k.ms)
    for k in kernels:
        k.share = k.ms / mean_ms
    by_type = _group(kernels, mean_ms)
    off_path = off_path_summary(
        by_type,
        mean_ms,
        {
            "layout": "NCHW <-> NCHWc reorders and transposes: data movement, no arithmetic",
            "quantize/dequantize": "int8 <-> float conversions around ops that run in float",
        },
    )
    int8 = [r for r in by_type if r.path == "int8 compute"]
    if int8 or "quantize/dequantize" in off_path:
        floats = [r for r in by_type if r.path == "compute"]
        ms = sum(r.ms for r in floats)
        off_path["float compute in an int8 graph"] = {
            "count": sum(r.count for r in floats),
            "ms": ms,
            "share": ms / mean_ms,
            "note": "kernels the quantized graph still runs in float (by policy, or without an int8 kernel here)",
        }
    return OpProfile(
        artifact=artifact,
        runtime=f"{runtime}, ORT session profiler",
        threads=threads,
        runs=len(timed),
        warmup=warmup,
        run_ms=run_ms,
        run_mean_ms=mean_ms,
        kernels=kernels,
        by_type=by_type,
        explained=sum(k.ms for k in kernels) / mean_ms,
        explained_per_run=per_run,
        off_path=off_path,
    )


def delegated_census(interpreter, executed: set[int]) -> list[OpTypeRow]:
    """Count (no times: XNNPACK has no per-op timer here) of the nodes a delegate took, per op type and path: what
    an int8 graph spends outside int8 compute shows up as TRANSPOSE (layout), QUANTIZE/DEQUANTIZE and float
    compute left in it (the attention core, float islands where the quantizer has no int8 op)."""
    details = {int(t["index"]): t for t in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE" and op["index"] not in executed]

    def out_dtype(op) -> str:
        t = details.get(int(op["outputs"][0])) if len(op["outputs"]) else None
        return np.dtype(t["dtype"]).name if t is not None else "?"

    int8_graph = any(out_dtype(op) in ("int8", "uint8") for op in ops)
    acc: dict[tuple[str, str], int] = defaultdict(int)
    for op in ops:
        name, dtype = op["op_name"], out_dtype(op)
        if name == "TRANSPOSE":
            path = "layout"
        elif name in ("QUANTIZE", "DEQUANTIZE"):
            path = "quantize/dequantize"
        elif dtype in ("int8", "uint8"):
            path = "int8 compute"
        else:
            path = "float compute in an int8 graph" if int8_graph and dtype.startswith("float") else "compute"
        acc[(f"{name} (in XNNPACK)", path)] += 1
    return [OpTypeRow(name, n, None, None, path) for (name, path), n in sorted(acc.items(), key=lambda kv: -kv[1])]


def profile_tflite(art: LoadedArtifact, threads: int, runs: int, warmup: int) -> OpProfile:
    from edgeseg.bench.stats import TimingPlan, measure

    interpreter = art.run.interpreter
    executed = executed_ops(interpreter)
    partitions = sum(1 for op in executed if op["op_name"] == "DELEGATE")
    outside: dict[str, int] = defaultdict(int)
    for op in executed:
        if op["op_name"] != "DELEGATE":
            outside[op["op_name"]] += 1
    timing = measure(inference_call(art), TimingPlan(warmup=warmup, min_runs=runs, max_runs=runs))
    run_ms = timing.stats.median_ms
    by_type = [OpTypeRow("DELEGATE (XNNPACK partition)", partitions, None, None, "XNNPACK")]
    by_type += [OpTypeRow(name, n, None, None, "off XNNPACK") for name, n in sorted(outside.items())]
    by_type += delegated_census(interpreter, {op["index"] for op in executed})
    off_path = {}
    if outside:
        off_path["off XNNPACK"] = {
            "count": sum(outside.values()),
            "ms": None,
            "share": None,
            "note": "ops outside the delegate run on TFLite's reference CPU kernels: " + ", ".join(sorted(outside)),
        }
    return OpProfile(
        artifact=str(art.path),
        runtime=f"{art.runtime}, invoke timing",
        threads=threads,
        runs=timing.stats.n,
        warmup=warmup,
        run_ms=run_ms,
        run_mean_ms=timing.stats.mean_ms,
        by_type=by_type,
        explained=None,
        off_path=off_path,
        partitions=partitions,
        notes=[
            "per-op times inside XNNPACK are not exposed by ai-edge-litert's Python interpreter; run TFLite's "
            f"benchmark_model --graph={art.path.name} --num_threads={threads} --enable_op_profiling=true for them",
        ],
    )


def profile_artifact(folder: Path, manifest: dict, threads: int, runs: int, warmup: int) -> OpProfile:
    """Profile the artifact in ``folder`` (its manifest already read) with its backend's profiler here."""
    from edgeseg.eval.stats import load_state, load_warning

    backend = backend_for(manifest["format"])
    before = load_state()
    prof = backend.profile(folder, manifest, threads, runs, warmup)
    after = load_state()
    if prof is None:
        here = ", ".join(b.name for b in BACKENDS.values() if b.profiles_here)
        elsewhere = f"; {backend.profiler_note}" if backend.profiler_note else ""
        raise EdgesegError(f"no profiler here for {backend.name} artifacts (profiled here: {here}){elsewhere}")
    loads = [x["loadavg_1min"] for x in (before, after) if x["loadavg_1min"] is not None]
    if loads:  # the load beside the timing, and a warning when other work competed for the cores
        prof.notes.append(f"1-minute load {loads[0]:.1f} before, {loads[-1]:.1f} after, on {after['cores']} cores")
        warning = load_warning(max(loads), after["cores"])
        if warning:
            prof.notes.append(warning)
    return prof
