"""targets, export, quantize, lint, op-profile: the target registry, building artifacts and looking inside them."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edgeseg.cli import app
from edgeseg.cli.common import (
    ArtifactsOutOpt,
    CalibDataOpt,
    DatasetOpt,
    ExportSizeOpt,
    ModelOpt,
    NoVerifyOpt,
    ParityImagesOpt,
    UpsampleOpt,
    WeightsOpt,
    _fmt,
    _parse_budget,
    _pct,
    _write_json,
    artifact_checks,
    check_json_out,
    console,
    deprecated_alias,
    err_console,
    model_options,
    notice,
    user_errors,
)
from edgeseg.commands import export as export_cmd
from edgeseg.errors import EdgesegError
from edgeseg.export_request import EXPORT_DEFAULTS, PARITY_IMAGES
from edgeseg.residency import cell as residency_cell

CalibSizeOpt = Annotated[int, typer.Option("--calib-size", help="INT8: number of calibration images (class-balanced).")]
CalibMethodOpt = Annotated[str, typer.Option("--calib-method", help="INT8: percentile (default) | minmax | entropy.")]
MaxDropOpt = Annotated[
    str,
    typer.Option(
        "--max-miou-drop",
        help="INT8: mIoU points int8 may lose vs fp32 on a held-out train slice; ONNX, TensorRT and TFLite keep the "
        "fewest layers float that meet it (sensitivity analysis; Core ML is checked only). 'off' quantizes all the "
        "policy allows.",
    ),
]
Int8ObjectiveOpt = Annotated[
    str,
    typer.Option(
        "--int8-objective",
        help="INT8: what --max-miou-drop limits: mean (the mIoU drop), worst-class (the largest drop of any one "
        "class's IoU: thin classes such as pole and sign lose most) or agreement (the % of pixels whose argmax "
        "differs from fp32: no trained weights or matching labels needed, e.g. your own model).",
    ),
]
ParityDataOpt = Annotated[
    Path | None,
    typer.Option("--parity-data", help="Folder with val/images for parity (default: the bundled CamVid sample)."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rebuild even when the cache has this artifact.")]


@app.command()
@user_errors
def targets():
    """The target table, derived from the registered backends: format, precision, file, runtime here, extra, lint
    rules, and whether the extra's packages are installed here."""
    from edgeseg.backends import TARGETS, backend_for

    table = Table(title="edgeseg targets")
    for col in ("target", "format", "precision", "suffix", "runs here with", "extra", "rules", "installed"):
        table.add_column(col)
    for t in TARGETS.values():
        missing = backend_for(t.format).missing_packages(t.precision)
        table.add_row(
            t.name,
            t.format,
            t.precision,
            t.suffix,
            t.runtime,
            escape(f"edgeseg[{t.extra}]"),
            t.rules,
            "yes" if not missing else f"no: needs {', '.join(missing)}",
        )
    console.print(table)


@app.command()
@user_errors
@model_options
def export(
    model: ModelOpt,
    target: str = typer.Option(..., "--target", "-t", help="See `edgeseg targets`, e.g. onnx-fp32."),
    dataset: DatasetOpt = None,
    weights: WeightsOpt = None,
    size: ExportSizeOpt = None,
    out: ArtifactsOutOpt = Path("artifacts"),
    with_argmax: bool = typer.Option(
        EXPORT_DEFAULTS.with_argmax, "--with-argmax", help="Upsample + argmax in the graph: int32 labels."
    ),
    opset: int = typer.Option(EXPORT_DEFAULTS.opset, "--opset"),
    parity_data: ParityDataOpt = None,
    parity_images: ParityImagesOpt = PARITY_IMAGES,
    force: ForceOpt = False,
    upsample: UpsampleOpt = EXPORT_DEFAULTS.upsample,
    calib_data: CalibDataOpt = None,
    calib_size: CalibSizeOpt = EXPORT_DEFAULTS.calib_size,
    calib_method: CalibMethodOpt = EXPORT_DEFAULTS.calib_method,
    max_miou_drop: MaxDropOpt = str(EXPORT_DEFAULTS.max_miou_drop),
    int8_objective: Int8ObjectiveOpt = EXPORT_DEFAULTS.int8_objective,
):
    """Rewrite, export, check parity vs PyTorch on real images, lint; writes an artifact folder."""
    budget = _parse_budget(max_miou_drop)
    with console.status(f"exporting {model} -> {target}") as status:
        m = export_cmd.export(
            model,
            dataset,
            weights,
            target,
            size,
            out,
            with_argmax=with_argmax,
            opset=opset,
            parity_data=parity_data,
            parity_images=parity_images,
            force=force,
            upsample=upsample,
            calib_data=calib_data,
            calib_size=calib_size,
            calib_method=calib_method,
            max_miou_drop=budget,
            int8_objective=int8_objective,
            progress=lambda msg: status.update(f"exporting {model} -> {target}: {msg}"),
            notice=notice,
        )
    _print_export_summary(m)


