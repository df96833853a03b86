"""report.html: the bench report as one self-contained page (plots embedded as PNG data URIs; no scripts, fonts or
links to anything outside it), readable from a phone to a desktop: the recommendation and warnings first, the
table in a horizontal scroller, the latency-vs-mIoU plot with 95 % intervals, accuracy with intervals and per-class
changes against the fp32 reference, example predictions with a class legend, and each artifact's facts."""

from __future__ import annotations

import base64
import html
import io

from edgeseg.bench.report import (
    STATUS_TEXT,
    BenchReport,
    accuracy_table,
    artifact_facts,
    class_table,
    display_path,
    markdown,
    report_subject,
    row_label,
    several_models,
    speed_notes,
)

CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1rem auto;max-width:1200px;"
    "padding:0 1rem;line-height:1.45;color:#222}"
    "h1{font-size:1.5rem;overflow-wrap:anywhere}h2{font-size:1.2rem;margin-top:1.6em}"
    ".scroll{overflow-x:auto;max-width:100%;-webkit-overflow-scrolling:touch}"
    "table{border-collapse:collapse;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}td.num{text-align:right;white-space:nowrap}tr.pick td{background:#edf7ed}"
    "table.wide{min-width:960px}table.mid{min-width:680px}"
    "code,.path{overflow-wrap:anywhere;word-break:break-word}"
    "pre{background:#f6f6f6;padding:8px;overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere}"
    ".box{padding:8px 12px;margin:10px 0;border-left:4px solid}"
    ".warn{background:#fff4e5;border-color:#e69500}.rec{background:#edf7ed;border-color:#2e7d32}"
    ".note{background:#eef3fb;border-color:#4a78c2}"
    ".legend span{display:inline-block;margin:2px 12px 2px 0;white-space:nowrap;font-size:13px}"
    ".sw{display:inline-block;width:14px;height:14px;border:1px solid #777;vertical-align:-2px;margin-right:4px}"
    "dl.facts{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:2px 12px;font-size:13px}"
    "dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere;word-break:break-word}"
    "img{max-width:100%;height:auto}ul{padding-left:1.2em}"
    "@media (max-width:600px){body{padding:0 .5rem}td,th{padding:3px 5px;font-size:12px}"
    "dl.facts{grid-template-columns:1fr}dt{margin-top:4px}}"
)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _front(rows: list[dict]) -> list[dict]:
    """The Pareto front of measured points, by latency: a point joins only if it is really more accurate than every
    faster point (paired comparison on the same images; a difference within the intervals is a tie, and a tie
    goes to the faster artifact)."""
    from edgeseg.bench.decide import _verdict

    front = []
    for row in sorted(rows, key=lambda r: (r["lat"], -r["miou"])):
        if all(row["miou"] > f["miou"] and _verdict(f["result"], row["result"]) == "better" for f in front):
            front.append(row)
    return front


