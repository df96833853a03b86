"""bench: export what is missing, then per target the gates (``edgeseg.gates``: lint, parity, mIoU floor, latency
budget), latency here and on the profile's device (``edgeseg.bench.device``), or a labelled estimate where the
device cannot be reached; writes bench.json, bench.md and report.html. ``bench_artifact`` is also sweep's bench
job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeseg.artifact import read_manifest
from edgeseg.bench.decide import accuracy, compare_with_reference, load_warnings, recommend
from edgeseg.bench.device import (
    DeviceConnection,
    RemoteOptions,
    device_column,
    device_info,
    measurement,
    node_stands_in,
    would_be_command,
)
from edgeseg.commands import Progress
from edgeseg.commands.estimate import _artifact_cost, _estimator_data
from edgeseg.commands.evaluate import colorize, evaluate, load_model
from edgeseg.commands.export import artifact_residency, export
from edgeseg.commands.recheck import recheck_parity
from edgeseg.data.datasets import DATASETS, list_split, read_image
from edgeseg.data.transforms import parse_size
from edgeseg.errors import EdgesegError, at_least, reraise_interrupt
from edgeseg.eval.evaluate import plan_for, predict_label_map
from edgeseg.gates import Evidence, judge_absolute
from edgeseg.io import output_folder
from edgeseg.paths import SAMPLE_DATA

# What `edgeseg bench --device D` exports when neither a model nor artifacts are named and none suit D yet.
DEFAULT_MODEL = "efficientvit-b0"


def suitable_artifacts(folder: Path, targets: list[str], notice=None) -> list[Path]:
    """Artifact folders directly under ``folder`` whose target is one of ``targets`` (sorted by name); folders
    without a manifest are not artifacts and are passed over, unreadable ones are named to ``notice``."""
    found = []
    if not Path(folder).is_dir():
        return found
    for sub in sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (sub / "manifest.json").is_file():
            continue
        try:
            _, m = read_manifest(sub)
        except EdgesegError as exc:
            if notice is not None:
                notice(f"skipped {sub}: {exc}")
            continue
        if m["target"] in targets:
            found.append(sub)
    return found


def skipped_target_result(target: str, device: str, reason: str, model: str | None = None, size: str | None = None):
    from edgeseg.bench.report import DeviceColumn, TargetResult

    return TargetResult(
        target=target, model=model, size=size, status="skipped", reasons=[reason], device=DeviceColumn(device=device)
    )


def _bench_entries(model, dataset, weights, targets, artifacts, profile) -> list[dict]:
    """What to bench: artifact folders given, or the targets (given, else the profile's preferred) to export."""
    from edgeseg.backends import get_target

    if artifacts:
        if model or weights or targets:
            raise EdgesegError("pass either --artifact or --model/--weights/--targets, not both")
        entries = []
        for path in artifacts:
            folder, m = read_manifest(Path(path))
            entries.append({"target": m["target"], "folder": folder, "manifest": m})
        return entries
    names = targets or profile.targets
    for name in names:
        get_target(name)  # unknown names fail before anything runs
    return [{"target": name, "folder": None, "manifest": None} for name in names]


def _bench_estimate(profile, profiles: Path | None, folder: Path, manifest: dict):
    """(estimate, None) for an artifact on a device bench could not reach, or (None, why not)."""
    from edgeseg.estimate.roofline import estimate

    try:
        hw, notes = _estimator_data(profile, profiles, manifest["target"])
        cost, desc = _artifact_cost(folder, manifest)
    except EdgesegError as exc:
        return None, str(exc)
    except Exception as exc:  # an estimator failure is this column's note, not the end of the bench
        reraise_interrupt(exc)
        return None, f"estimate failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
    est = estimate(cost, hw, profile.name, manifest["target"], manifest["precision"], desc)
    return est.model_copy(update={"notes": notes}), None


def failure_reason(exc: BaseException, crashed: str = "export crashed") -> str:
    """A failure as the one-line reason a bench or sweep row carries: a user error's own message, or the first
    line of anything else behind ``crashed``."""
    if isinstance(exc, EdgesegError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return f"{crashed}: {type(exc).__name__}: {first}"


def failed_target_result(target: str, device: str, reason: str, model: str | None = None, size: str | None = None):
    from edgeseg.bench.report import DeviceColumn, TargetResult

    return TargetResult(
        target=target, model=model, size=size, status="failed", reasons=[reason], device=DeviceColumn(device=device)
    )


def artifact_runs_here(target: str) -> bool:
    """Whether this machine has the runtime to run an artifact of ``target`` (Core ML predicts on macOS only)."""
    from edgeseg.backends import backend_for, get_target

    return backend_for(get_target(target).format).runs_here()


def bench_artifact(
    folder: Path,
    manifest: dict,
    profile,
    conn: DeviceConnection | None,
    *,
    miou: float | None,
    miou_images: int | None,
    plan,
    threads: int,
    profiles: Path | None = None,
    measure_here: bool = True,
    on_device_node: bool = False,
    progress: Progress | None = None,
):
    """One artifact on one device profile: the gates of ``edgeseg.gates`` that need no baseline (lint, parity,
    mIoU floor, latency budget on the device; a failed one is a reason of status ``failed_check``), latency here when
    ``measure_here`` (or the profile is this machine), and the device column: measured on the device (SSH / adb
    through ``conn``), or, with ``on_device_node``, in this process because it runs on the device (a Ray node that
    advertises it); else "not measured" with the would-be command and a labelled estimate."""
    from edgeseg.backends import get_target
    from edgeseg.bench.host import machine_info
    from edgeseg.bench.host import measure_here as time_here
    from edgeseg.bench.report import ArtifactInfo, DeviceColumn, ParityInfo, TargetResult

    report = progress or (lambda *a, **k: None)
    tgt = get_target(manifest["target"])
    folder = Path(folder)
    h, w = manifest["input"]["shape"][2:]
    p = manifest["parity"]
    parity = ParityInfo(
        images=p["images"],
        argmax_agreement=p["argmax_agreement"],
        max_abs_diff=p["max_abs_diff"],
        snr_db=p["snr_db"],
        runtime=p["runtime"],
    )
    lint_clean = manifest["lint"]["clean"]
    artifact = ArtifactInfo(
        folder=str(folder),
        file=manifest["file"],
        sha256=manifest["sha256"],
        bytes=manifest["bytes"],
        cached=bool(manifest.get("cached", True)),
        lint_clean=lint_clean,
        weights_sha256=(manifest.get("weights") or {}).get("sha256"),
        runtime=p.get("runtime"),
        input="{} {} {}".format(
            manifest["input"].get("name", "input"),
            "x".join(str(d) for d in manifest["input"]["shape"]),
            manifest["input"].get("dtype", ""),
        ).strip(),
    )
    runs_here = artifact_runs_here(tgt.name)
    device_threads = threads if profile.kind == "host" else profile.threads
    reach = profile.reach
    host_m = device_m = None
    if runs_here and (measure_here or profile.kind == "host" or on_device_node):
        here_threads = device_threads if on_device_node else threads
        info = machine_info(here_threads)
        report("target", target=tgt.name, step="latency here" if not on_device_node else f"on {profile.name}")
        timing, runtime, load = time_here(folder, here_threads, plan)
        if on_device_node:
            import socket

            machine = (
                f"Ray node {socket.gethostname()} advertising {profile.name} ({info['cpu']}, "
                f"{info['cpus_usable']} usable CPUs, {here_threads} threads)"
            )
            device_m = measurement(timing, runtime, machine, "in-process timer on the device node", load)
        else:
            machine = f"this machine ({info['cpu']}, {info['cpus_usable']} usable CPUs, {threads} threads)"
            host_m = measurement(timing, runtime, machine, "in-process timer around the runtime's inference call", load)
    would_be = would_be_command(profile, reach, str(folder), tgt, plan, device_threads)
    if profile.kind == "host" and not on_device_node:
        device_col = (
            DeviceColumn(device=profile.name, measured=host_m)
            if host_m
            else DeviceColumn(device=profile.name, note=f"not measured on {profile.name}: {tgt.runtime}")
        )
    elif device_m is not None:
        device_col = DeviceColumn(device=profile.name, measured=device_m, note=node_stands_in(profile))
    else:
        report("target", target=tgt.name, step=f"on {profile.name}")
        if conn is None:
            conn = DeviceConnection(profile, reach)
        device_col = device_column(conn, folder, manifest, tgt, plan, device_threads, would_be)
        if device_col.measured is None:
            report("target", target=tgt.name, step=f"estimate for {profile.name}")
            device_col.estimate, why = _bench_estimate(profile, profiles, folder, manifest)
            if why:
                device_col.note = f"{device_col.note}; no estimate: {why}" if device_col.note else why
    dm = device_col.measured
    device_ms = None if dm is None else dm.stats.median_ms if dm.stats.median_ms is not None else dm.stats.mean_ms
    on_this_machine = profile.kind == "host" and not on_device_node
    residency = artifact_residency(folder, manifest)
    # the verdict: the gate registry over what this bench knows (the thresholds of the device profile)
    gates = judge_absolute(
        Evidence(
            precision=tgt.precision,
            folder=str(folder),
            lint=manifest["lint"],
            parity=p,
            parity_required=False,  # an artifact whose runtime is elsewhere has no parity yet: shown as "-"
            untrained=bool(manifest.get("untrained")),
            miou=miou,
            profile_miou_floor=profile.miou_floor,
            int8_budget=(manifest.get("quantization") or {}).get("mixed_precision"),
            latency_ms=device_ms,
            budget_ms=profile.budget_ms,
            latency_device=None if on_this_machine else profile.name,
            residency=residency,
            profile_residency=profile.accelerators,
        )
    )
    reasons = [g.reason() for g in gates if g.failed]
    if not runs_here and host_m is None:
        device_col.note = device_col.note or f"mIoU and latency need {tgt.runtime.removeprefix('needs ')}"
    return TargetResult(
        target=tgt.name,
        model=manifest["model"],
        size=f"{h}x{w}",
        status="failed_check" if reasons else "passed",
        reasons=reasons,
        artifact=artifact,
        parity=parity,
        miou=miou,
        miou_images=miou_images if miou is not None else None,
        host=host_m,
        device=device_col,
        residency=residency,
    )


def _custom_classes(spec) -> dict:
    """A user model's "custom" class names and colours for the report (a built-in dataset's are its own)."""
    if spec.name in DATASETS:
        return {}
    return {"classes": list(spec.classes), "palette": [list(c) for c in spec.palette]}


def _example_predictions(folder: Path, data: Path, split: str, count: int, threads: int) -> list[dict]:
    from edgeseg.backends import load_artifact
    from edgeseg.data.datasets import list_split, read_label

    art = load_artifact(folder, threads)
    if art.manifest["dataset"] not in DATASETS:  # a user model's "custom" label set: no labels to show beside
        return []
    spec = DATASETS[art.manifest["dataset"]]
    out = []
    samples = list_split(data, split)
    # spread over the split: consecutive video frames (CamVid) would show the same street three times
    picks = sorted({round(i * (len(samples) - 1) / max(count - 1, 1)) for i in range(min(count, len(samples)))})
    for sample in [samples[i] for i in picks]:
        image = read_image(sample.image)
        labels = predict_label_map(art.run, image, plan_for(image, None, art.input_size), art.outputs_labels)
        label = read_label(sample.label)
        out.append(
            {
                "name": sample.stem,
                "image": image,
                "label": colorize(np.where(label < spec.num_classes, label, 0).astype(np.uint8), spec)
                * (label < spec.num_classes)[..., None].astype(np.uint8),
                "prediction": colorize(labels.to(torch.uint8).numpy(), spec),
            }
        )
    return out


def _examples_of(report, data: Path, split: str, count: int, threads: int) -> tuple[list[dict], str]:
    """Example predictions of the recommended artifact (else the fp32 reference) on ``count`` images."""
    from edgeseg.bench.decide import reference_row
    from edgeseg.bench.report import row_label

    rec = report.recommendation
    named = several_models_in(report.results)
    runnable = [r for r in report.results if r.miou is not None and r.artifact is not None]
    pick = next((r for r in runnable if rec is not None and row_label(r, named) == rec.target), None)
    why = "the recommended artifact"
    if pick is None:
        pick, why = reference_row(runnable), "the reference"
    if pick is None or count <= 0:
        return [], ""
    shown = _example_predictions(Path(pick.artifact.folder), data, split, count, threads)
    note = f"{row_label(pick, named)} ({why}) on {len(shown)} {split} images spread over the split: " + ", ".join(
        e["name"] for e in shown
    )
    return shown, note


def several_models_in(results) -> bool:
    return len({(r.model, r.size) for r in results if r.model}) > 1


def bench(
    device: str,
    model: str | None = None,
    dataset: str | None = None,
    weights: str | None = None,
    targets: list[str] | None = None,
    artifacts: list[Path] | None = None,
    data: Path = SAMPLE_DATA,
    split: str = "val",
    limit: int | None = None,
    size: str | None = None,
    profiles: Path | None = None,
    out: Path = Path("artifacts"),
    report_dir: Path | None = None,
    calib_data: Path | None = None,
    parity_images: int = 20,
    threads: int = 2,
    plan=None,
    remote: RemoteOptions | None = None,
    examples: int = 3,
    command: str | None = None,
    progress: Progress | None = None,
    notice=None,
) -> dict:
    """With neither ``model`` nor ``artifacts``: the artifacts under ``out`` that suit the device (its targets, or
    ``targets``), or if there are none, ``DEFAULT_MODEL`` exported to them. INT8 targets without calibration data
    are skipped, saying so. Then: export what is missing (artifact cache), then for each target: status, size,
    parity, mIoU on ``data`` with
    the artifact itself, latency measured here (``threads`` pinned, warm-up, runs until the median is stable) and
    on the profile's device when it can be reached (SSH: trtexec or edgeseg's runner; adb: benchmark_model).
    A device that cannot be reached is marked "not measured", with the command that would measure it. Writes
    bench.json, bench.md and report.html to ``report_dir``; returns the report and the paths."""
    import datetime
    import importlib.util

    from edgeseg import __version__
    from edgeseg.backends import get_target
    from edgeseg.bench.host import machine_info
    from edgeseg.bench.profiles import get_profile
    from edgeseg.bench.report import (
        BenchReport,
        DataInfo,
        ModelInfo,
        TimingInfo,
        refuse_foreign_reports,
        write_reports,
    )
    from edgeseg.bench.stats import TimingPlan

    if importlib.util.find_spec("matplotlib") is None:
        raise EdgesegError("bench writes report.html with matplotlib plots: pip install 'edgeseg[bench]'")
    plan = plan or TimingPlan()
    profile = get_profile(device, profiles)
    reach = (remote or RemoteOptions()).apply(profile.reach)
    profile = profile.model_copy(update={"reach": reach})
    say = notice or (lambda text: None)
    output_folder(out, "--artifacts-dir")
    if report_dir is not None:
        output_folder(report_dir, "--report")
        refuse_foreign_reports(report_dir)  # before any timing, not after it
    if not model and not artifacts:
        wanted = targets or profile.targets
        for name in wanted:
            get_target(name)
        artifacts = suitable_artifacts(Path(out), wanted, say)
        if artifacts:
            say(f"benching the {len(artifacts)} artifact(s) under {out} for {', '.join(wanted)}")
        else:
            model = DEFAULT_MODEL
            say(f"no artifacts for {profile.name} under {out}: exporting {model} to {', '.join(wanted)}")
    entries = _bench_entries(model, dataset, weights, targets if model else None, artifacts, profile)
    data = Path(data)
    list_split(data, split)  # a bad --data fails here, with its one-line reason, before any export
    if threads < 1:
        raise EdgesegError(f"--threads {threads}: use 1 or more")
    at_least(limit, 1, "--limit")
    at_least(parity_images, 1, "--parity-images")
    if size:
        from edgeseg.data.transforms import check_input_size

        check_input_size(parse_size(size))  # a bad --size is the user's error, not each target's failure
    loaded = load_model(model, dataset, weights, notice) if model else None
    if calib_data is None and (data / "train" / "images").is_dir():
        calib_data = data
    parity_data = data if (data / "val" / "images").is_dir() else None
    host = machine_info(threads)
    report = progress or (lambda *a, **k: None)
    report("start", total=len(entries))

    conn = DeviceConnection(profile, reach)
    results, miou_images, probe = [], None, None
    try:
        for entry in entries:
            tgt = get_target(entry["target"])
            report("target", target=tgt.name, step="export")
            manifest, folder = entry["manifest"], entry["folder"]
            if manifest is None and tgt.precision == "int8" and calib_data is None:
                results.append(
                    skipped_target_result(
                        tgt.name, profile.name, "needs --calib-data (or EDGESEG_CALIB_DATA) to calibrate INT8"
                    )
                )
                report("advance")
                continue
            if manifest is None:
                try:
                    manifest = export(
                        loaded.name,
                        loaded.dataset,
                        loaded.weights.tag if loaded.weights.tag else weights,
                        tgt.name,
                        size,
                        out,
                        parity_data=parity_data,
                        parity_images=parity_images,
                        calib_data=calib_data,
                    )
                except Exception as exc:  # an exporter crash is this target's result, not the end of the bench
                    reraise_interrupt(exc)
                    results.append(failed_target_result(tgt.name, profile.name, failure_reason(exc)))
                    report("advance")
                    continue
                folder = Path(manifest["folder"])
            miou = acc = None
            # mIoU needs trained weights and labels of the model's classes (a user model's "custom" set has none)
            if artifact_runs_here(tgt.name) and not manifest.get("untrained") and manifest["dataset"] in DATASETS:
                report("target", target=tgt.name, step="mIoU")
                ev = evaluate(
                    None, None, None, data, split, limit=limit, threads=threads, artifact=folder, per_image=True
                )
                miou, miou_images = ev["miou"], ev["images"]
                acc = accuracy(ev["scores"], DATASETS[manifest["dataset"]].classes)
            if artifact_runs_here(tgt.name) and manifest.get("cached", True):
                # a parity this run did not measure (a given artifact, a cache hit) is re-checked on one image
                report("target", target=tgt.name, step="parity re-check")
                if probe is None:
                    probe = read_image(list_split(data, split)[0].image)
                manifest = {**manifest, "parity": recheck_parity(folder, manifest, probe, threads)}
            results.append(
                bench_artifact(
                    folder,
                    manifest,
                    profile,
                    conn,
                    miou=miou,
                    miou_images=miou_images,
                    plan=plan,
                    threads=threads,
                    profiles=profiles,
                    measure_here=True,
                    progress=report,
                )
            )
            results[-1].accuracy = acc
            report("advance")
    finally:
        conn.close()

    compare_with_reference(results, several_models_in(results))
    examples_list, examples_note = [], ""
    first_manifest = next((e["manifest"] for e in entries if e["manifest"]), None)
    if loaded is not None:
        model_info = ModelInfo(
            name=loaded.name, dataset=loaded.dataset, weights=loaded.weights_info(), **_custom_classes(loaded.spec)
        )
    elif first_manifest is not None:
        from edgeseg.models.user import manifest_spec

        custom = {} if first_manifest["dataset"] in DATASETS else _custom_classes(manifest_spec(first_manifest))
        model_info = ModelInfo(
            name=first_manifest["model"],
            dataset=first_manifest["dataset"],
            weights=first_manifest["weights"],
            **custom,
        )
    else:
        model_info = None
    bench_report = BenchReport(
        edgeseg=__version__,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        command=command,
        device=device_info(profile),
        model=model_info,
        data=DataInfo(path=str(data), split=split, images=miou_images),
        host=host,
        timing=TimingInfo.of(plan, threads),
        results=results,
    )
    bench_report.warnings = load_warnings(bench_report)
    bench_report.recommendation = recommend(bench_report)
    examples_list, examples_note = _examples_of(bench_report, data, split, examples, threads)
    name = model_info.name if model_info else "artifacts"
    folder_out = Path(report_dir) if report_dir else Path("bench") / f"{name}-{profile.name}"
    paths = write_reports(folder_out, bench_report, examples_list, examples_note)
    return {"report": bench_report, "paths": paths}