def _print_export_summary(m: dict) -> None:
    p, lint = m["parity"], m["lint"]
    table = Table(title=f"{m['model']} ({m['dataset']}) -> {m['target']}" + (" (cached)" if m["cached"] else ""))
    table.add_column("field")
    table.add_column("value")
    table.add_row("file", f"{m['folder']}/{m['file']}")
    table.add_row("size", f"{m['bytes'] / 1e6:.2f} MB")
    table.add_row("input", "x".join(map(str, m["input"]["shape"])))
    if m.get("untrained"):
        table.add_row("weights", "[yellow]untrained[/] (--weights random, seeded): no mIoU")
    table.add_row("rewrites", ", ".join(f"{k} x{v}" for k, v in m["rewrites"].items()))
    # exporters record different facts (ONNX: opset and node count; TFLite: layout; Core ML: deployment target)
    recorded = (("opset", "opset"), ("nodes", "nodes:"), ("layout", "layout"))
    facts = [m["exporter"]] + [f"{label} {m[key]}" for key, label in recorded if key in m]
    table.add_row("exporter", ", ".join(facts))
    table.add_row("parity max |diff|", _fmt(p["max_abs_diff"], ".3g"))
    table.add_row("parity SNR", _fmt(p["snr_db"], ".1f") + " dB" if p["snr_db"] is not None else "-")
    if p["argmax_agreement"] is None:
        table.add_row("parity", f"not measured here ({p['runtime']})")
    else:
        table.add_row(
            "argmax agreement", f"{100 * p['argmax_agreement']:.3f} % on {p['images']} images ({p['runtime']})"
        )
    if p.get("miou_candidate") is not None:
        table.add_row(
            "mIoU on those images", f"{100 * p['miou_candidate']:.2f} (PyTorch {100 * p['miou_reference']:.2f})"
        )
    if "quantization" in m:
        q, c = m["quantization"], m["calibration"]
        table.add_row("int8 ops", ", ".join(f"{op} x{n}" for op, n in q["int8_nodes"].items()) or "none")
        table.add_row("kept float", ", ".join(q["policy"]["float_ops"]))
        table.add_row("calibration", f"{c['size']} {c['split']} images ({c['sampler']}), {c['method']}")
        mp = q.get("mixed_precision")
        if mp and mp.get("objective") == "worst-class":
            table.add_row(
                "held-out worst class",
                f"largest per-class IoU drop {mp['drop_final']:.2f} points vs fp32 (budget {mp['budget']}) on "
                f"{mp['holdout_images']} train images not calibrated on",
            )
        if mp and mp.get("objective") == "agreement":
            table.add_row(
                "held-out argmax agreement",
                f"{mp['miou_final']:.2f} % of pixels as fp32 (disagreement {mp['drop_final']:.2f} points, budget "
                f"{mp['budget']}) on {mp['holdout_images']} train images not calibrated on",
            )
        if mp and mp.get("objective", "mean") == "mean":
            table.add_row(
                "held-out mIoU",
                f"{mp['miou_final']:.2f} vs fp32 {mp['miou_fp32']:.2f} (drop {mp['drop_final']:.2f}, budget "
                f"{mp['budget']}) on {mp['holdout_images']} train images not calibrated on",
            )
        if mp:
            floats = mp["float_layers"]
            table.add_row(
                "layers kept float",
                "\n".join(f"{f['layer']} ({f['snr_db']} dB alone)" for f in floats)
                if floats
                else ("none: all-int8 within budget" if mp.get("within_budget", True) else "[red]over budget[/]")
                + (f" ({mp['note']})" if "note" in mp else ""),
            )
    if "trtexec" in m:
        table.add_row("engine", m["engine"] or f"not built: {m['engine_not_built']}; run build_engine.sh on the device")
    table.add_row(
        "lint",
        "clean"
        if lint["clean"]
        else f"[red]{lint['errors']} error(s)[/]" + (f", {lint['warnings']} warning(s)" if lint["warnings"] else ""),
    )
    if m.get("residency") or m.get("residency_error"):
        table.add_row("residency", residency_cell(m.get("residency")) if m.get("residency") else m["residency_error"])
    table.add_row("export time", f"{m['export_seconds']:.1f} s")
    console.print(table)
    if not lint["clean"]:
        err_console.print(
            f"lint failed: see {m['folder']}/lint.json or `{shlex.join(['edgeseg', 'lint', str(m['folder'])])}`"
        )
        raise typer.Exit(1)


