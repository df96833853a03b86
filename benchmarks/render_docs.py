"""Render a docs page (Markdown) from benchmark JSON files: a provenance header, then the tables.

    python benchmarks/render_docs.py out/int8-b0.json [more.json ...] [--out docs/generated/int8-b0.md]
    make docs        # every out/*.json -> docs/generated/<name>.md

Each JSON file is one benchmark run written with ``--json`` by a script in ``benchmarks/``. Its ``"provenance"``
record (``benchmarks/provenance.py``: date, commit, machine, load average at start and end, command, versions)
becomes the header of its section; a file without one says so rather than guessing. The benchmark kind is the
script named in the provenance command, or else recognised from the file's keys; each kind has one small function
that picks its table columns, and anything else falls back to the generic renderers (a list of dicts, or a dict of
dicts, as one table). Standard library only, so it runs without the virtual environment.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

Column = tuple[str, Callable[[dict], object]]


# ---------------------------------------------------------------------------------------------------- formatting


def fmt(value: object) -> str:
    """One table cell: floats rounded by magnitude, None as '-', nested values as compact JSON, text with its
    pipes escaped."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.2e}"
        if abs(value) >= 1000:
            return f"{value:.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, separators=(",", ":"))
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value).replace("|", "\\|").replace("\n", " ")


def get(d: dict | None, *path: str) -> object:
    """d[path[0]][path[1]]..., or None where any step is missing."""
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def pct(x: object, digits: int = 2) -> str:
    return "-" if not isinstance(x, (int, float)) else f"{100 * x:.{digits}f}"


def table(rows: list[dict], columns: list[Column] | None = None) -> list[str]:
    """A Markdown table of ``rows``. ``columns`` are (header, function of the row); by default every key whose
    values are scalars, in first-seen order."""
    if not rows:
        return ["(no rows)"]
    if columns is None:
        keys: list[str] = []
        for r in rows:
            keys += [k for k, v in r.items() if k not in keys and not isinstance(v, (dict, list))]
        columns = [(k, lambda r, k=k: r.get(k)) for k in keys]
    out = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + " --- |" * len(columns)]
    for r in rows:
        cells = []
        for _, f in columns:
            try:
                value = f(r)
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                value = None
            cells.append(fmt(value))
        out.append("| " + " | ".join(cells) + " |")
    return out


def keyed(d: dict, key: str = "name") -> list[dict]:
    """A dict of dicts as rows, the outer key as the first column."""
    return [{key: k, **v} if isinstance(v, dict) else {key: k, "value": v} for k, v in d.items()]


# ---------------------------------------------------------------------------------------------------- provenance


def provenance_header(prov: dict | None) -> list[str]:
    if not prov:
        return ["*No provenance recorded in this file (written before `benchmarks/provenance.py`).*", ""]
    m = prov.get("machine") or {}
    ram = f", {m['ram_gib']} GiB RAM" if m.get("ram_gib") else ""
    machine = f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores{ram}, {m.get('os', '?')}"

    def load(x: object) -> str:
        return " / ".join(f"{v:.2f}" for v in x) if isinstance(x, list) else "not recorded"

    return [
        f"- date: {prov.get('date', 'not recorded')} (UTC)",
        f"- commit: `{prov.get('commit', 'unknown')}`",
        f"- machine: {machine}",
        f"- load average (1/5/15 min): {load(prov.get('load_average_start'))} at start, "
        f"{load(prov.get('load_average_end'))} at end",
        f"- command: `{prov.get('command', 'not recorded')}`",
        f"- versions: edgeseg {prov.get('edgeseg_version') or '?'}, torch {prov.get('torch_version') or '?'}",
        "",
    ]


# ---------------------------------------------------------------------------------------------------- per kind


