"""``trtexec`` on a Jetson: the command practitioners use for latency, and the parser for its performance summary.

``--useCudaGraph`` (launch overhead out), ``--noDataTransfers`` (no H2D/D2H copies: the compute a camera
pipeline with zero-copy buffers sees), ``--useSpinWait`` (no sleep jitter on synchronisation). trtexec reports
the GPU compute time and the host-side latency separately; both are kept.
"""

from __future__ import annotations

import re
import shlex

from edgeseg.bench.stats import LatencyStats, from_summary

_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_FIELD = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=?\s*" + _NUM + r"\s*ms")


def trtexec_bench_command(
    trtexec: str, onnx_name: str, warmup_ms: int = 500, duration_s: int = 10, strongly_typed: bool = True
) -> str:
    args = [
        trtexec,
        f"--onnx={onnx_name}",
        *(["--stronglyTyped"] if strongly_typed else []),
        "--useCudaGraph",
        "--noDataTransfers",
        "--useSpinWait",
        f"--warmUp={warmup_ms}",
        f"--duration={duration_s}",
    ]
    return " ".join(shlex.quote(a) for a in args)


def _line_stats(text: str, label: str) -> dict[str, float] | None:
    # only "[timestamp] [I] " prefixes before the label: "H2D Latency:" is not "Latency:"
    m = re.search(rf"^(?:\[[^\]]*\]\s*)*{re.escape(label)}:\s*(min.*)$", text, re.MULTILINE)
    if not m:
        return None
    out = {}
    for key, pct, value in _FIELD.findall(m.group(1)):
        out[f"p{pct.rstrip('0').rstrip('.') if '.' in pct else pct}" if pct else key] = float(value)
    return out


def parse_trtexec(text: str) -> dict:
    """Performance summary of a trtexec run: GPU compute time and host latency stats, throughput, query counts.

    Raises ValueError when the output has no performance summary (the build or the run failed)."""
    gpu = _line_stats(text, "GPU Compute Time")
    latency = _line_stats(text, "Latency")
    if gpu is None or latency is None:
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
        raise ValueError(f"no trtexec performance summary in the output (last lines: {tail[:300]})")
    n = re.search(r"Timing trace has (\d+) queries", text)
    warm = re.search(r"Warmup completed (\d+) queries", text)
    qps = re.search(r"Throughput:\s*" + _NUM + r"\s*qps", text)
    cv = re.search(r"coefficient of variance\s*=\s*" + _NUM + r"\s*%", text)
    version = re.search(r"TensorRT version:\s*(\S+)", text)
    count = int(n.group(1)) if n else 0
    warmup = int(warm.group(1)) if warm else 0

    def stats(d: dict, cv_pct: float | None) -> LatencyStats:
        return from_summary(
            n=count,
            warmup=warmup,
            mean_ms=d["mean"],
            std_ms=None if cv_pct is None else d["mean"] * cv_pct / 100,
            min_ms=d.get("min"),
            max_ms=d.get("max"),
            median_ms=d.get("median"),
            p90_ms=d.get("p90"),
            p99_ms=d.get("p99"),
        )

    return {
        "gpu_compute": stats(gpu, float(cv.group(1)) if cv else None),
        "end_to_end": stats(latency, None),
        "throughput_qps": float(qps.group(1)) if qps else None,
        "tensorrt": version.group(1) if version else None,
    }
