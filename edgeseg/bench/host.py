"""Latency of an artifact on this machine, with the runtime of its format and a fixed thread count.

The timed call is the runtime's own inference (ONNX Runtime ``session.run``, LiteRT ``set_tensor`` + ``invoke``)
on an input prepared once: the layout and dtype conversion around it is preprocessing, not inference. ONNX
Runtime sessions are opened with intra-op spinning off (see ``OnnxRuntimeModel``): on a shared 2-core machine
spinning threads of one session steal the cores of whatever else runs.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from edgeseg.artifact import LoadedArtifact
from edgeseg.backends import load_artifact
from edgeseg.bench.stats import Timing, TimingPlan, interleave, measure
from edgeseg.eval.stats import load_state, usable_cores


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict:
    return {
        "cpu": cpu_name(),
        "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def inference_call(art: LoadedArtifact, seed: int = 0) -> Callable[[], object]:
    """A no-argument call that runs one inference of ``art`` on a fixed random input."""
    h, w = art.input_size
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, 3, h, w)).astype(np.float32))
    run = art.run
    timing_call = getattr(run, "timing_call", None)  # a runtime's call without per-run host conversions
    if timing_call is not None:
        return timing_call(x)
    return lambda: run(x)  # any other runtime: its full call


def measure_here(folder: Path, threads: int, plan: TimingPlan) -> tuple[Timing, str, dict]:
    """(timing, runtime description, load average before/after) of the artifact in ``folder``."""
    art = load_artifact(Path(folder), threads=threads)
    call = inference_call(art)
    before = os.getloadavg() if hasattr(os, "getloadavg") else None
    timing = measure(call, plan)
    after = os.getloadavg() if hasattr(os, "getloadavg") else None
    load = {
        "loadavg_1min_before": before[0] if before else None,
        "loadavg_1min_after": after[0] if after else None,
        "cores": usable_cores(),  # a load above this many means other work competed for the cores
    }
    return timing, art.runtime, load


def time_interleaved(folders: dict[str, Path], runs: int, warmup: int, threads: int) -> dict[str, dict]:
    """Median latency per artifact with the artifacts timed round-robin (``stats.interleave``: one call each in
    turn, the first one rotating), so a load change on a shared machine hits all of them alike (for tables that
    compare artifacts). ``folders``: label -> folder; artifacts whose runtime needs other hardware are left out."""
    import statistics

    from edgeseg.errors import EdgesegError

    calls, runtimes = {}, {}
    for label, folder in folders.items():
        try:
            art = load_artifact(Path(folder), threads=threads)
        except EdgesegError:  # Core ML off macOS, a TensorRT engine without CUDA, ...
            continue
        calls[label], runtimes[label] = inference_call(art), art.runtime
    if not calls:
        return {}
    before = load_state()
    (samples,) = interleave(list(calls.values()), runs, warmup)
    after = load_state()
    load = {"loadavg_1min_before": before["loadavg_1min"], "loadavg_1min_after": after["loadavg_1min"]}
    load["cores"] = after["cores"]
    return {
        label: {"median_ms": statistics.median(ms), "runs": len(ms), "runtime": runtimes[label], "load": load}
        for label, ms in zip(calls, samples)
    }