@app.command()
@user_errors
@model_options
def quantize(
    model: ModelOpt,
    target: str = typer.Option("onnx-int8", "--target", "-t", help="An INT8 target (see `edgeseg targets`)."),
    calib_data: CalibDataOpt = None,
    calib_size: CalibSizeOpt = EXPORT_DEFAULTS.calib_size,
    calib_method: CalibMethodOpt = EXPORT_DEFAULTS.calib_method,
    dataset: DatasetOpt = None,
    weights: WeightsOpt = None,
    size: ExportSizeOpt = None,
    out: ArtifactsOutOpt = Path("artifacts"),
    parity_data: ParityDataOpt = None,
    parity_images: ParityImagesOpt = PARITY_IMAGES,
    force: ForceOpt = False,
    max_miou_drop: MaxDropOpt = str(EXPORT_DEFAULTS.max_miou_drop),
    int8_objective: Int8ObjectiveOpt = EXPORT_DEFAULTS.int8_objective,
):
    """INT8 export with calibration on real images (the same as `edgeseg export --target X-int8`)."""
    from edgeseg.backends import get_target

    if get_target(target).precision != "int8":
        raise EdgesegError(f"{target} is not an INT8 target: use `edgeseg export` for it, or an *-int8 target here")
    export(
        model,
        target,
        dataset,
        weights,
        size,
        out,
        with_argmax=EXPORT_DEFAULTS.with_argmax,
        opset=EXPORT_DEFAULTS.opset,
        parity_data=parity_data,
        parity_images=parity_images,
        force=force,
        upsample=EXPORT_DEFAULTS.upsample,
        calib_data=calib_data,
        calib_size=calib_size,
        calib_method=calib_method,
        max_miou_drop=max_miou_drop,
        int8_objective=int8_objective,
    )


@app.command()
@user_errors
@artifact_checks
def lint(
    artifact: Path = typer.Argument(..., help="An .onnx file or an artifact folder."),
    target: str | None = typer.Option(
        None, "--target", "-t", help="Rule set of this target (default: the artifact's own)."
    ),
    json_out: Path | None = typer.Option(None, "--json"),
    no_verify: NoVerifyOpt = False,
):
    """Check an exported graph against a backend's conformance rules; exit 1 on errors."""
    check_json_out(json_out)
    report = export_cmd.lint(artifact, target)
    if report["findings"]:
        table = Table(title=f"lint {report['artifact']} ({report['rules']} rules)")
        for col in ("severity", "rule", "node", "message"):
            table.add_column(col)
        for f in report["findings"]:
            table.add_row(f["severity"], f["rule"], f["node"], f["message"])
        console.print(table)
    console.print(
        f"{report['rules']} rules: {report['errors']} error(s), {report['warnings']} warning(s), "
        f"max rank {report['max_rank']}, {sum(report['ops'].values())} nodes"
    )
    print_residency(report.get("residency"), report.get("residency_error"))
    if json_out:
        _write_json(json_out, report)
    if report["errors"]:
        raise typer.Exit(1)


