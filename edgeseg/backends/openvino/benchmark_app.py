"""OpenVINO's ``benchmark_app`` on an Intel device: the command practitioners use for latency, and its parser.

``-hint latency`` with one stream, ``-nthreads`` and ``-infer_precision`` pinned as edgeseg's runtime pins them,
``-pin`` off as on the host (``-pin NO``), a fixed duration. benchmark_app prints Median / Average / Min / Max
latency in ms in its summary.
"""

from __future__ import annotations

import re
import shlex

_NUM = r"([0-9]*\.?[0-9]+)"


def benchmark_app_command(
    binary: str, xml: str, device: str, threads: int, precision_hint: str | None, duration_s: int = 10
) -> str:
    args = [binary, "-m", xml, "-d", device, "-hint", "latency", "-nstreams", "1", "-t", str(duration_s)]
    if device.upper() == "CPU":
        args += ["-nthreads", str(threads), "-pin", "NO"]
    if precision_hint:
        args += ["-infer_precision", precision_hint]
    return " ".join(shlex.quote(a) for a in args)


def parse_benchmark_app(text: str) -> dict:
    """Latency summary (ms) and count of a benchmark_app run; ValueError when there is none (the run failed)."""
    stats = {}
    for key in ("Median", "Average", "Min", "Max"):
        m = re.search(rf"^\s*(?:\[[^\]]*\]\s*)*{key}:\s*{_NUM}\s*ms", text, re.MULTILINE)
        if m:
            stats[key.lower()] = float(m.group(1))
    count = re.search(r"Count:\s*(\d+)\s*iterations", text)
    if "median" not in stats:
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
        raise ValueError(f"no benchmark_app latency summary in the output (last lines: {tail[:300]})")
    version = re.search(r"Build\s*\.+\s*(\S+)", text)  # "[ INFO ] Build ...... 2026.4.1-..." (first: the runtime)
    return {
        "median_ms": stats["median"],
        "mean_ms": stats.get("average"),
        "min_ms": stats.get("min"),
        "max_ms": stats.get("max"),
        "count": int(count.group(1)) if count else None,
        "openvino": version.group(1) if version else None,
    }