def render_export_table(doc: dict) -> list[str]:
    rows = doc.get("rows") or []
    cols: list[Column] = [
        ("target", lambda r: r.get("target")),
        ("size MB", lambda r: r["bytes"] / 1e6),
        ("max abs diff", lambda r: get(r, "parity", "max_abs_diff")),
        ("SNR dB", lambda r: get(r, "parity", "snr_db")),
        ("argmax agreement %", lambda r: pct(get(r, "parity", "argmax_agreement"), 3)),
        ("parity runtime", lambda r: get(r, "parity", "runtime")),
        ("lint", lambda r: "clean" if get(r, "lint", "clean") else f"{get(r, 'lint', 'errors')} errors"),
        ("max rank", lambda r: r.get("max_rank")),
        ("export s", lambda r: r.get("export_seconds")),
    ]
    if any(r.get("latency") for r in rows):
        cols.append(("latency ms", lambda r: get(r, "latency", "median_ms")))
    ref = get(doc, "val_miou_reference", "miou")
    if ref is not None:
        cols.append(("val mIoU (vs PyTorch fp32)", lambda r: _miou_vs(get(r, "val_miou", "miou"), ref)))
    out = table(rows, cols)
    if ref is not None:
        out += ["", f"PyTorch fp32 val mIoU: {pct(ref)} on {get(doc, 'val_miou_reference', 'images')} images."]
    if doc.get("failed"):
        out += ["", "Targets whose export failed:", ""] + table(doc["failed"])
    return out


def _miou_vs(miou: object, ref: float) -> str:
    if not isinstance(miou, (int, float)):
        return "-"
    return f"{100 * miou:.2f} ({100 * (miou - ref) + 0.0:+.2f})"


def render_int8_table(doc: dict) -> list[str]:
    artifacts, evals, latency = doc.get("artifacts") or {}, doc.get("eval") or {}, doc.get("latency") or {}
    ref = get(doc, "reference", "miou")
    ms = {k: get(latency, k, "median_ms") for k in artifacts}
    exact_fp32 = [k for k, v in ms.items() if v and "fp32" in k and "bilinear" not in k]
    best = min(exact_fp32, key=lambda k: ms[k]) if exact_fp32 else None
    rows = [{"artifact": k, **v} for k, v in artifacts.items()]
    cols: list[Column] = [
        ("artifact", lambda r: r["artifact"]),
        ("val mIoU", lambda r: pct(get(evals, r["artifact"], "miou"))),
        ("vs PyTorch fp32", lambda r: _delta(get(evals, r["artifact"], "miou"), ref)),
        ("median ms", lambda r: ms.get(r["artifact"])),
        (f"vs best exact fp32 ({best or '-'})", lambda r: f"{ms[best] / ms[r['artifact']]:.2f}x"),
        ("size MB", lambda r: r["bytes"] / 1e6),
    ]
    out = table(rows, cols)
    if ref is not None:
        out += ["", f"PyTorch fp32 (reference): val mIoU {pct(ref)} on {get(doc, 'reference', 'images')} images."]
    profiles = doc.get("profiles") or {}
    if profiles:
        out += ["", "ONNX Runtime profile (shares of the mean run):", ""]
        out += table(
            keyed(profiles, "artifact"),
            [
                ("artifact", lambda r: r["artifact"]),
                ("run ms", lambda r: r.get("run_ms")),
                ("explained %", lambda r: pct(r.get("explained"), 0)),
                (
                    "top op types",
                    lambda r: ", ".join(f"{t['op_type']} {pct(t['share'], 0)} %" for t in r["by_type"][:5]),
                ),
                (
                    "off the fast path",
                    lambda r: "; ".join(f"{k} {pct(v['share'], 0)} %" for k, v in r["off_path"].items()),
                ),
            ],
        )
    return out


def _delta(x: object, ref: object) -> str:
    if not isinstance(x, (int, float)) or not isinstance(ref, (int, float)):
        return "-"
    return f"{100 * (x - ref) + 0.0:+.2f}"


def render_time_artifacts(doc: dict) -> list[str]:
    rows = keyed(doc.get("latency") or {}, "artifact")
    cols: list[Column] = [
        ("artifact", lambda r: r["artifact"]),
        ("runtime", lambda r: r.get("runtime")),
        ("median ms", lambda r: r.get("median_ms")),
        ("per-round medians ms", lambda r: ", ".join(f"{x:.2f}" for x in r.get("rounds_ms", []))),
    ]
    if any("speedup" in r for r in rows):
        cols.append(("speed-up vs baseline", lambda r: f"{r['speedup']:.2f}x" if "speedup" in r else "-"))
    runs, rounds, threads = doc.get("runs"), doc.get("rounds"), doc.get("threads")
    return [f"Median of {runs} runs per round, {rounds} round(s), {threads} threads.", ""] + table(rows, cols)