@app.command("op-profile")
@user_errors
@artifact_checks
def op_profile(
    artifact: Path = typer.Argument(..., help="An artifact folder written by `edgeseg export` (or its model file)."),
    threads: int = typer.Option(2, "--threads", help="Intra-op threads, as bench uses them."),
    runs: int = typer.Option(20, "--runs", help="Timed runs; each kernel's time is its mean over them."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed runs first."),
    top: int = typer.Option(15, "--top", help="Kernels to list."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full profile as JSON."),
    no_verify: NoVerifyOpt = False,
):
    """Where an artifact's time goes here, per op: top kernels, share per op type, and what falls off the fast
    path."""
    check_json_out(json_out)
    p = export_cmd.op_profile(artifact, threads=threads, runs=runs, warmup=warmup)
    title = f"{p['target']}: {p['runtime']}, {p['threads']} threads, mean of {p['runs']} runs"
    if p["kernels"]:
        table = Table(title=f"top kernels ({title})")
        for col in ("kernel (after fusion)", "op type", "ms", "share"):
            table.add_column(col, justify="right" if col in ("ms", "share") else "left")
        for k in p["kernels"][:top]:
            table.add_row(k["name"], k["op_type"], f"{k['ms']:.3f}", _pct(k["share"]))
        console.print(table)
    table = Table(title=f"by op type ({title})")
    for col in ("op type", "count", "ms", "share", "cumulative", "path"):
        table.add_column(col, justify="left" if col in ("op type", "path") else "right")
    cumulative = 0.0
    for r in p["by_type"]:
        timed = r["ms"] is not None  # None where the runtime has no per-op timer
        cumulative += r["share"] if timed else 0.0
        cells = (f"{r['ms']:.3f}", _pct(r["share"]), _pct(cumulative)) if timed else ("-", "-", "-")
        table.add_row(r["op_type"], str(r["count"]), *cells, r["path"])
    console.print(table)
    lines = [f"one inference: {p['run_ms']:.2f} ms median, {p['run_mean_ms']:.2f} ms mean (the shares' base)"]
    if p["explained"] is not None:
        best = _pct(max(p["explained_per_run"]))
        lines.append(
            f"kernels explain {_pct(p['explained'])} % of it ({best} % in the least disturbed run); the rest is the "
            "executor's overhead between kernels, which grows when other processes load the CPU"
        )
    if p["partitions"] is not None:
        lines.append(f"XNNPACK partitions: {p['partitions']}")
    for kind, o in p["off_path"].items():
        timed = f", {o['ms']:.2f} ms ({_pct(o['share'])} %)" if o["ms"] is not None else ""
        lines.append(f"{kind}: {o['count']} node(s){timed}: {o['note']}")
    for line in lines + p["notes"]:
        console.print(line)
    print_residency(p.get("residency"))
    if json_out:
        _write_json(json_out, p)


def print_residency(records: list[dict] | None, error: str | None = None) -> None:
    """Where the artifact's nodes would run per accelerator, each row naming the tool that said so."""
    from edgeseg.residency import from_dicts

    if error:
        console.print(f"residency: not measured ({escape(error)})")
    if not records:
        return
    table = Table(title="residency: nodes per accelerator")
    for col in ("accelerator", "nodes taken", "share", "partitions", "left to the CPU", "tool", "note"):
        table.add_column(col, justify="right" if col in ("nodes taken", "share", "partitions") else "left")
    for r in from_dicts(records):
        table.add_row(
            r.accelerator,
            f"{r.nodes_supported}/{r.nodes_total}",
            _pct(r.fraction),
            "-" if r.partitions is None else str(r.partitions),
            ", ".join(f"{op} x{n}" for op, n in sorted(r.unsupported_ops.items())) or "none",
            escape(r.tool),
            escape(r.note),
        )
    console.print(table)


deprecated_alias(app, "profile", "op-profile", op_profile)  # the old name (a "profile" is a device YAML)
