"""check: the CI regression gate. Plans the config's rows, exports (cached) or takes the given artifacts,
evaluates each row here and compares it with the baseline; the config schema, baseline file, gates and renderers
are ``edgeseg.check``'s."""

from __future__ import annotations

import time
from pathlib import Path

from edgeseg.artifact import read_manifest
from edgeseg.check_history import attach_history, history_path
from edgeseg.commands import Progress
from edgeseg.commands.bench import failure_reason
from edgeseg.commands.evaluate import LoadedModel, load_model
from edgeseg.commands.export import export_with, lint
from edgeseg.commands.recheck import recheck_parity
from edgeseg.data.datasets import DATASETS, load_split
from edgeseg.data.transforms import parse_size
from edgeseg.errors import EdgesegError
from edgeseg.eval.evaluate import evaluate_arrays, torch_predictor
from edgeseg.eval.stats import ImageScores, load_state, paired_difference
from edgeseg.gates import Evidence, judge_absolute
from edgeseg.io import output_folder, relative_to_file
from edgeseg.models.registry import default_input, resolve_model_name
from edgeseg.paths import SAMPLE_DATA


def _row_plan(config, config_path: Path) -> list[dict]:
    """Every row the config asks for (model x target x device, and given artifacts x device), checked up front:
    unknown models, targets, devices and missing artifact folders fail before anything is exported."""
    from edgeseg.bench.profiles import get_profile
    from edgeseg.check import thresholds_for
    from edgeseg.data.transforms import check_input_size
    from edgeseg.models.user import config_model_options, user_model_options

    plan = []
    for i, m in enumerate(config.models):
        where = f"check config {config_path}: models.{i}"
        options = config_model_options(m.name, m.num_classes, m.classes, where, Path(config_path).resolve().parent)
        with user_model_options(options):  # registered with them: later steps name the registered model
            name, dataset = resolve_model_name(m.name, m.dataset)
        size = check_input_size(parse_size(m.size)) if m.size else default_input(name, dataset)
        th = thresholds_for(config, m.thresholds, f"models.{i}", config_path)
        for target in m.targets:
            for device in m.devices:
                plan.append(
                    {
                        "entry": m,
                        "model": name,
                        "dataset": dataset,
                        "size": size,
                        "target": target,
                        "profile": get_profile(device),
                        "thresholds": th,
                        "folder": None,
                    }
                )
    for i, a in enumerate(config.artifacts):
        folder = relative_to_file(a.path, config_path)  # paths in a config: beside the config
        try:
            folder, mf = read_manifest(folder)
        except EdgesegError as exc:
            raise EdgesegError(f"check config {config_path}: field 'artifacts.{i}.path': {exc}") from None
        th = thresholds_for(config, a.thresholds, f"artifacts.{i}", config_path)
        shape = mf["input"]["shape"]
        for device in a.devices:
            plan.append(
                {
                    "entry": None,
                    "model": mf["model"],
                    "dataset": mf["dataset"],
                    "size": (int(shape[2]), int(shape[3])),
                    "target": mf["target"],
                    "profile": get_profile(device),
                    "thresholds": th,
                    "folder": folder,
                    # the PyTorch reference: the shipped tag where it was one (paths differ between machines)
                    "weights": mf["weights"].get("tag") or mf["weights"]["path"],
                }
            )
    return plan


DEFAULT_CONFIG = Path("edgeseg.yaml")


def artifacts_config(artifacts_dir: Path):
    """The config ``edgeseg check`` runs without one: every artifact folder under ``artifacts_dir`` on this
    machine (host), judged with the default thresholds on the bundled sample."""
    from edgeseg.check import ArtifactEntry, CheckConfig

    output_folder(artifacts_dir, "--artifacts-dir")
    folders = [
        p.resolve()
        for p in sorted(Path(artifacts_dir).iterdir() if Path(artifacts_dir).is_dir() else [])
        if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file()
    ]
    if not folders:
        raise EdgesegError(
            f"no artifacts under {artifacts_dir}/ to check: export one first (edgeseg export --model efficientvit-b0 "
            "--target onnx-fp32), or pass --config edgeseg.yaml (see examples/edgeseg.yaml)"
        )
    for folder in folders:  # a broken artifact is named here, not as a field of a config the user never wrote
        try:
            read_manifest(folder)
        except EdgesegError as exc:
            raise EdgesegError(f"{exc}; or remove {folder} from {artifacts_dir}/") from None
    return CheckConfig(artifacts=[ArtifactEntry(path=str(f)) for f in folders])