def render_openvino_table(doc: dict) -> list[str]:
    """benchmarks/openvino_table.py: per model, every configuration's latency at each thread count, its ratio to
    tflite-fp32 (median of per-round ratios, range), its share of the CPU's int8 / bf16 peak, and val mIoU."""
    out = [
        f"Input {doc.get('size')}; {doc.get('rounds')} round-robin rounds; ratios against tflite-fp32 are medians of "
        "per-round ratios [range]; peak shares use per-core peaks "
        + ", ".join(f"{k} {v:g}" for k, v in (doc.get("peak_per_core") or {}).items())
        + " GOP/s times the threads.",
        "",
        "Settings: " + ", ".join(f"{k} {json.dumps(v)}" for k, v in (doc.get("settings") or {}).items()),
        "",
    ]
    for model, m in (doc.get("models") or {}).items():
        rows = keyed(m.get("rows") or {}, "configuration")
        threads = sorted({k for r in rows for k in r if k.startswith("t") and k[1:].isdigit()})
        cols: list[Column] = [("configuration", lambda r: r["configuration"]), ("val mIoU", lambda r: r.get("miou"))]
        for t in threads:
            cols += [
                (f"ms ({t[1:]} thr)", lambda r, t=t: get(r, t, "ms")),
                (
                    f"vs tflite-fp32 ({t[1:]} thr)",
                    lambda r, t=t: (
                        f"{get(r, t, 'vs_tflite_fp32'):.2f}x "
                        f"[{get(r, t, 'vs_range')[0]:.2f}-{get(r, t, 'vs_range')[1]:.2f}]"
                    ),
                ),
                (f"% int8 peak ({t[1:]} thr)", lambda r, t=t: pct(get(r, t, "peak_fraction", "int8"), 1)),
                (f"% bf16 peak ({t[1:]} thr)", lambda r, t=t: pct(get(r, t, "peak_fraction", "bf16"), 1)),
            ]
        loads = {t: get(rows[0], t, "load_average") for t in threads} if rows else {}
        out += [f"### {model} ({fmt(m.get('flops', 0) / 1e9)} GFLOP per inference, edgeseg's estimator)", ""]
        out += table(rows, cols) + [""]
        out += [
            f"- {t[1:]} thread(s): 1/5/15-min load "
            + " -> ".join("/".join(f"{v:.1f}" for v in x) for x in (loads[t] or []))
            + " (before -> after the timing)"
            for t in threads
        ]
        out += [""]
        runtimes = {r["configuration"]: get(r, threads[-1], "runtime") for r in rows} if threads else {}
        out += [f"- {k}: {v}" for k, v in runtimes.items()] + [""]
    return out


def render_tflite_breakdown(doc: dict) -> list[str]:
    costs = doc.get("family_cost_ms") or {}
    order = [k for k in costs if k not in ("as exported", "everything else")] + ["everything else", "as exported"]
    rows = [{"op family": "whole model" if k == "as exported" else k, **costs[k]} for k in order if k in costs]
    size = "x".join(str(s) for s in doc.get("size") or [])
    head = f"{doc.get('model')} {size}, {doc.get('threads')} threads, median of {doc.get('invokes')} invokes per file."
    return [head, ""] + table(
        rows,
        [
            ("op family", lambda r: r["op family"]),
            ("fp32 ms", lambda r: r.get("fp32")),
            ("int8 ms", lambda r: r.get("int8")),
            ("int8 speed-up", lambda r: f"{r['fp32'] / r['int8']:.2f}x" if r.get("int8", 0) > 0 else "-"),
        ],
    )


