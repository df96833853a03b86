"""Per-op time of an ExecuTorch program here from its ETDump: the pip wheel's runtime records events when a
program is loaded with ``enable_etdump=True``, and ExecuTorch's ``Inspector`` reads them back.

Each event's raw times are one per execute, in ms. Rows are the XNNPACK delegate's own operators (``Convolution
(NHWC, F32) IGEMM #3``: XNNPACK's kernel names, numbered per partition) and the portable kernels that ran outside
every delegate (``native_call_expand_copy.out``). ``DELEGATE_CALL`` and ``OPERATOR_CALL`` wrap those rows and are
not counted again; a delegate call's time beyond its operators' is the hand-over into and out of the partition.
As for ONNX Runtime, kernel means are used (means add up), the warm-up executes are dropped, and ``explained`` is
the sum of kernel means over the mean ``Method::execute``."""

from __future__ import annotations

import contextlib
import io
import re
import statistics
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

from edgeseg.artifact import LoadedArtifact
from edgeseg.errors import EdgesegError

_NUMBER = re.compile(r"\s+#\d+$")


def op_path(name: str) -> str:
    """What a kernel's time is spent on: compute, int8 compute, layout, quantize/dequantize, or portable kernels."""
    if name.startswith("native_call_") or name.endswith("(portable)"):
        return "portable kernels (off the delegate)"
    if name.startswith(("Transpose", "Copy", "Static Reshape", "Static Transpose")):
        return "layout"
    if name.startswith("Convert"):
        return "quantize/dequantize"
    if any(tag in name for tag in ("QS8", "QU8", "QC8", "QD8", "QP8")):
        return "int8 compute"
    return "compute"


def op_type(name: str) -> str:
    """``Convolution (NHWC, F32) IGEMM #3`` -> ``Convolution (NHWC, F32) IGEMM``; ``native_call_expand_copy.out`` ->
    ``expand_copy (portable)``."""
    if name.startswith("native_call_"):
        return name.removeprefix("native_call_").split(".")[0] + " (portable)"
    return _NUMBER.sub("", name)


def profile_etdump(art: LoadedArtifact, threads: int, runs: int, warmup: int):
    from executorch.devtools import Inspector

    from edgeseg.backends.executorch.runtime import ExecuTorchModel
    from edgeseg.bench.host import inference_call
    from edgeseg.bench.opprofile import Kernel, OpProfile, OpTypeRow, off_path_summary

    model = ExecuTorchModel(art.path, threads, etdump=True)
    traced = LoadedArtifact(art.path, art.manifest, model, art.runtime)
    call = inference_call(traced)
    for _ in range(warmup + runs):
        call()
    with tempfile.TemporaryDirectory(prefix="edgeseg-etdump-") as tmp:
        etdump = Path(tmp) / "model.etdp"
        model.write_etdump(etdump)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            inspector = Inspector(etdump_path=str(etdump))
    events = [e for block in inspector.event_blocks if block.name == "Execute" for e in block.events]
    runs_ms = next((e.perf_data.raw for e in events if e.name == "Method::execute" and e.perf_data), None)
    if not runs_ms or len(runs_ms) < warmup + 1:
        raise EdgesegError(f"the ETDump of {art.path.name} holds no timed executes (expected {warmup + runs})")
    timed = slice(warmup, None)
    run_mean = statistics.fmean(runs_ms[timed])
    kernels, delegate_ms, partitions = [], 0.0, 0
    per_run = [0.0] * len(runs_ms[timed])  # kernel time inside each timed execute
    for e in events:
        if not e.perf_data or e.name in ("Method::execute", "OPERATOR_CALL"):
            continue
        ms = statistics.fmean(e.perf_data.raw[timed])
        if e.name != "DELEGATE_CALL":
            per_run = [acc + t for acc, t in zip(per_run, e.perf_data.raw[timed])]
        if e.name == "DELEGATE_CALL":
            delegate_ms += ms
            partitions += 1
            continue
        kernels.append(Kernel(e.name, op_type(e.name), ms, ms / run_mean))
    in_delegate = sum(k.ms for k in kernels if not k.name.startswith("native_call_"))
    acc: dict[str, list[float]] = defaultdict(list)
    for k in kernels:
        acc[k.op_type].append(k.ms)
    by_type = sorted(
        (OpTypeRow(t, len(v), sum(v), sum(v) / run_mean, op_path(t)) for t, v in acc.items()), key=lambda r: -r.ms
    )
    off_path = off_path_summary(
        by_type,
        run_mean,
        {
            "layout": "XNNPACK transposes between NCHW and NHWC at partition edges",
            "quantize/dequantize": "conversions between float and int8 inside the delegate",
            "portable kernels (off the delegate)": "ops no delegate took, on ExecuTorch's portable kernels",
        },
    )
    handover = delegate_ms - in_delegate
    if partitions:
        off_path["delegate hand-over"] = {
            "count": partitions,
            "ms": handover,
            "share": handover / run_mean,
            "note": "DELEGATE_CALL time beyond its operators' (entering and leaving each partition)",
        }
    explained = sum(k.ms for k in kernels) / run_mean
    return OpProfile(
        artifact=str(art.path),
        runtime=f"{art.runtime}, ETDump",
        threads=threads,
        runs=len(runs_ms) - warmup,
        warmup=warmup,
        run_ms=statistics.median(runs_ms[timed]),
        run_mean_ms=run_mean,
        kernels=sorted(kernels, key=lambda k: -k.ms),
        by_type=by_type,
        explained=explained,
        explained_per_run=[k / r for k, r in zip(per_run, runs_ms[timed]) if r > 0],
        off_path=off_path,
        partitions=partitions,
        notes=["ETDump events of ExecuTorch's pip runtime (executorch.devtools.Inspector); times per execute"],
    )
