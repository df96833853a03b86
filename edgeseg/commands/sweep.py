"""sweep: the models x targets x devices x sizes matrix as cached jobs (export -> quantize -> mIoU, then bench on
each device profile), in this process or on a Ray cluster; one bench report per device and an index."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from edgeseg.bench.device import DeviceConnection, device_info
from edgeseg.commands import Progress
from edgeseg.commands.bench import artifact_runs_here, bench_artifact, failed_target_result, failure_reason
from edgeseg.commands.evaluate import evaluate, load_model
from edgeseg.commands.export import export, export_code_hash
from edgeseg.data.datasets import list_split
from edgeseg.data.transforms import parse_size
from edgeseg.errors import EdgesegError
from edgeseg.models.registry import DEFAULT_INPUT
from edgeseg.paths import SAMPLE_DATA


def sweep_artifact_job(job, data: str, split: str, limit, calib_data, parity_images: int, threads: int, out=None):
    """Export one (model, weights, target, size), then its mIoU with the artifact's runtime. With ``out`` the
    artifact is written there (this process shares the sweep's folder); without, it is built in a temporary
    folder and returned as a tar archive with its sha256 (a Ray worker sends it through the object store)."""
    import shutil
    import tempfile

    from edgeseg.sweep.executors import job_origin
    from edgeseg.sweep.store import pack_artifact

    t0 = time.perf_counter()
    data = Path(data)
    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="edgeseg-sweep-"))
    # The same thread count wherever the job runs: float reductions (the PyTorch reference of int8 calibration and
    # the mixed-precision search) round differently with another count, and a Ray worker starts with 1 thread.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        manifest = export(
            job.model,
            job.dataset,
            job.weights,
            job.target,
            job.size,
            work,
            parity_data=data if (data / "val" / "images").is_dir() else None,
            parity_images=parity_images,
            calib_data=Path(calib_data) if calib_data else None,
        )
        folder = Path(manifest["folder"])
        miou = images = None
        if artifact_runs_here(job.target):
            ev = evaluate(None, None, None, data, split, limit=limit, threads=threads, artifact=folder)
            miou, images = ev["miou"], ev["images"]
            if manifest.get("cached"):  # the export cache's parity is the folder's claim: re-checked on one image
                from edgeseg.commands.recheck import recheck_parity
                from edgeseg.data.datasets import read_image

                probe = read_image(list_split(data, split)[0].image)
                manifest = {**manifest, "parity": recheck_parity(folder, manifest, probe, threads)}
        result = {
            "manifest": {k: v for k, v in manifest.items() if k != "folder"},
            "folder": folder.name,
            "miou": miou,
            "miou_images": images,
            "seconds": round(time.perf_counter() - t0, 2),
            **job_origin(),
        }
        if out is None:
            result["archive"], result["archive_sha256"] = pack_artifact(folder)
        return result
    finally:
        torch.set_num_threads(torch_threads)
        if out is None:
            shutil.rmtree(work, ignore_errors=True)


def sweep_bench_job(job, profile, profiles, entry: dict, folder, archive, plan, threads: int, on_device_node: bool):
    """Time one artifact for one device ``profile`` (``bench_artifact``). ``folder``: the artifact where this
    process can read it; else ``archive`` (bytes from the object store) is checked against its hash and unpacked
    here."""
    import shutil
    import tempfile

    from edgeseg.sweep.executors import job_origin
    from edgeseg.sweep.store import unpack_artifact

    t0 = time.perf_counter()
    work = None
    try:
        if folder is None:
            work = Path(tempfile.mkdtemp(prefix="edgeseg-sweep-bench-"))
            folder = unpack_artifact(archive, entry["archive_sha256"], entry["manifest"], work)
        conn = DeviceConnection(profile, profile.reach)
        try:
            result = bench_artifact(
                Path(folder),
                entry["manifest"],
                profile,
                conn,
                miou=entry["miou"],
                miou_images=entry["miou_images"],
                plan=plan,
                threads=threads,
                profiles=Path(profiles) if profiles else None,
                measure_here=False,
                on_device_node=on_device_node,
            )
        finally:
            conn.close()
        return {
            "result": result.model_dump(mode="json"),
            "seconds": round(time.perf_counter() - t0, 2),
            **job_origin(),
        }
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def revalidate_cached_artifact(job, entry: dict, store, data: Path, matrix, references: dict | None = None) -> dict:
    """A cache hit's claims checked by content before they are judged: the artifact folder was verified by the
    store (manifest, paths, sha256); its mIoU is measured again here (the expensive part of the job, the export,
    stays cached) and its parity re-checked on one image. A claim that does not hold is replaced (and the entry
    rewritten), so a forged figure never reaches a gate."""
    from edgeseg.commands.recheck import recheck_parity
    from edgeseg.data.datasets import read_image

    if not artifact_runs_here(job.target):
        return entry
    folder = store.artifacts / entry["folder"]
    ev = evaluate(None, None, None, data, matrix.split, limit=matrix.limit, threads=matrix.threads, artifact=folder)
    probe = read_image(list_split(data, matrix.split)[0].image)
    references = {} if references is None else references
    ref_key = (job.model, job.dataset, job.weights)
    if ref_key not in references:  # one PyTorch reference per model and weights, however many targets
        references[ref_key] = load_model(job.model, job.dataset, job.weights).model
    parity = recheck_parity(folder, entry["manifest"], probe, matrix.threads, references[ref_key])
    recorded = entry.get("miou")
    same_miou = (ev["miou"] is None and recorded is None) or (
        isinstance(recorded, float) and ev["miou"] is not None and abs(ev["miou"] - recorded) <= 1e-6
    )
    if same_miou and ev["images"] == entry.get("miou_images") and not (parity or {}).get("rechecked"):
        return entry
    fresh = {**entry, "miou": ev["miou"], "miou_images": ev["images"]}
    fresh["manifest"] = {**entry["manifest"], "parity": parity}
    store.put_artifact(job.key, fresh)  # the claim did not hold: the cache now says what was measured
    return fresh


def bench_row_matches(cached: dict, entry: dict) -> bool:
    """Whether a cached bench row belongs to the (re-validated) artifact entry: same model file sha256, the same
    mIoU and parity agreement; a forged or stale row is not served."""
    try:
        row, manifest = cached["result"], entry["manifest"]
        return (
            row["artifact"]["sha256"] == manifest["sha256"]
            and row.get("miou") == entry.get("miou")
            and (row.get("parity") or {}).get("argmax_agreement")
            == (manifest.get("parity") or {}).get("argmax_agreement")
        )
    except (KeyError, TypeError):
        return False


def _sweep_jobs(matrix, base: Path, profiles_dir, data: Path, calib: Path | None, plan):
    """Expand the matrix into artifact jobs and bench jobs (with cache keys); every user error is raised here,
    before anything runs: unknown model, weights, device or target, a bad size."""
    from edgeseg.backends import backend_for, get_target
    from edgeseg.bench.profiles import get_profile
    from edgeseg.data.transforms import check_input_size
    from edgeseg.models.user import config_model_options, user_model_options
    from edgeseg.sweep.matrix import ArtifactJob, BenchJob, check_devices_have_targets, job_key, tree_identity

    profiles = {}
    for name in matrix.devices:
        profile = get_profile(name, profiles_dir)
        if profile.name in profiles:
            raise EdgesegError(f"sweep matrix: devices list {profile.name} twice (once as {name!r})")
        if matrix.miou_floor is not None:
            profile = profile.model_copy(update={"miou_floor": matrix.miou_floor})
        profiles[profile.name] = profile
    check_devices_have_targets(matrix, {n: p.targets for n, p in profiles.items()})
    for t in matrix.targets:
        get_target(t)
    data_id = tree_identity(data, matrix.split)
    calib_id = (str(calib), tree_identity(calib, "train")) if calib else None
    artifacts, benches = [], []
    for i, entry in enumerate(matrix.models):
        weights = entry.weights
        if weights and (weights.endswith((".pt", ".pth", ".bin")) or "/" in weights):
            weights = str((base / Path(weights).expanduser()).resolve())
        options = config_model_options(entry.name, entry.num_classes, entry.classes, f"sweep matrix: models.{i}", base)
        with user_model_options(options):  # registered with them: the jobs name the registered model
            loaded = load_model(entry.name, entry.dataset, weights)
        weights_sha = loaded.weights_sha256()
        for size in matrix.sizes:
            h, w = check_input_size(parse_size(size)) if size else DEFAULT_INPUT[loaded.dataset]
            for target in matrix.targets:
                tgt = get_target(target)
                wanted = [d for d, p in profiles.items() if not matrix.device_targets_only or target in p.targets]
                if not wanted:
                    continue
                key = job_key(
                    kind="artifact",
                    model=loaded.name,
                    dataset=loaded.dataset,
                    weights=weights_sha,
                    target=target,
                    size=f"{h}x{w}",
                    data=(str(data), matrix.split, data_id, matrix.limit),
                    calib=calib_id if tgt.precision == "int8" else None,
                    code=export_code_hash(loaded.name, backend_for(tgt.format)),
                    parity_images=matrix.parity_images,
                )
                job = ArtifactJob(loaded.name, loaded.dataset, weights, target, f"{h}x{w}", key)
                artifacts.append(job)
                for device in wanted:
                    bkey = job_key(
                        kind="bench",
                        artifact=key,
                        device=profiles[device].model_dump(mode="json"),
                        plan=dataclasses.asdict(plan),
                        threads=matrix.threads,
                    )
                    benches.append(BenchJob(job, device, bkey))
    return artifacts, benches, profiles


def sweep(
    matrix_path: Path,
    out: Path,
    cluster: str | None = None,
    resume: bool = False,
    command: str | None = None,
    progress: Progress | None = None,
) -> dict:
    """Run the sweep matrix: each artifact job (export -> quantize -> mIoU) once, then each bench job (latency
    on a device profile). Jobs in the cache are not redone; a failed job is recorded with its reason and the
    others go on. ``cluster`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) runs them on Ray: artifact jobs on any
    worker, bench jobs on the node advertising the device (else in this process, after every artifact job has
    finished, so its timings are not disturbed). Writes one bench.json / bench.md / report.html per device and
    an index (report.html, sweep.md) to ``out``."""
    import datetime

    from edgeseg import __version__
    from edgeseg.bench.decide import load_warnings, recommend
    from edgeseg.bench.host import machine_info
    from edgeseg.bench.report import BenchReport, DataInfo, ModelInfo, TargetResult, TimingInfo, write_reports
    from edgeseg.bench.stats import TimingPlan
    from edgeseg.io import relative_to_file
    from edgeseg.sweep.executors import open_executor
    from edgeseg.sweep.matrix import load_matrix, matrix_digest
    from edgeseg.sweep.report import sweep_table, write_index
    from edgeseg.sweep.store import SweepStore, pack_artifact

    matrix, base = load_matrix(matrix_path)
    profiles_dir = relative_to_file(matrix.profiles, matrix_path)
    data = SAMPLE_DATA if matrix.data in (None, "sample") else relative_to_file(matrix.data, matrix_path)
    list_split(data, matrix.split)
    calib = relative_to_file(matrix.calib_data, matrix_path) or (data if (data / "train" / "images").is_dir() else None)
    t = matrix.timing
    if t.max_runs < t.runs:
        raise EdgesegError(f"sweep matrix: timing.max_runs {t.max_runs} < timing.runs {t.runs}")
    plan = TimingPlan(warmup=t.warmup, min_runs=t.runs, max_runs=t.max_runs, max_seconds=t.max_seconds)
    artifacts, benches, profiles = _sweep_jobs(matrix, base, profiles_dir, data, calib, plan)
    digest = matrix_digest(matrix)
    store = SweepStore(Path(out))
    store.check_can_start(digest, resume)

    # a cluster is joined before anything is written, so a wrong address leaves no unfinished sweep behind
    executor = open_executor(cluster) if cluster is not None else None
    report = progress or (lambda *a, **k: None)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    jobs: dict[str, dict] = {}
    state = {"matrix": str(matrix_path), "matrix_digest": digest, "status": "running", "started": started}
    state.update(cluster=cluster or "local", jobs=jobs)
    store.write_state(state)
    report(
        "start",
        artifacts=[a.label for a in artifacts],
        devices=list(profiles),
        cells=[(b.artifact.label, b.device) for b in benches],
    )

    # sweep.json is rewritten when a job starts or ends, not for every job queued: queueing N jobs one write each
    # would rewrite an O(N) file N times. ``flush=False`` records are written with the next flushed one.
    def record(key: str, flush: bool = True, **fields) -> None:
        jobs[key] = {**jobs.get(key, {}), **fields}
        if flush:
            store.write_state(state)
        report("job", **jobs[key])

    if executor is not None:
        state["executor"] = executor.description

    def ex():
        nonlocal executor
        if executor is None:
            executor = open_executor(cluster)
            state["executor"] = executor.description
        return executor

    args = (str(data), matrix.split, matrix.limit, str(calib) if calib else None, matrix.parity_images, matrix.threads)
    entries: dict[str, dict] = {}  # artifact key -> result (or {"failed": reason})
    rows: dict[str, dict] = {}  # bench key -> bench.json row
    pending: dict = {}
    driver_queue: list = []
    archives: dict[str, object] = {}
    by_artifact: dict[str, list] = {}
    references: dict[tuple, object] = {}  # PyTorch references of cache hits' parity re-checks
    for b in benches:
        by_artifact.setdefault(b.artifact.key, []).append(b)

    def schedule_benches(a) -> None:
        entry = entries[a.key]
        for b in by_artifact[a.key]:
            base_fields = {"type": "bench", "label": a.label, "device": b.device}
            cached = store.cached_bench(b.key)
            if cached is not None and not bench_row_matches(cached, entry):
                cached = None  # a row that is not this artifact's (sha256, mIoU, parity): the bench job runs again
            if cached is not None:
                rows[b.key] = cached["result"]
                record(
                    b.key, False, **base_fields, status="cached", node=cached.get("node"), seconds=cached.get("seconds")
                )
            elif "failed" in entry:
                rows[b.key] = failed_target_result(a.target, b.device, entry["failed"], a.model, a.size).model_dump(
                    mode="json"
                )
                record(b.key, False, **base_fields, status="skipped", reason="its artifact failed")
            elif cluster is not None and b.device in ex().device_resources():
                if a.key not in archives:
                    archive, sha = pack_artifact(store.artifacts / entry["folder"])
                    entry = {**entry, "archive_sha256": sha}
                    entries[a.key] = entry
                    archives[a.key] = ex().put(archive)
                on_node = profiles[b.device].reach.method != "adb"  # an adb hub reaches its phones; others are it
                handle = ex().submit(
                    sweep_bench_job,
                    b,
                    profiles[b.device],
                    str(profiles_dir) if profiles_dir else None,
                    entry,
                    None,
                    archives[a.key],
                    plan,
                    matrix.threads,
                    on_node,
                    device=b.device,
                )
                pending[handle] = ("bench", b)
                record(b.key, False, **base_fields, status="queued", where=f"node advertising {b.device}")
            else:
                driver_queue.append(b)
                record(b.key, False, **base_fields, status="queued", where="this process")

    def finish_artifact(a, result, error) -> None:
        fields = {"type": "artifact", "label": a.label}
        if error is None and "archive" in result:
            try:
                folder = store.receive(result.pop("archive"), result["archive_sha256"], result["manifest"])
                result["folder"] = folder.name
            except EdgesegError as exc:  # corrupted in transit: this job failed, the others go on
                error = exc
        if error is not None:
            entries[a.key] = {"failed": failure_reason(error)}
            record(a.key, **fields, status="failed", reason=entries[a.key]["failed"])
        else:
            entries[a.key] = result
            store.put_artifact(a.key, result)
            record(a.key, **fields, status="done", node=result["node"], seconds=result["seconds"])
        schedule_benches(a)

    def finish_bench(b, result, error) -> None:
        fields = {"type": "bench", "label": b.artifact.label, "device": b.device}
        a = b.artifact
        if error is not None:
            reason = failure_reason(error, "bench failed")
            rows[b.key] = failed_target_result(a.target, b.device, reason, a.model, a.size).model_dump(mode="json")
            record(b.key, **fields, status="failed", reason=reason)
            return
        row = result["result"]
        row["artifact"]["folder"] = str(store.artifacts / entries[a.key]["folder"])  # the driver's copy
        rows[b.key] = row
        store.put_bench(b.key, {**result, "result": row})
        record(b.key, **fields, status="done", node=result["node"], seconds=result["seconds"])

    try:
        for a in artifacts:
            cached = store.cached_artifact(a.key)
            if cached is not None:
                cached = revalidate_cached_artifact(a, cached, store, data, matrix, references)
                entries[a.key] = cached
                record(
                    a.key,
                    False,
                    type="artifact",
                    label=a.label,
                    status="cached",
                    node=cached.get("node"),
                    seconds=cached.get("seconds"),
                )
                schedule_benches(a)
            else:
                local_out = str(store.artifacts) if cluster is None else None
                handle = ex().submit(sweep_artifact_job, a, *args, out=local_out)
                pending[handle] = ("artifact", a)
                refused = store.refused.get(a.key)
                extra = {"cache_refused": refused} if refused else {}
                record(a.key, False, type="artifact", label=a.label, status="queued", **extra)
        store.write_state(state)  # every job queued: one write
        while pending or driver_queue:
            exporting = any(kind == "artifact" for kind, _ in pending.values())
            if driver_queue and not exporting:
                b = driver_queue.pop(0)
                record(b.key, status="running", where="this process")
                entry = entries[b.artifact.key]
                try:
                    result = sweep_bench_job(
                        b,
                        profiles[b.device],
                        str(profiles_dir) if profiles_dir else None,
                        entry,
                        store.artifacts / entry["folder"],
                        None,
                        plan,
                        matrix.threads,
                        False,
                    )
                    finish_bench(b, result, None)
                except Exception as exc:  # one bench job's failure is its row, not the end of the sweep
                    finish_bench(b, None, exc)
                continue
            handle, result, error = ex().wait(list(pending))
            kind, job = pending.pop(handle)
            if kind == "artifact":
                finish_artifact(job, result, error)
            else:
                finish_bench(job, result, error)
    except BaseException as exc:  # sweep.json never stays "running" after this process stopped
        state.update(
            status="failed" if isinstance(exc, Exception) else "interrupted",
            reason=failure_reason(exc, "sweep stopped"),
        )
        store.write_state(state)
        raise
    finally:
        if executor is not None:
            executor.close()

    # one bench report per device, in matrix order, like `edgeseg bench` writes
    host = machine_info(matrix.threads)
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    single = matrix.models[0] if len(matrix.models) == 1 else None
    model_info = None
    if single is not None and artifacts:
        first = next((e for e in entries.values() if "manifest" in e), None)
        if first is not None:
            m = first["manifest"]
            model_info = ModelInfo(name=m["model"], dataset=m["dataset"], weights=m["weights"])
    images = next((e["miou_images"] for e in entries.values() if e.get("miou_images")), None)
    reports = {}
    for device, profile in profiles.items():
        results = [TargetResult.model_validate(rows[b.key]) for b in benches if b.device == device]
        bench_report = BenchReport(
            edgeseg=__version__,
            created=created,
            command=command,
            device=device_info(profile),
            model=model_info,
            data=DataInfo(path=str(data), split=matrix.split, images=images),
            host=host,
            timing=TimingInfo.of(plan, matrix.threads),
            results=results,
        )
        bench_report.warnings = load_warnings(bench_report)
        bench_report.recommendation = recommend(bench_report)  # per model and size: rows name them
        write_reports(Path(out) / device, bench_report, [], "")
        reports[device] = bench_report
    failed = sum(1 for j in jobs.values() if j["status"] == "failed")
    state.update(status="finished", finished=created, failed_jobs=failed)
    store.write_state(state)
    table = sweep_table(reports)
    paths = write_index(Path(out), reports, table, state)
    return {"reports": reports, "table": table, "jobs": jobs, "paths": paths, "failed": failed}