def render_estimate_validation(doc: dict) -> list[str]:
    out: list[str] = []
    summary = []
    for device, v in doc.items():
        if device == "provenance" or not isinstance(v, dict):
            continue
        # host points are timed here; every other device's are the EfficientViT-Seg README's published figures
        truth = "measured ms (here)" if device == "host" else "published ms (EfficientViT-Seg README)"
        held = [("model", lambda r: r["label"].split(" ")[0]), ("size", lambda r: r["label"].split(" ")[1])]
        held += [
            ("target", lambda r: r["label"].split(" ")[-1]),
            (truth, lambda r: r.get("measured_ms")),
            ("estimated ms (held out)", lambda r: r.get("estimated_ms")),
            ("abs % error", lambda r: 100 * abs(r["estimated_ms"] - r["measured_ms"]) / r["measured_ms"]),
        ]
        out += [f"**{device}** ({v.get('target')}), {get(v, 'validation', 'method')}:", ""]
        out += table(v.get("rows") or [], held) + [""]
        summary.append({"set": f"{device}, {get(v, 'validation', 'method')}", **(v.get("validation") or {})})
        summary[-1]["FLOPs baseline median %"] = v.get("flops_baseline_median_abs_pct_error")
        for split in ("split_by_family", "split_by_model"):
            if split in v:
                s = v[split]
                out += [f"**{device}**, {get(s, 'validation', 'method')}:", ""] + table(s.get("rows") or [], held)
                out.append("")
                summary.append({"set": f"{device}, {get(s, 'validation', 'method')}", **(s.get("validation") or {})})
    cols: list[Column] = [
        ("set", lambda r: r["set"]),
        ("points", lambda r: r.get("points")),
        ("median abs % error", lambda r: r.get("median_abs_pct_error")),
        ("max", lambda r: r.get("max_abs_pct_error")),
        ("FLOPs-proportional baseline (median)", lambda r: r.get("FLOPs baseline median %")),
    ]
    return table(summary, cols) + [""] + out


def render_upsample_cost(doc: dict) -> list[str]:
    variants = {k: v for k, v in doc.items() if k != "provenance" and isinstance(v, dict)}
    if not variants:
        return ["(no variants)"]
    ref = get(variants, "reference", "miou")
    classes = list(next(iter(variants.values())).get("iou") or {})
    cols: list[Column] = [
        ("head upsampling", lambda r: r["variant"]),
        ("images", lambda r: r.get("images")),
        ("mIoU", lambda r: pct(r.get("miou"))),
        ("vs reference", lambda r: _delta(r.get("miou"), ref)),
    ]
    cols += [(c, lambda r, c=c: pct(get(r, "iou", c), 1)) for c in classes]
    return table(keyed(variants, "variant"), cols)


def _residency_text(rec: dict | None) -> str:
    if not rec:
        return "-"
    parts = "" if rec.get("partitions") is None else f", {rec['partitions']} p"
    left = ", ".join(f"{op} x{n}" for op, n in sorted((rec.get("unsupported_ops") or {}).items()))
    return f"{rec['nodes_supported']}/{rec['nodes_total']}{parts}" + (f" (not taken: {left})" if left else "")


def render_residency_table(doc: dict) -> list[str]:
    rows = []
    for r in doc.get("rows") or []:
        before = {x["accelerator"]: x for x in get(r, "before", "residency") or []}
        after = {x["accelerator"]: x for x in get(r, "after", "residency") or []}
        for acc in list(dict.fromkeys([*before, *after])):
            rows.append(
                {
                    "model": r["model"],
                    "target": r["target"],
                    "accelerator": acc,
                    "before": _residency_text(before.get(acc)),
                    "after": "same artifact" if r.get("same_artifact") else _residency_text(after.get(acc)),
                    "parity max abs diff before / after": f"{fmt(get(r, 'before', 'parity', 'max_abs_diff'))} / "
                    f"{fmt(get(r, 'after', 'parity', 'max_abs_diff'))}",
                }
            )
    out = table(rows)
    tools = sorted({x["tool"] for r in doc.get("rows") or [] for k in ("before", "after") for x in r[k]["residency"]})
    if tools:
        out += ["", "Figures (taken/total nodes, partitions) from: " + "; ".join(f"`{t}`" for t in tools) + "."]
    names = ", ".join(f"`{n}`" for n in doc.get("residency_rewrites") or [])
    out += ["", f"Before: exported with {names} disabled; after: edgeseg's defaults."]
    lat = doc.get("latency")
    if lat:
        b, a, q = lat["before"], lat["after"], lat["ratio_after_before"]
        out += [
            "",
            f"CPU latency of {lat['model']} {lat['target']} before vs after, timed side by side in one process "
            f"({lat['runtime']}, {lat['threads']} thread(s), {lat['runs']} runs each round-robin after "
            f"{lat['warmup']} warm-up; load average {fmt(lat['load_start'][0])} at start, "
            f"{fmt(lat['load_end'][0])} at end):",
            "",
        ]
        out += table(
            [
                {"artifact": "before", "median ms": b["median_ms"], "min ms": b["min_ms"], "max ms": b["max_ms"]},
                {"artifact": "after", "median ms": a["median_ms"], "min ms": a["min_ms"], "max ms": a["max_ms"]},
                {
                    "artifact": "after / before (per pass)",
                    "median ms": q["median"],
                    "min ms": q["min"],
                    "max ms": q["max"],
                },
            ]
        )


