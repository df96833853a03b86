"""estimate, fit-latency: latency estimates (labelled so) for devices that are not attached, and fitting a
device's efficiency factors to measurements."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from edgeseg.cli import app
from edgeseg.cli.common import (
    DatasetOpt,
    DeviceOpt,
    OptModelOpt,
    ProfilesOpt,
    UpsampleOpt,
    _write_json,
    check_json_out,
    console,
    deprecated_alias,
    model_options,
    user_errors,
)
from edgeseg.commands import estimate as estimate_cmd


@app.command()
@user_errors
@model_options
def estimate(
    device: DeviceOpt,
    model: OptModelOpt = None,
    dataset: DatasetOpt = None,
    target: str | None = typer.Option(None, "--target", "-t", help="Target, e.g. trt-fp16 (see `edgeseg targets`)."),
    size: str | None = typer.Option(None, "--size", help="Input HxW (default: the dataset's evaluation size)."),
    artifact: Path | None = typer.Option(None, "--artifact", "-a", help="Estimate this artifact folder instead."),
    upsample: UpsampleOpt = "matmul",
    profiles: ProfilesOpt = None,
    json_out: Path | None = typer.Option(None, "--json", help="Also write the estimate as JSON."),
):
    """Estimate (not measure) latency on a device from the exported graph and the device's calibrated roofline."""
    check_json_out(json_out)
    result = estimate_cmd.estimate_latency(
        device,
        model=model,
        dataset=dataset,
        target=target,
        size=size,
        artifact=artifact,
        upsample=upsample,
        profiles=profiles,
    )
    est = result["estimate"]
    table = Table(title=f"ESTIMATE (not measured): {est.target} on {est.device}")
    table.add_column("")
    table.add_column("value", overflow="fold")
    table.add_row("latency (estimate)", f"{est.latency_ms:.1f} ms")
    table.add_row("compute-bound / memory-bound", f"{est.compute_bound_ms:.1f} / {est.memory_bound_ms:.1f} ms")
    table.add_row("launch / per-inference overhead", f"{est.launch_ms:.2f} / {est.overhead_ms:.2f} ms")
    table.add_row("kernels, GFLOP, MB moved", f"{est.kernels}, {est.gflops:.1f}, {est.mbytes:.0f}")
    table.add_row("by op class (ms)", ", ".join(f"{k} {v:.1f}" for k, v in est.by_class_ms.items()))
    table.add_row("graph", escape(est.graph))
    table.add_row("calibrated on", escape(f"{est.calibration_source} (for {est.calibrated_target})"))
    v = est.validation
    table.add_row(
        "validation error",
        f"median {v.median_abs_pct_error:.1f} %, max {v.max_abs_pct_error:.1f} % ({v.method})" if v else "none",
    )
    for note in est.notes:
        table.add_row("note", escape(note))
    console.print(table)
    if json_out:
        _write_json(json_out, {"estimate": est.model_dump(mode="json"), "cost": result["cost"]})
        console.print(f"wrote {json_out}", highlight=False)


@app.command("fit-latency")
@user_errors
def fit_latency(
    device: DeviceOpt,
    sources: list[str] = typer.Option(
        ...,
        "--from",
        help="bench.json measured on the device (repeatable), 'published' (the shipped EfficientViT-Seg README "
        "figures) or a figures YAML of that shape.",
    ),
    profiles: ProfilesOpt = None,
    out: Path = typer.Option(Path("profiles"), "--out", help="Folder for the calibrated copy <device>.yaml."),
):
    """Fit the latency estimator's efficiency factors of a device to measurements; write a profile copy with them
    (pass it via --profiles)."""
    result = estimate_cmd.fit_latency(device, sources, profiles=profiles, out=out)
    for target, cal in result["calibrations"].items():
        if target not in result["held_out"]:
            continue  # a calibration this run did not touch
        rows = result["held_out"][target]
        table = Table(title=f"{result['device']} {target}: leave-one-out (each point predicted by a fit on the others)")
        for col in ("point", "measured ms", "estimated ms", "abs % error"):
            table.add_column(col)
        for r in rows:
            err = 100 * abs(r["estimated_ms"] - r["measured_ms"]) / r["measured_ms"]
            table.add_row(r["label"], f"{r['measured_ms']:.1f}", f"{r['estimated_ms']:.1f}", f"{err:.1f}")
        if rows:
            console.print(table)
        v = cal.validation
        eff = ", ".join(f"{k} {x:.3f}" for k, x in cal.efficiency.items())
        console.print(
            f"{target}: efficiencies {eff}; memory {cal.memory_efficiency:.3f}; launch {cal.launch_us:.1f} us/kernel; "
            f"overhead {cal.overhead_ms:.2f} ms"
            + (
                f"; validation median {v.median_abs_pct_error:.1f} % ({v.method})"
                if v
                else "; too few points to validate"
            ),
            highlight=False,
        )
    console.print(
        f"wrote {result['file']} (use it with --profiles {Path(result['file']).parent})",
        highlight=False,
        soft_wrap=True,
    )


# the old name (calibrating also means INT8 calibration)
deprecated_alias(app, "calibrate", "fit-latency", fit_latency)
