"""Android: push a .pte over adb and time it with ExecuTorch's ``executor_runner`` on the phone.

``executor_runner`` is not shipped with edgeseg or the pip wheel: build it for Android from ExecuTorch's source
(``examples/portable/executor_runner`` with ``EXECUTORCH_BUILD_XNNPACK=ON``, plus ``EXECUTORCH_BUILD_VULKAN=ON`` for
Vulkan programs), push it (e.g. to /data/local/tmp/executor_runner) and name it in the device profile
(``reach.executor_runner``). It fills the input with ones, runs ``--num_executions`` times and logs each execute
(``Iteration i of N: X ms``; builds older than that print only ``Model executed successfully N time(s) in X ms``,
the mean is all that is reported then).
"""

from __future__ import annotations

import re
import shlex
import statistics
from pathlib import Path

from edgeseg.bench.adb import AdbTransport, device_state, make_remote_dir
from edgeseg.bench.stats import from_summary

REMOTE_DIR = "/data/local/tmp/edgeseg"
_ITER = re.compile(r"Iteration \d+ of \d+: ([\d.]+) ms")
_TOTAL = re.compile(r"Model executed successfully (\d+) time\(s\) in ([\d.]+) ms")


def executor_runner_command(binary: str, pte: str, threads: int, runs: int, cpu_mask: str | None = None) -> str:
    args = [binary, f"--model_path={pte}", f"--num_executions={runs}", f"--cpu_threads={threads}"]
    cmd = " ".join(shlex.quote(a) for a in args)
    return f"taskset {shlex.quote(cpu_mask)} {cmd}" if cpu_mask else cmd


def parse_executor_runner(text: str, warmup: int) -> dict:
    """LatencyStats (ms) of the timed executes (the first ``warmup`` dropped) from executor_runner's log."""
    per_run = [float(v) for v in _ITER.findall(text)]
    if len(per_run) > warmup:
        timed = per_run[warmup:]
        stats = from_summary(
            n=len(timed),
            warmup=warmup,
            mean_ms=statistics.fmean(timed),
            std_ms=statistics.pstdev(timed),
            min_ms=min(timed),
            max_ms=max(timed),
            median_ms=statistics.median(timed),
        )
        return {"stats": stats}
    total = _TOTAL.search(text)
    if not total:
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
        raise ValueError(f"no executor_runner timings in the output (last lines: {tail[:300]})")
    n, ms = int(total.group(1)), float(total.group(2))
    # this build logs no per-execute times: only the mean over all executes, warm-up included, is known
    stats = from_summary(n=n, warmup=0, mean_ms=ms / n, std_ms=None, min_ms=None, max_ms=None, median_ms=None)
    return {"stats": stats}


def bench_over_adb(
    transport: AdbTransport,
    pte: Path,
    binary: str,
    threads: int,
    warmup: int,
    runs: int,
    cpu_mask: str | None = None,
) -> dict:
    remote = f"{REMOTE_DIR}/{pte.name}"
    make_remote_dir(transport, REMOTE_DIR)
    rc, out = transport.shell(f"test -x {shlex.quote(binary)}", timeout=30)
    if rc != 0:
        raise RuntimeError(f"no executor_runner at {binary} on the device (build it for Android and push it there)")
    transport.push(pte, remote)
    state = device_state(transport)
    command = executor_runner_command(binary, remote, threads, warmup + runs, cpu_mask)
    rc, out = transport.shell(command, timeout=1800)
    try:
        parsed = parse_executor_runner(out, warmup)
    except ValueError as exc:
        raise RuntimeError(f"executor_runner (exit {rc}): {exc}") from None
    return {**parsed, "command": command, "device_state": state, "runtime": "ExecuTorch executor_runner"}