def _place_labels(fig, ax, rows: list[dict]) -> None:
    """Name each point where its label overlaps no other label or marker: try offsets around the point, nearest
    first; a label that finds no free place goes further out with a leader line."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = []
    for r in rows:
        px, py = ax.transData.transform((r["lat"], r["miou"]))
        taken.append(Bbox.from_extents(px - 5, py - 5, px + 5, py + 5))
    near = [(7, 5), (7, -13), (-7, 5), (-7, -13), (7, 16), (7, -24), (-7, 16), (-7, -24)]
    far = [(dx * 2, dy * 2) for dx, dy in near] + [(dx * 3, dy * 3) for dx, dy in near]
    for r in sorted(rows, key=lambda r: (r["lat"], -r["miou"])):
        placed = None
        for k, (dx, dy) in enumerate(near + far):
            t = ax.annotate(
                r["name"],
                (r["lat"], r["miou"]),
                textcoords="offset points",
                xytext=(dx, dy),
                fontsize=7.5,
                ha="left" if dx > 0 else "right",
                zorder=4,
            )
            box = t.get_window_extent(renderer).expanded(1.04, 1.15)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(o) for o in taken):
                placed = box
                if k >= 2:  # not beside its point: a leader line says whose name it is
                    ax.annotate(
                        "",
                        (r["lat"], r["miou"]),
                        textcoords="offset points",
                        xytext=(dx, dy + 3),
                        arrowprops={"arrowstyle": "-", "color": "#999", "lw": 0.6, "shrinkA": 0, "shrinkB": 4},
                        zorder=4,
                    )
                break
            t.remove()
        if placed is None:  # crowded: the first place, accepting the overlap
            t = ax.annotate(r["name"], (r["lat"], r["miou"]), textcoords="offset points", xytext=near[0], fontsize=7.5)
            placed = t.get_window_extent(renderer)
        taken.append(placed)


def _limits(lo: float, hi: float, line: float | None, reach: float, min_span: float) -> tuple[tuple, bool]:
    """Axis limits around the data [lo, hi], widened to hold ``line`` (budget, floor) with a margin when it lies
    within ``reach`` spans of the data; (limits, whether the line is shown)."""
    span = max(hi - lo, min_span)
    show = line is not None and (lo - reach * span) <= line <= (hi + reach * span)
    if show:
        lo, hi = min(lo, line), max(hi, line)
        span = max(hi - lo, min_span)
    pad = 0.12 * span
    return (lo - pad, hi + pad), show


def pareto_png(report: BenchReport) -> str | None:
    """Latency vs mIoU on the report's device: measured points (here or on the device) with the 95 % intervals of
    the median latency and of the mIoU as error bars and, where the device was not reached, the labelled roofline
    estimate as its own marker. The Pareto front uses measured points only, ties resolved by the intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = several_models(report)
    rows = []
    for r in report.results:
        if r.miou is None:
            continue
        m = r.device.measured or r.host
        miou = 100 * r.miou
        y_ci = [100 * x for x in r.accuracy.miou_ci95] if r.accuracy else [miou, miou]
        if m is not None:
            s = m.stats
            lat = s.median_ms if s.median_ms is not None else s.mean_ms
            x_ci = list(s.median_ci95_ms) if s.median_ci95_ms else [lat, lat]
            where = "on device" if r.device.measured is not None and report.device.kind != "host" else "here (host)"
        elif r.device.estimate is not None:
            lat, where = r.device.estimate.latency_ms, "estimate"
            x_ci = [lat, lat]
        else:
            continue
        rows.append(dict(name=row_label(r, named), lat=lat, miou=miou, x=x_ci, y=y_ci, where=where, result=r))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4 if not named else 7.6, 4.2))
    styles = (
        ("here (host)", "o", "tab:blue", "measured here (host), 95 % intervals"),
        ("on device", "s", "tab:green", f"measured on {report.device.name}, 95 % intervals"),
        ("estimate", "x", "tab:purple", f"estimate for {report.device.name} (roofline, not measured)"),
    )
    for where, marker, colour, label in styles:
        pts = [r for r in rows if r["where"] == where]
        if not pts:
            continue
        ax.errorbar(
            [r["lat"] for r in pts],
            [r["miou"] for r in pts],
            xerr=[[r["lat"] - r["x"][0] for r in pts], [r["x"][1] - r["lat"] for r in pts]],
            yerr=[[r["miou"] - r["y"][0] for r in pts], [r["y"][1] - r["miou"] for r in pts]],
            fmt=marker,
            color=colour,
            ms=6,
            elinewidth=1,
            capsize=3,
            label=label,
            zorder=3,
        )
    measured = [r for r in rows if r["where"] != "estimate"]
    if measured:
        front = _front(measured)
        ax.plot(
            [f["lat"] for f in front],
            [f["miou"] for f in front],
            "--o",
            color="grey",
            mfc="none",
            ms=12,
            zorder=2,
            label="Pareto front (measured; ties go to the faster)",
        )
    budget, floor = report.device.budget_ms, 100 * report.device.miou_floor
    x_lo, x_hi = min(r["x"][0] for r in rows), max(r["x"][1] for r in rows)
    (xmin, xmax), show_budget = _limits(x_lo, x_hi, budget, 1.5, 0.05 * max(x_hi, 1e-3))
    y_lo, y_hi = min(r["y"][0] for r in rows), max(r["y"][1] for r in rows)
    (ymin, ymax), show_floor = _limits(y_lo, y_hi, floor, 1.0, 1.0)
    ax.set_xlim(max(0.0, xmin), xmax)
    ax.set_ylim(ymin, ymax)
    if show_floor:
        ax.axhline(floor, color="tab:red", lw=1, ls=":", label=f"mIoU floor {floor:.0f} %")
    else:
        ax.plot([], [], ls="none", label=f"mIoU floor {floor:.0f} % ({'below' if floor < ymin else 'above'} the plot)")
    if show_budget:
        ax.axvline(budget, color="tab:orange", lw=1, ls=":", label=f"latency budget {budget:g} ms")
    else:
        side = "beyond the plot, right" if budget > xmax else "left of the plot"
        ax.plot([], [], ls="none", label=f"latency budget {budget:g} ms ({side})")
    ax.set_xlabel("median latency, ms (95 % interval)")
    ax.set_ylabel(f"mIoU, % ({report.data.split}, {report.data.images} images)")
    ax.set_title(f"{report_subject(report)} on {report.device.name}: latency vs mIoU", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    _place_labels(fig, ax, rows)
    try:
        return _png(fig)
    finally:
        plt.close(fig)


def examples_png(examples: list[dict], title: str = "") -> str | None:
    """``examples``: dicts with name, image (H,W,3 uint8), label and prediction (H,W,3 colour uint8)."""
    if not examples:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(examples), 3, figsize=(10, 2.6 * len(examples)), squeeze=False)
    for row, ex in zip(axes, examples):
        for ax, key in zip(row, ("image", "label", "prediction")):
            ax.imshow(ex[key])
            ax.set_axis_off()
            ax.set_title(f"{ex['name']}: {key}" if key == "image" else key, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    try:
        return _png(fig)
    finally:
        plt.close(fig)


def class_legend(dataset: str | None, classes=None, palette=None) -> str:
    """The dataset's class colours as HTML swatches (black: ignored / unlabelled pixels); a user model's "custom"
    label set gives its ``classes`` and ``palette``."""
    from edgeseg.data.datasets import DATASETS

    spec = DATASETS.get(dataset) if dataset else None
    if spec is not None:
        classes, palette = spec.classes, spec.palette
    if not classes or not palette or len(classes) != len(palette):
        return ""
    items = [
        f"<span><i class='sw' style='background:rgb{tuple(int(v) for v in c)}'></i>{html.escape(str(n))}</span>"
        for n, c in zip(classes, palette)
    ]
    items.append("<span><i class='sw' style='background:#000'></i>ignored / unlabelled</span>")
    return "<div class='legend'>" + "".join(items) + "</div>"


def _table(
    head: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), cls: str = "", pick: str | None = None
) -> str:
    """A table in a horizontal scroller; ``cls`` sets its minimum width (wide tables scroll on a phone instead of
    squeezing their columns), ``pick`` highlights the row whose first cell it is (the recommended artifact)."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        ("<tr class='pick'>" if pick is not None and row and row[0] == pick else "<tr>")
        + "".join(
            f"<td class='num'>{html.escape(c)}</td>" if i in numeric else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    table = f"<table class='{cls}'>" if cls else "<table>"
    return f"<div class='scroll'>{table}<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>"


def _main_table(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in markdown(report).split("\n") if line.startswith("| ") and not line.startswith("| ---")]
    head = [c.strip() for c in lines[0].strip().strip("|").split(" | ")]
    rows = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines[1 : 1 + len(report.results)]]
    return head, rows


def _summary(report: BenchReport) -> list[str]:
    dev, t = report.device, report.timing
    estimated = any(r.device.estimate for r in report.results)
    return [
        f"device: {dev.title} ({dev.runtime}); latency budget {dev.budget_ms:g} ms, mIoU floor "
        f"{100 * dev.miou_floor:.1f} %",
        f"host: {report.host.get('cpu')}, {report.host.get('cpus_usable')} usable cores, {t.threads} threads",
        f"mIoU: {display_path(report.data.path)} [{report.data.split}], {report.data.images} images, each artifact "
        "run with its own runtime here; 95 % intervals from resampling the images (1000 bootstrap resamples)",
        f"latency: median over N timed runs after {t.warmup} warm-up runs, until the median's 95 % interval is "
        f"within {100 * t.rel_ci:.0f} % (at most {t.max_runs} runs or {t.max_seconds:g} s)",
        f"latencies marked 'estimate' on {dev.name} are computed by a calibrated roofline, not measured"
        if estimated
        else "every latency was measured; nothing is estimated",
    ]


def html_report(report: BenchReport, pareto: str | None, examples: list[dict] | str | None, examples_note: str) -> str:
    """The page. ``examples``: the example dicts (rendered here) or an already rendered PNG (base64)."""
    named = several_models(report)
    esc = html.escape
    title = f"edgeseg bench: {report_subject(report)} on {report.device.name}"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for w in report.warnings:
        parts.append(f"<div class='box warn'><b>Warning:</b> {esc(w)}</div>")
    rec = report.recommendation
    if rec is not None:
        head = "Recommended" if rec.target else "No recommendation"
        parts.append(f"<div class='box rec'><b>{head} on {esc(report.device.name)}:</b> {esc(rec.text)}</div>")
    parts.append("<ul>" + "".join(f"<li>{esc(x)}</li>" for x in _summary(report)) + "</ul>")
    head, rows = _main_table(report)
    pick = rec.target if rec is not None else None
    parts.append(_table(head, rows, numeric={2, 3, 4, 5, 6, 7, 8}, cls="wide", pick=pick))
    for note in speed_notes(report):
        parts.append(f"<div class='box note'><b>Why fp16 is slow here:</b> {esc(note)}</div>")
    if pareto:
        parts.append("<h2>Latency vs mIoU</h2>")
        parts.append(f"<img alt='latency vs mIoU with 95 % intervals' src='data:image/png;base64,{pareto}'>")
        parts.append(
            "<p><small>Error bars: the 95 % interval of the median latency, and of each artifact's mIoU on its own. "
            "The mIoU intervals overlap because every artifact meets the same hard and easy images; whether two "
            "artifacts differ is judged on the same images (paired), in the Accuracy section.</small></p>"
        )
    acc_head, acc_rows = accuracy_table(report)
    if acc_rows:
        parts.append("<h2>Accuracy</h2>")
        parts.append(
            "<p>mIoU and Boundary IoU (IoU of the pixels within 2 % of the image diagonal of each object's contour, "
            "where resize and quantization errors gather) with 95 % intervals; the comparison with the reference "
            "resamples the same images for both (a tie: the difference is within its interval or below 0.1 points; "
            "under 20 images: too few images to tell apart).</p>"
        )
        parts.append(_table(acc_head, acc_rows, numeric={1}, cls="mid", pick=pick))
        cls_head, cls_rows = class_table(report)
        if len(cls_head) > 2:
            parts.append("<p>Per-class IoU of the reference, and each artifact's change against it (points):</p>")
        else:
            parts.append("<p>Per-class IoU:</p>")
        parts.append(_table(cls_head, cls_rows, numeric=set(range(1, len(cls_head)))))
    if examples:
        png = examples if isinstance(examples, str) else examples_png(examples)  # the note is the caption
        parts.append("<h2>Example predictions</h2>")
        parts.append(f"<p>{esc(examples_note)}</p>")
        parts.append(class_legend(report.model.dataset if report.model else None))
        parts.append(f"<img alt='image, label, prediction' src='data:image/png;base64,{png}'>")
    elif report.model is not None and report.model.classes:  # a user model's named classes, without examples
        parts.append("<h2>Classes</h2>")
        parts.append(class_legend(None, report.model.classes, report.model.palette))
    facts = artifact_facts(report)
    if facts:
        parts.append("<h2>Artifacts</h2>")
        for label, items in facts:
            dl = "".join(f"<dt>{esc(k)}</dt><dd><code>{esc(v)}</code></dd>" for k, v in items)
            parts.append(f"<h3>{esc(label)}</h3><dl class='facts'>{dl}</dl>")
    commands = [r.device.command for r in report.results if r.device.measured is None and r.device.command]
    if commands:
        parts.append(f"<h2>Would-be commands on {esc(report.device.name)}</h2>")
        parts.append("<pre>" + esc("\n".join(commands)) + "</pre>")
    skipped = [r for r in report.results if r.status in ("failed", "skipped")]
    if skipped:
        parts.append(
            "<p>" + "; ".join(f"{esc(row_label(r, named))}: {esc(STATUS_TEXT[r.status])}" for r in skipped) + "</p>"
        )
    cmd = f"; command: <code>{esc(report.command)}</code>" if report.command else ""
    parts.append(
        f"<p><small>edgeseg {esc(report.edgeseg)}, {esc(report.created)}, schema v{report.schema_version}{cmd}; "
        "machine-readable: bench.json</small></p></body></html>"
    )
    return "\n".join(parts) + "\n"