def _ratio(r: object) -> str:
    if not isinstance(r, dict):
        return "-"
    return f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"


def _median_range(r: dict, label: str) -> str:
    """``34.10 (30.2-41.9)``: an artifact's median and range in one timing row (a range only where recorded)."""
    median, span = (r.get("median_ms") or {}).get(label), (r.get("range_ms") or {}).get(label)
    if median is None:
        return "-"
    return f"{median:.2f}" + (f" ({span[0]:.1f}-{span[1]:.1f})" if span else "")


def _ops(d: object) -> str:
    return ", ".join(f"{k} x{v}" for k, v in d.items()) if isinstance(d, dict) and d else "none"


def render_executorch_table(doc: dict) -> list[str]:
    out: list[str] = []
    if "time_only" in doc:  # --time-only: artifacts timed side by side, nothing else
        out += [f"- `{label}`: `{folder}`" for folder, label in doc["time_only"].items()] + [""]
        labels = list(doc["time_only"].values())
        out += table(
            doc.get("latency") or [],
            [
                ("threads", lambda r: r["threads"]),
                ("runs", lambda r: r["runs"]),
                *[(f"{t} median ms (min-max)", lambda r, t=t: _median_range(r, t)) for t in labels],
                ("ET/TFLite fp32 (min-max)", lambda r: _ratio(r.get("ratio_fp32"))),
                ("ET/TFLite int8 (min-max)", lambda r: _ratio(r.get("ratio_int8"))),
                ("ET int8/fp32 (min-max)", lambda r: _ratio(r.get("ratio_et_int8_fp32"))),
                ("load before / after", lambda r: f"{fmt(get(r, 'load_before'))} / {fmt(get(r, 'load_after'))}"),
            ],
        ) + [""]
    for model, row in (doc.get("models") or {}).items():
        out += [f"### {model} ({doc.get('size')})", ""]
        ev = row.get("eval") or {}
        arts = row.get("artifacts") or {}
        ref = get(ev, "pytorch-fp32", "miou")
        rows = [{"artifact": "PyTorch fp32", "mIoU": ref}]
        for target, a in arts.items():
            d = a.get("delegation") or {}
            rows.append(
                {
                    "artifact": target,
                    "mIoU": get(ev, target, "miou"),
                    "parity": a.get("parity"),
                    "partitions": d.get("partitions"),
                    "left to portable kernels": _ops(d.get("non_delegated_ops")) if d else "-",
                    "MB": a.get("bytes", 0) / 1e6,
                }
            )
        out += table(
            rows,
            [
                ("artifact", lambda r: r["artifact"]),
                ("val mIoU", lambda r: pct(r["mIoU"])),
                ("vs PyTorch", lambda r, ref=ref: f"{100 * (r['mIoU'] - ref):+.2f}" if r.get("parity") else "-"),
                ("max abs diff", lambda r: get(r, "parity", "max_abs_diff")),
                ("argmax agreement", lambda r: pct(get(r, "parity", "argmax_agreement"), 3)),
                ("XNNPACK partitions", lambda r: r.get("partitions")),
                ("left to portable kernels", lambda r: r.get("left to portable kernels")),
                ("MB", lambda r: r.get("MB")),
            ],
        ) + [""]
        lat = row.get("latency") or []
        out += table(
            lat,
            [
                ("threads", lambda r: r["threads"]),
                *[(f"{t} ms", lambda r, t=t: get(r, "median_ms", t)) for t in (arts or {})],
                ("ET/TFLite fp32 (min-max)", lambda r: _ratio(r.get("ratio_fp32"))),
                ("ET/TFLite int8 (min-max)", lambda r: _ratio(r.get("ratio_int8"))),
                ("load before / after", lambda r: f"{fmt(get(r, 'load_before'))} / {fmt(get(r, 'load_after'))}"),
            ],
        ) + [""]
        for target, p in (row.get("profile") or {}).items():
            top = "; ".join(f"{t['op_type']} x{t['count']} {100 * t['share']:.0f}%" for t in p["top_op_types"][:6])
            off = "; ".join(f"{k} {100 * v['share']:.0f}%" for k, v in (p.get("off_path") or {}).items())
            out += [f"- ETDump {target} (1 thread, {p['run_ms']:.1f} ms): {top}. Off the compute path: {off}.", ""]
    extra = doc.get("extra") or {}
    if extra:
        rows = [{"model": k, **v} for k, v in extra.items()]
        out += table(
            rows,
            [
                ("model (random weights)", lambda r: r["model"]),
                ("input", lambda r: "x".join(str(v) for v in r["size"])),
                ("delegated nodes", lambda r: f"{r['delegation']['nodes_delegated']}/{r['delegation']['nodes_total']}"),
                ("XNNPACK partitions", lambda r: r["delegation"]["partitions"]),
                ("left to portable kernels", lambda r: _ops(r["delegation"]["non_delegated_ops"])),
                ("argmax agreement", lambda r: pct(get(r, "parity", "argmax_agreement"), 3)),
            ],
        ) + [""]
    return out