def check(
    config_path: Path | None,
    baseline_path: Path | None = None,
    update_baseline: bool = False,
    progress: Progress | None = None,
    artifacts_dir: Path = Path("artifacts"),
    history: bool = True,
    flag_after: int | None = None,
) -> dict:
    """Run the regression gate of ``config_path`` (see ``edgeseg.check``): export (cached) or take the given
    artifacts, evaluate each row here, compare with the baseline and, with ``update_baseline``, record the new
    baseline (only when every row passes its absolute gates). Returns the report and the baseline written.

    ``config_path`` None: ``edgeseg.yaml`` here if it exists, else every artifact under ``artifacts_dir`` with the
    absolute gates; gates that need a baseline then say there is none yet instead of failing.

    ``history``: append the run's figures to ``<baseline>.history.jsonl`` beside the baseline and report the
    change since the baseline, the trend over the last runs and rows whose accuracy gate failed ``flag_after``
    (default: the config's ``history.flag_after``, 3) runs in a row."""
    from edgeseg import __version__
    from edgeseg import check as chk
    from edgeseg.backends import get_target, load_artifact
    from edgeseg.bench.host import machine_info

    if config_path is None and DEFAULT_CONFIG.is_file():
        config_path = DEFAULT_CONFIG
    without_config = config_path is None
    if without_config:
        config_path = Path(artifacts_dir) / "edgeseg.yaml"  # paths resolve beside the artifacts; never read
        config = artifacts_config(Path(artifacts_dir))
        baseline_path = Path(baseline_path) if baseline_path else Path("baseline.json")
    else:
        config_path = Path(config_path)
        config = chk.load_config(config_path)
        baseline_path = Path(baseline_path) if baseline_path else config_path.with_name("baseline.json")
    # without a config a missing baseline is the normal first run: its gates say so instead of failing
    baseline = chk.read_baseline(baseline_path, update_baseline or (without_config and not baseline_path.is_file()))
    data = SAMPLE_DATA if config.data == "sample" else relative_to_file(config.data, config_path)
    calib_data = relative_to_file(config.calib_data, config_path)
    out = relative_to_file(config.out, config_path)
    rows = _row_plan(config, config_path)
    ids = [f"{r['model']}/{r['target']}/{r['size'][0]}x{r['size'][1]}/{r['profile'].name}" for r in rows]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise EdgesegError(f"check config {config_path}: row {dupes[0]} is listed twice (one row per id)")
    _, images, labels = load_split(data, config.split)
    if config.limit:
        images, labels = images[: config.limit], labels[: config.limit]
    report = progress or (lambda *a, **k: None)
    report("start", total=len(rows))

    t_start = time.perf_counter()
    models: dict[tuple, LoadedModel] = {}
    references: dict[tuple, float] = {}
    exports: dict[tuple, dict | str] = {}  # manifest, or why the export failed
    evaluations: dict[str, tuple] = {}  # folder -> (miou, runtime, why not run)
    ratios: dict[tuple, object] = {}
    loads: dict[tuple, dict] = {}  # the machine's load when each ratio was timed
    counts: dict = {}  # folder or reference key -> per-image counts (paired comparison)
    rechecked: dict[str, dict] = {}  # folder -> the parity to judge (the manifest's, or its re-measurement)
    results = []
    for row, row_id in zip(rows, ids):
        t0 = time.perf_counter()
        tgt, th, profile = get_target(row["target"]), row["thresholds"], row["profile"]
        weights = row["entry"].weights if row["entry"] else row["weights"]
        report("row", row=row_id, step="export")
        if row["folder"] is None:
            e = row["entry"]
            key = (row["model"], row["dataset"], weights, row["target"], row["size"], e.export.model_dump_json())
            if key not in exports:
                try:
                    exports[key] = export_with(
                        e.export,
                        row["model"],
                        row["dataset"],
                        weights,
                        row["target"],
                        f"{row['size'][0]}x{row['size'][1]}",
                        out,
                        parity_data=data,
                        parity_images=config.parity_images,
                        calib_data=calib_data,
                    )
                except EdgesegError as exc:
                    exports[key] = f"export failed: {exc}"
                except Exception as exc:  # an exporter crash fails this row, not the whole check
                    exports[key] = failure_reason(exc)
            manifest = exports[key]
            if isinstance(manifest, str):
                results.append(
                    chk.RowResult(
                        row_id,
                        row["model"],
                        row["target"],
                        profile.name,
                        {},
                        None,
                        None,
                        None,
                        None,
                        {},
                        [chk.Gate("export", "failed", manifest)],
                        time.perf_counter() - t0,
                    )
                )
                report("advance")
                continue
            folder = Path(manifest["folder"])
        else:
            folder, manifest = read_manifest(row["folder"])
        lint_report = lint(folder)
        artifact = {
            "folder": str(folder),
            "file": manifest["file"],
            "sha256": manifest["sha256"],
            "bytes": manifest["bytes"],
            "cached": bool(manifest.get("cached", True)),
        }
        report("row", row=row_id, step="mIoU")
        untrained = bool(manifest.get("untrained"))
        if str(folder) not in evaluations:
            try:
                art = load_artifact(folder, config.threads)
            except EdgesegError as exc:
                evaluations[str(folder)] = (None, None, str(exc))
            else:
                miou_here = None  # untrained weights: it runs here, but its mIoU would mean nothing
                if not untrained and row["dataset"] in DATASETS:  # a user model's "custom" labels: nothing to score
                    spec, fixed = DATASETS[row["dataset"]], art.input_size
                    counts[str(folder)] = ImageScores(spec.num_classes, spec.ignore_index, boundary=False)
                    metrics = evaluate_arrays(
                        art.run, images, labels, spec, None, fixed, None, art.outputs_labels, counts[str(folder)]
                    )
                    miou_here = metrics.miou
                evaluations[str(folder)] = (miou_here, art.runtime, None)
        miou, runtime, why_not_run = evaluations[str(folder)]
        ref_key = (row["model"], row["dataset"], weights, row["size"])
        if why_not_run is None and not untrained and ref_key not in references:
            report("row", row=row_id, step="PyTorch reference")
            mkey = (row["model"], row["dataset"], weights)
            if mkey not in models:
                models[mkey] = load_model(row["model"], row["dataset"], weights)
            loaded = models[mkey]
            counts[ref_key] = ImageScores(loaded.spec.num_classes, loaded.spec.ignore_index, boundary=False)
            ref = evaluate_arrays(
                torch_predictor(loaded.model), images, labels, loaded.spec, None, row["size"], scores=counts[ref_key]
            )
            references[ref_key] = ref.miou
        miou_ref = references.get(ref_key)
        vs_reference = None  # the paired comparison with the PyTorch reference on the same images
        if miou is not None and str(folder) in counts and ref_key in counts:
            d = paired_difference(counts[ref_key].iou_counts(), counts[str(folder)].iou_counts())
            vs_reference = {**d.as_dict(), "text": d.text()}
        p = manifest["parity"]
        if why_not_run is None and manifest.get("cached", True) and str(folder) not in rechecked:
            # parity this run did not measure (a given artifact, an export cache hit): re-checked on one image
            report("row", row=row_id, step="parity re-check")
            mkey = (row["model"], row["dataset"], weights)
            if mkey not in models:
                models[mkey] = load_model(row["model"], row["dataset"], weights)
            rechecked[str(folder)] = recheck_parity(folder, manifest, images[0], config.threads, models[mkey].model)
        p = rechecked.get(str(folder), p)
        parity = {
            "argmax_agreement": p["argmax_agreement"],
            "snr_db": chk.finite(p["snr_db"]),
            "images": p["images"],
            "runtime": p["runtime"],
        }
        gates = judge_absolute(
            Evidence(
                precision=tgt.precision,
                thresholds=th,
                folder=str(folder),
                lint=lint_report,
                parity=parity,
                why_not_run=why_not_run,
                untrained=untrained,
                miou=miou,
                miou_reference=miou_ref,
                profile_miou_floor=profile.miou_floor,
                int8_budget=(manifest.get("quantization") or {}).get("mixed_precision"),
                residency=lint_report.get("residency"),
                profile_residency=profile.accelerators,
            )
        )
        ratio = None
        entry = baseline.rows.get(row_id) if baseline else None
        base_folder = baseline.artifact_folder(row_id) if baseline else None
        wants_time = (
            not update_baseline
            and why_not_run is None
            and th.max_latency_ratio is not None
            and entry is not None
            and entry["artifact"]["sha256"] != artifact["sha256"]
            and base_folder is not None
        )
        if wants_time:
            report("row", row=row_id, step="latency vs baseline")
            pair = (str(folder), str(base_folder))
            if pair not in ratios:
                ratios[pair] = chk.latency_ratio(folder, base_folder, config.threads, config.timing)
                loads[pair] = load_state()
            ratio = ratios[pair]
        base_gates = chk.baseline_gates(
            th,
            row_id,
            artifact,
            baseline,
            update_baseline,
            ratio,
            device=profile.name if ratio is not None and profile.kind != "host" else None,
            why_not_run=why_not_run,
        )
        result = chk.RowResult(
            row_id,
            row["model"],
            row["target"],
            profile.name,
            artifact,
            runtime,
            miou,
            miou_ref,
            len(images) if miou is not None else None,
            parity,
            gates + base_gates,
            time.perf_counter() - t0,
            None
            if ratio is None
            else {
                "ratio": ratio.ratio,
                "spread": ratio.spread,
                "rounds": ratio.rounds,
                "current_median_ms": ratio.current_ms,
                "baseline_median_ms": ratio.baseline_ms,
                "runtime": ratio.runtime,
                "load": loads.get((str(folder), str(base_folder))),
                "note": "this run only, on this machine; not stored in the baseline",
            },
            vs_reference,
        )
        results.append(result)
        report("advance")

    written = None
    if update_baseline:
        absolute_failures = [r for r in results if not r.passed]
        if not absolute_failures:
            written = chk.write_baseline(baseline_path, results, __version__, config_path)
    check_report = chk.CheckReport(
        config=f"(no config: every artifact under {artifacts_dir})" if without_config else str(config_path),
        baseline=str(baseline_path),
        updated_baseline=written is not None,
        data=str(data),
        images=len(images),
        rows=results,
        seconds=time.perf_counter() - t_start,
        machine={**machine_info(config.threads), "load": load_state()},
    )
    if history and config.history.keep:
        options = config.history if flag_after is None else config.history.model_copy(update={"flag_after": flag_after})
        attach_history(check_report, baseline, history_path(baseline_path), options, __version__)
    return {"report": check_report, "baseline_written": written}
