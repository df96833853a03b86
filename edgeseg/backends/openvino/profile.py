"""Per-node time of an OpenVINO artifact from the CPU plugin's own performance counters (``PERF_COUNT``).

After each timed inference the request's ``profiling_info`` lists every node the plugin executed (after its graph
transformations and fusions: a row is a fused kernel under the name of its last node), with its real time and
the implementation it ran (``exec_type``: ``brgconv_avx512_amx_I8``, ``jit_avx512_FP32``, ``ref_any``...).
Each kernel's time is its mean over the timed runs (means add up; see ``edgeseg.bench.opprofile``); ``explained``
is the sum of kernel means over the mean wall time of ``infer``. Off the fast path: Reorder nodes (layout
conversion), FakeQuantize left as a node (a quantization that did not fold into its consumer), and ``ref``
implementations (the plugin's reference kernels, no JIT).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

# ops whose reference implementation is a copy (the plugin runs them in place where it can): not a slow path
_CHEAP_REF = frozenset({"Concat", "VariadicSplit", "Split", "Reshape", "Squeeze", "Unsqueeze"})


def _path(op_type: str, exec_type: str) -> str:
    if op_type in ("Reorder", "Transpose"):
        return "layout"
    if op_type == "FakeQuantize":
        return "quantize/dequantize"
    kind = exec_type.lower()  # e.g. brgconv_avx512_1x1_bf16, brgemm_avx512_amx_i8, jit_uni_f32, ref_bf16
    if kind.startswith("ref") and op_type not in _CHEAP_REF:
        return "reference kernel"
    if kind.endswith(("_i8", "_u8")):
        return "int8 compute"
    if kind.endswith("_bf16"):
        return "bf16 compute"
    return "compute"


def profile_openvino(folder: Path, manifest: dict, threads: int, runs: int, warmup: int):
    from edgeseg.backends.openvino.runtime import OpenVinoModel
    from edgeseg.bench.opprofile import Kernel, OpProfile, OpTypeRow, off_path_summary

    model = OpenVinoModel(folder / manifest["file"], manifest["precision"], threads, manifest["target"], True)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(model.input_shape).astype(np.float32))
    infer = model.timing_call(x)
    for _ in range(warmup):
        infer()
    walls: list[float] = []
    per_node: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    per_run: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        infer()
        wall = (time.perf_counter() - t0) * 1000.0
        walls.append(wall)
        total = 0.0
        for p in model.request.profiling_info:
            if str(p.status).endswith("EXECUTED"):
                ms = p.real_time.total_seconds() * 1000.0
                per_node[(p.node_name, p.node_type, p.exec_type)].append(ms)
                total += ms
        per_run.append(total / wall)
    mean_ms = statistics.fmean(walls)
    kernels = [Kernel(f"{n} [{e}]", t, sum(v) / runs, 0.0) for (n, t, e), v in per_node.items()]
    kernels.sort(key=lambda k: -k.ms)
    for k in kernels:
        k.share = k.ms / mean_ms
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (_, t, e), v in per_node.items():
        groups[(t, _path(t, e))].append(sum(v) / runs)
    by_type = [OpTypeRow(t, len(v), sum(v), sum(v) / mean_ms, path) for (t, path), v in groups.items()]
    by_type.sort(key=lambda r: -r.ms)
    off_path = off_path_summary(
        by_type,
        mean_ms,
        {
            "layout": "Reorder nodes: layout conversions between kernels (blocked <-> planar), no arithmetic",
            "quantize/dequantize": "FakeQuantize nodes that did not fold into a neighbouring kernel",
            "reference kernel": "nodes on the CPU plugin's reference implementation (no JIT kernel for them here)",
        },
    )
    effective = ", ".join(f"{k}={v}" for k, v in model.effective.items())
    return OpProfile(
        artifact=str(folder / manifest["file"]),
        runtime=f"OpenVINO CPU plugin ({effective}), PERF_COUNT counters",
        threads=threads,
        runs=runs,
        warmup=warmup,
        run_ms=statistics.median(walls),
        run_mean_ms=mean_ms,
        kernels=kernels,
        by_type=by_type,
        explained=sum(k.ms for k in kernels) / mean_ms,
        explained_per_run=per_run,
        off_path=off_path,
    )