def render_generic(doc: dict) -> list[str]:
    """Any other JSON: each list of dicts, and each dict of dicts, as one table under its key."""
    out: list[str] = []
    for key, value in doc.items():
        if key == "provenance":
            continue
        if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            out += [f"**{key}**", ""] + table(value) + [""]
        elif isinstance(value, dict) and value and all(isinstance(x, dict) for x in value.values()):
            out += [f"**{key}**", ""] + table(keyed(value)) + [""]
    scalars = {k: v for k, v in doc.items() if not isinstance(v, (dict, list))}
    if scalars:
        out += table([scalars])
    return out or ["(nothing tabular in this file)"]


def render_train_throughput(doc: dict) -> list[str]:
    """benchmarks/train_throughput.py: per model, each configuration's training images/s and its ratio to the
    baseline (median of per-round ratios [range]), with the load average of each round. Reports written before the
    baseline was named compare with "fp32"."""
    out = [f"Augmenting one batch: {doc.get('augment_ms_per_batch')} ms (prefetched in a thread by the trainer).", ""]
    for r in doc.get("results") or []:
        configs = [k for k, v in r.items() if isinstance(v, dict) and "images_per_s" in v]
        out += [
            f"### {r.get('model')} (batch {r.get('batch_size')}, crop {r.get('crop')}, {r.get('threads')} threads)",
            "",
        ]
        key = "vs_baseline" if "baseline" in r else "vs_fp32"
        rows = [
            {
                "configuration": c,
                "images/s": r[c]["images_per_s"],
                f"vs {r.get('baseline', 'fp32')}": f"{r[c][key]:.2f}x [{r[c][key + '_range'][0]:.2f}-"
                f"{r[c][key + '_range'][1]:.2f}]",
                "first step, s": (r.get("first_step_s") or {}).get(c, "-"),
            }
            for c in configs
        ]
        out += table(rows)
        out += ["", f"- 1-minute load average per round: {r.get('load_1min')}", ""]
    return out


def render_train_kernels(doc: dict) -> list[str]:
    """benchmarks/train_kernels.py: each grouped convolution forward + backward in bf16, fp32 and the trainer's
    fp32-under-autocast path, then the loss's upsampling with and without matrix products."""
    out = [
        f"Batch {doc.get('batch_size')}, crop {doc.get('crop')}, {doc.get('threads')} thread(s), median of "
        f"{doc.get('repeats')} runs; milliseconds, forward + backward, channels_last.",
        "",
    ]
    variants = ("bf16", "fp32", "fp32 in bf16 autocast")
    for r in doc.get("results") or []:
        cols: list[Column] = [
            ("layer", lambda c: c["layer"]),
            ("input", lambda c: "x".join(map(str, c["input"]))),
            ("kernel / stride / groups", lambda c: f"{c['kernel']} / {c['stride']} / {c['groups']}"),
        ]
        cols += [(v, lambda c, v=v: get(c, "ms", v)) for v in variants]
        cols += [("trainer runs", lambda c: c["trainer_runs"])]
        total = r.get("convs_total_ms") or {}
        loss = r.get("loss_ms") or {}
        out += [f"### {r.get('model')}", ""] + table(r.get("convs") or [], cols)
        out += [
            "",
            f"- all grouped convolutions: bf16 {total.get('bf16')} ms, fp32 {total.get('fp32')} ms, as the trainer "
            f"runs them {total.get('trainer')} ms",
            "- loss (upsample logits to the label size, cross-entropy, backward): "
            + ", ".join(f"{k} {v} ms" for k, v in loss.items()),
            "",
        ]
    return out


