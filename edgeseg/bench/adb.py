"""Android: push a .tflite over adb (adbutils) and run TFLite's ``benchmark_model`` on the phone.

``benchmark_model`` is not shipped with edgeseg: build or download the Android binary, push it (e.g. to
/data/local/tmp/benchmark_model) and give its path in the profile or with ``--benchmark-model``. Its output has
two ``count=... avg=... std=...`` blocks (warm-up, then the timed runs) in microseconds; it reports mean, std,
min and max (and median/percentiles only in builds that print them), so no median is invented here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Protocol

from edgeseg.bench.stats import LatencyStats, from_summary
from edgeseg.errors import EdgesegError, reraise_interrupt


class AdbTransport(Protocol):
    def push(self, local: Path, remote: str) -> None: ...

    def shell(self, command: str, timeout: float) -> tuple[int, str]: ...


class AdbutilsTransport:
    """The real transport: adbutils talking to the local adb server."""

    def __init__(self, serial: str):
        try:
            import adbutils
        except ImportError:
            raise EdgesegError("benching over adb needs adbutils: pip install 'edgeseg[bench]'") from None

        try:
            self.device = adbutils.adb.device(serial=serial)
            self.device.get_state()
        except Exception as exc:  # adbutils raises AdbError / ConnectionRefused variants
            reraise_interrupt(exc)
            why = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise EdgesegError(
                f"adb device {serial!r} not reachable ({why}); start the adb server and check `adb devices`"
            ) from None

    def push(self, local: Path, remote: str) -> None:
        self.device.sync.push(str(local), remote)

    def shell(self, command: str, timeout: float) -> tuple[int, str]:
        r = self.device.shell2(command, timeout=timeout)
        return r.returncode, r.output


_STAT = re.compile(r"count=(\d+)\s+first=(\d+)\s+curr=(\d+)\s+min=(\d+)\s+max=(\d+)\s+avg=([\d.eE+-]+)\s+std=(\d+)(.*)")


def parse_benchmark_model(text: str) -> dict:
    """The timed block of benchmark_model's output as LatencyStats (ms), plus init and first-inference times."""
    blocks = [m for m in (_STAT.search(line) for line in text.splitlines()) if m]
    if not blocks:
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
        raise ValueError(f"no benchmark_model timings in the output (last lines: {tail[:300]})")
    timed = blocks[-1]
    warm = blocks[0] if len(blocks) > 1 else None
    rest = timed.group(8)
    pct = {k: float(v) / 1000 for k, v in re.findall(r"(p\d+|median)=([\d.]+)", rest)}
    us = [float(timed.group(i)) for i in range(4, 8)]
    stats: LatencyStats = from_summary(
        n=int(timed.group(1)),
        warmup=int(warm.group(1)) if warm else 0,
        mean_ms=us[2] / 1000,
        std_ms=us[3] / 1000,
        min_ms=us[0] / 1000,
        max_ms=us[1] / 1000,
        median_ms=pct.get("median") or pct.get("p50"),
        p90_ms=pct.get("p90"),
        p99_ms=pct.get("p99"),
    )
    init = re.search(r"Init:\s*([\d.]+)", text)
    first = re.search(r"First inference:\s*([\d.]+)", text)
    return {
        "stats": stats,
        "init_ms": float(init.group(1)) / 1000 if init else None,
        "first_inference_ms": float(first.group(1)) / 1000 if first else None,
    }


DELEGATE_FLAGS = {
    "xnnpack": ["--use_xnnpack=true"],
    "gpu": ["--use_gpu=true"],
    "nnapi": ["--use_nnapi=true"],
    "cpu": ["--use_xnnpack=false"],
}


def benchmark_model_command(
    binary: str,
    graph: str,
    threads: int,
    delegate: str,
    warmup_runs: int,
    runs: int,
    cpu_mask: str | None = None,
) -> str:
    args = [
        binary,
        f"--graph={graph}",
        f"--num_threads={threads}",
        *DELEGATE_FLAGS[delegate],
        f"--warmup_runs={warmup_runs}",
        f"--num_runs={runs}",
    ]
    cmd = " ".join(shlex.quote(a) for a in args)
    return f"taskset {shlex.quote(cpu_mask)} {cmd}" if cpu_mask else cmd


STATE_PROPS = ("ro.product.model", "ro.soc.model", "ro.build.version.release")


def make_remote_dir(transport, remote_dir: str) -> str:
    """``mkdir -p remote_dir`` on the device (RuntimeError naming it when that fails); returns ``remote_dir``."""
    rc, out = transport.shell(f"mkdir -p {shlex.quote(remote_dir)}", timeout=30)
    if rc != 0:
        raise RuntimeError(f"adb: cannot create {remote_dir}: {out.strip()[:200]}")
    return remote_dir


def device_state(transport) -> dict[str, str]:
    """The device's model, SoC and Android release (the ``STATE_PROPS`` it answers), recorded beside timings."""
    state = {}
    for prop in STATE_PROPS:
        rc, out = transport.shell(f"getprop {prop}", timeout=30)
        if rc == 0 and out.strip():
            state[prop] = out.strip()
    return state


def bench_over_adb(
    transport: AdbTransport,
    tflite: Path,
    binary: str,
    threads: int,
    delegate: str,
    warmup_runs: int,
    runs: int,
    cpu_mask: str | None = None,
    remote_dir: str = "/data/local/tmp/edgeseg",
) -> dict:
    remote = make_remote_dir(transport, remote_dir) + f"/{tflite.name}"
    transport.push(tflite, remote)
    state = device_state(transport)
    rc, out = transport.shell("cat /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor", timeout=30)
    if rc == 0 and out.strip():
        state["cpu_governors"] = " ".join(sorted(set(out.split())))
    command = benchmark_model_command(binary, remote, threads, delegate, warmup_runs, runs, cpu_mask)
    rc, out = transport.shell(command, timeout=1800)
    try:
        parsed = parse_benchmark_model(out)
    except ValueError as exc:
        raise RuntimeError(f"benchmark_model (exit {rc}): {exc}") from None
    return {**parsed, "command": command, "device_state": state, "runtime": f"benchmark_model ({delegate})"}
