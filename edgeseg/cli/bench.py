"""devices, bench: the device profiles, and benchmarking artifacts on one of them."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from edgeseg.bench.device import RemoteOptions
from edgeseg.cli import app
from edgeseg.cli.common import (
    DatasetOpt,
    DeviceOpt,
    ExportSizeOpt,
    NoVerifyOpt,
    OptModelOpt,
    ParityImagesOpt,
    ProfilesOpt,
    SplitOpt,
    WeightsOpt,
    _progress_line,
    _split_targets,
    artifact_checks,
    console,
    err_console,
    model_options,
    notice,
    user_errors,
)
from edgeseg.commands import bench as bench_cmd
from edgeseg.errors import EdgesegError, at_least
from edgeseg.paths import SAMPLE_DATA
from edgeseg.residency import cell as residency_cell


@app.command()
@user_errors
def devices(
    profiles: ProfilesOpt = None,
    facts: bool = typer.Option(False, "--facts", help="Also print each profile's hardware facts and sources."),
):
    """Device profiles: preferred targets, runtime, how edgeseg reaches them, latency budget, mIoU floor."""
    from edgeseg.bench.profiles import load_profiles

    loaded = load_profiles(profiles)
    table = Table(title="edgeseg devices")
    for col in ("device", "aliases", "title", "targets (preferred first)", "reach", "budget ms", "mIoU floor"):
        table.add_column(col)
    for p, _ in sorted(loaded.values(), key=lambda v: (v[0].kind != "host", v[0].name)):
        r = p.reach
        reach = {
            "local": "this machine",
            "ssh": f"ssh {r.host}" if r.host else "ssh (no host configured)",
            "adb": f"adb {r.serial}" if r.serial else "adb (no serial configured)",
            "none": "none",
        }[r.method]
        table.add_row(
            p.name,
            ", ".join(p.aliases) or "-",
            p.title,
            ", ".join(p.targets),
            reach,
            f"{p.budget_ms:g}",
            f"{100 * p.miou_floor:.1f}",
        )
    console.print(table)
    if facts:
        for p, path in loaded.values():
            if p.hardware:
                console.print(f"[bold]{p.name}[/] ({path})")
                for f in p.hardware:
                    console.print(f"  {f.fact}: {f.value}  [dim](source: {escape(f.source)})[/]", highlight=False)


@app.command()
@user_errors
@model_options
@artifact_checks
def bench(
    device: DeviceOpt,
    model: OptModelOpt = None,
    weights: WeightsOpt = None,
    dataset: DatasetOpt = None,
    targets: list[str] | None = typer.Option(
        None, "--targets", "-t", help="Targets, comma-separated or repeated (default: the profile's preferred)."
    ),
    artifact: list[Path] | None = typer.Option(
        None, "--artifact", "-a", help="Bench these artifact folders (repeatable) instead of --model/--targets."
    ),
    data: Path = typer.Option(
        SAMPLE_DATA,
        "--data",
        help="Labelled data for mIoU (SPLIT/images + SPLIT/labels); train/ calibrates INT8.",
    ),
    split: SplitOpt = "val",
    limit: int | None = typer.Option(None, "--limit", help="mIoU on the first N images only."),
    size: ExportSizeOpt = None,
    profiles: ProfilesOpt = None,
    out: Path = typer.Option(
        Path("artifacts"),
        "--artifacts-dir",
        "--out",
        help="Where artifacts are found and exported (without --model: those suiting the device are benched).",
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Folder for bench.json, bench.md, report.html (default bench/<model>-<device>)."
    ),
    calib_data: Path | None = typer.Option(
        None,
        "--calib-data",
        envvar="EDGESEG_CALIB_DATA",
        help="INT8 calibration data (train/images + train/labels); default: EDGESEG_CALIB_DATA, else --data if it "
        "has train/. Without any, INT8 targets are skipped.",
    ),
    parity_images: ParityImagesOpt = 20,
    threads: int = typer.Option(2, "--threads", help="Threads for the runtimes here (pinned for every target)."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs before timing."),
    runs: int = typer.Option(30, "--runs", help="At least this many timed runs."),
    max_runs: int = typer.Option(300, "--max-runs", help="At most this many timed runs (also the device's run count)."),
    max_seconds: float = typer.Option(20.0, "--max-seconds", help="Stop timing one target after this long."),
    host: str | None = typer.Option(None, "--host", help="SSH device, user@host (overrides the profile)."),
    port: int | None = typer.Option(None, "--port", help="SSH port."),
    known_hosts: Path | None = typer.Option(
        None, "--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)."
    ),
    identity: Path | None = typer.Option(None, "--identity", help="SSH private key."),
    serial: str | None = typer.Option(None, "--serial", help="adb serial of an Android device."),
    benchmark_model: str | None = typer.Option(
        None, "--benchmark-model", help="Path of TFLite's benchmark_model on the Android device."
    ),
    examples: int = typer.Option(3, "--examples", help="Example predictions in report.html."),
    no_verify: NoVerifyOpt = False,
):
    """Export what is missing, then per target: status, size, parity, mIoU, latency here and on the device."""
    from edgeseg.bench.report import STATUS_TEXT, device_cell, latency_cell, mean_std_cell
    from edgeseg.bench.stats import TimingPlan

    at_least(runs, 1, "--runs")
    at_least(warmup, 0, "--warmup")
    if not 0 < max_seconds < math.inf:
        raise EdgesegError(f"--max-seconds {max_seconds}: pass a positive number of seconds")
    plan = TimingPlan(warmup=warmup, min_runs=runs, max_runs=max(max_runs, runs), max_seconds=max_seconds)
    remote = RemoteOptions(host, port, known_hosts, identity, serial, benchmark_model)
    with _progress_line("target", "bench") as on_event:
        result = bench_cmd.bench(
            device,
            model=model,
            dataset=dataset,
            weights=weights,
            targets=_split_targets(targets),
            artifacts=artifact or None,
            data=data,
            split=split,
            limit=limit,
            size=size,
            profiles=profiles,
            out=out,
            report_dir=report,
            calib_data=calib_data,
            parity_images=parity_images,
            threads=threads,
            plan=plan,
            remote=remote,
            examples=examples,
            command="edgeseg " + " ".join(sys.argv[1:]) if sys.argv[1:] else None,
            progress=on_event,
            notice=notice,
        )
    r = result["report"]
    name = r.device.name
    untrained = " [untrained weights: no mIoU]" if r.model and r.model.weights.get("untrained") else ""
    table = Table(title=f"{r.model.name if r.model else 'artifacts'} on {name} ({r.device.title}){untrained}")
    cols = ("target", "status", "MB", "parity", "mIoU", "here: median/p90/p99 ms", "mean ± std", "N (warm)", "FPS")
    for col in cols + (f"on {name}", "residency"):
        table.add_column(col, overflow="fold")
    for t in r.results:
        h = t.host
        table.add_row(
            t.target,
            STATUS_TEXT[t.status] + (f": {'; '.join(t.reasons)}" if t.reasons else ""),
            f"{t.artifact.bytes / 1e6:.2f}" if t.artifact else "-",
            f"{100 * t.parity.argmax_agreement:.2f} %" if t.parity and t.parity.argmax_agreement is not None else "-",
            f"{100 * t.miou:.2f}" if t.miou is not None else "-",
            latency_cell(h),
            mean_std_cell(h),
            f"{h.stats.n} ({h.stats.warmup})" if h else "-",
            f"{h.stats.fps:.1f}" if h else "-",
            escape(device_cell(t, name)),
            escape(residency_cell(t.residency)),
        )
    console.print(table)
    console.print(
        f"mIoU on {r.data.path} ({r.data.split}), {r.data.images} images; latency here: {r.host['cpu']}, "
        f"{r.timing.threads} threads (medians; a shared machine is noisy). "
        + (
            f"Latencies labelled 'estimate' on {name} are computed (calibrated roofline), not measured."
            if any(t.device.estimate for t in r.results)
            else "Nothing is estimated."
        ),
        highlight=False,
    )
    for t in r.results:
        if t.device.measured is None and t.device.command and r.device.kind != "host":
            console.print(f"{t.target}: {t.device.note}", highlight=False)
            console.print(f"  would run: {escape(t.device.command)}", highlight=False, soft_wrap=True)
    for warning in r.warnings:
        err_console.print(f"warning: {escape(warning)}", highlight=False)
    if r.recommendation is not None:
        head = "recommended" if r.recommendation.target else "no recommendation"
        console.print(f"[bold]{head}[/]: {escape(r.recommendation.text)}", highlight=False)
    paths = result["paths"]
    console.print(f"artifacts in {out}; wrote {paths['json']}, {paths['md']}, {paths['html']}", highlight=False)