def render_train_equal_epochs(doc: dict) -> list[str]:
    """benchmarks/train_equal_epochs.py: fp32 against bf16+channels_last trained with everything else equal."""
    results = doc.get("results") or {}
    evals = sorted({e for r in results.values() for e, _ in r.get("select_miou_per_eval", [])})
    cols: list[Column] = [("configuration", lambda r: r["configuration"])]
    cols += [(f"epoch {e}", lambda r, e=e: dict(map(tuple, r.get("select_miou_per_eval", []))).get(e)) for e in evals]
    cols += [
        ("best", lambda r: r.get("best_select_miou")),
        ("images/s (median epoch)", lambda r: r.get("images_per_s_median")),
    ]
    rows = [{"configuration": k, **v} for k, v in results.items()]
    head = (
        f"{doc.get('model')}, {doc.get('epochs')} epochs, {doc.get('threads')} thread(s) per run; mIoU (%) on the "
        f"held-out groups {doc.get('select_groups')} at each evaluation."
    )
    if isinstance(doc.get("recipe"), dict):
        head += " Recipe: " + ", ".join(f"{k} {v}" for k, v in doc["recipe"].items()) + "."
    return [head, ""] + table(rows, cols)


def _groups(d: object) -> str:
    return ", ".join(f"{g} ({n})" for g, n in d.items()) if isinstance(d, dict) else "-"


def render_train_curves(doc: dict) -> list[str]:
    """benchmarks/train_curves.py: training runs side by side, their selection mIoU curves, best and last
    evaluation, per-class IoU at the last one, throughput and load as the trainer logged them."""
    runs = doc.get("runs") or []

    def recipe(r: dict) -> str:
        c = r.get("recipe") or {}
        parts = [f"{c.get('precision')}" + ("+channels_last" if c.get("channels_last") else "")]
        if c.get("brightness") is not None or c.get("gamma"):
            parts.append(f"brightness {c.get('brightness')}, gamma {c.get('gamma')}")
        if c.get("ema_decay"):
            parts.append(f"EMA {c['ema_decay']}")
        return "; ".join(parts)

    def at(r: dict, which: str) -> str:
        e = r.get(which) or {}
        if "miou" not in e:
            return "-"
        raw = f" (raw {pct(e['raw_miou'])})" if e.get("raw_miou") is not None else ""
        return f"{pct(e['miou'])} @ {e['epoch']}{raw}"

    out = table(
        runs,
        [
            ("run", lambda r: r["label"]),
            ("model", lambda r: get(r, "recipe", "model")),
            ("trains on", lambda r: _groups(r.get("train_groups"))),
            ("selects on", lambda r: _groups(r.get("select_groups"))),
            ("recipe", recipe),
            ("epochs", lambda r: f"{r.get('epochs_done')} of {get(r, 'recipe', 'epochs')}"),
            ("best mIoU @ epoch", lambda r: at(r, "best")),
            ("last mIoU @ epoch", lambda r: at(r, "last")),
            ("img/s (median)", lambda r: r.get("images_per_s_median")),
            ("threads", lambda r: get(r, "recipe", "threads")),
            ("load (median)", lambda r: r.get("load_1min_median")),
        ],
    )
    curves = sorted({c["epoch"] for r in runs for c in r.get("curve") or []})
    if curves:
        cols: list[Column] = [("run", lambda r: r["label"])]
        cols += [
            (str(e), lambda r, e=e: next((pct(c["miou"], 1) for c in r.get("curve") or [] if c["epoch"] == e), "-"))
            for e in curves
        ]
        out += ["", "Selection-split mIoU (%) at each evaluation (epoch):", ""] + table(runs, cols)
    classes = list(dict.fromkeys(k for r in runs for k in (get(r, "last", "iou") or {})))
    if classes:
        cols = [("run", lambda r: r["label"])]
        cols += [(c, lambda r, c=c: pct((get(r, "last", "iou") or {}).get(c), 1)) for c in classes]
        out += ["", "Per-class IoU (%) at the last evaluation:", ""] + table(runs, cols)
    if doc.get("plot"):
        out += ["", f"![selection mIoU against epoch]({Path(doc['plot']).name})"]
    return out


RENDERERS: dict[str, Callable[[dict], list[str]]] = {
    "export_table": render_export_table,
    "int8_table": render_int8_table,
    "time_artifacts": render_time_artifacts,
    "tflite_breakdown": render_tflite_breakdown,
    "estimate_validation": render_estimate_validation,
    "upsample_cost": render_upsample_cost,
    "residency_table": render_residency_table,
    "openvino_table": render_openvino_table,
    "executorch_table": render_executorch_table,
    "train_throughput": render_train_throughput,
    "train_kernels": render_train_kernels,
    "train_equal_epochs": render_train_equal_epochs,
    "train_curves": render_train_curves,
}


def kind_of(doc: dict) -> str:
    """The benchmark script that wrote ``doc``: from its provenance command, else from its keys."""
    command = get(doc, "provenance", "command")
    if isinstance(command, str):
        for word in command.split():
            name = Path(word).stem
            if word.endswith(".py") and name in RENDERERS:
                return name
    if "family_cost_ms" in doc:
        return "tflite_breakdown"
    if "rows" in doc and "failed" in doc:
        return "export_table"
    if {"artifacts", "latency", "eval"} <= doc.keys():
        return "int8_table"
    if "latency" in doc and "rounds" in doc:
        return "time_artifacts"
    values = [v for k, v in doc.items() if k != "provenance"]
    if values and all(isinstance(v, dict) and "miou" in v and "iou" in v for v in values):
        return "upsample_cost"
    if values and all(isinstance(v, dict) and "validation" in v for v in values):
        return "estimate_validation"
    return "generic"


TITLES = {
    "export_table": "Export table",
    "int8_table": "INT8 vs fp32",
    "time_artifacts": "Artifacts timed side by side",
    "tflite_breakdown": "TFLite time by op family",
    "estimate_validation": "Latency estimate validation",
    "upsample_cost": "Head upsampling cost",
    "residency_table": "Accelerator residency before and after the residency rewrites",
    "openvino_table": "OpenVINO beside edgeseg's artifacts on x86",
    "executorch_table": "ExecuTorch vs TFLite (XNNPACK)",
    "train_throughput": "Training throughput on the CPU",
    "train_kernels": "Training kernels: grouped convolutions and the loss's upsampling",
    "train_equal_epochs": "fp32 against bf16 + channels_last at equal epochs",
    "train_curves": "Training runs: selection-split curves",
    "generic": "Benchmark output",
}


def render(paths: list[Path], title: str | None = None) -> str:
    docs = [(p, json.loads(p.read_text())) for p in paths]
    kinds = [kind_of(d) if isinstance(d, dict) else "generic" for _, d in docs]
    lines = [f"# {title or TITLES[kinds[0]]}", ""]
    lines += [
        "Generated by `benchmarks/render_docs.py` from "
        + ", ".join(f"`{p.name}`" for p, _ in docs)
        + "; regenerate with `make docs` after re-running the benchmark.",
        "",
    ]
    for (path, doc), kind in zip(docs, kinds, strict=True):
        if len(docs) > 1:
            lines += [f"## {path.name}", ""]
        if not isinstance(doc, dict):
            lines += ["(not a JSON object)", ""]
            continue
        lines += provenance_header(doc.get("provenance"))
        lines += RENDERERS.get(kind, render_generic)(doc) + [""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path, nargs="+", help="benchmark JSON files (--json output of benchmarks/*.py)")
    ap.add_argument("--out", type=Path, default=None, help="write the page here (default: print it)")
    ap.add_argument("--title", default=None, help="page title (default: from the benchmark kind)")
    args = ap.parse_args()
    try:
        page = render(args.json, args.title)
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(page)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(page)
        tmp.replace(args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
