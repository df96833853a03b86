"""estimate and fit-latency: latency estimates for devices that are not attached, from the graph a target would
get (``estimation_graph``) and the device profile's calibrated roofline; ``fit_latency`` fits a device's
efficiencies to bench.json measurements or published figures."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from edgeseg.artifact import read_manifest
from edgeseg.data.transforms import parse_size
from edgeseg.errors import EdgesegError
from edgeseg.export_request import EXPORT_DEFAULTS
from edgeseg.io import atomic_write_bytes, load_yaml_mapping, validation_problems
from edgeseg.models.registry import DEFAULT_INPUT, create_model, deploy_rewrites, resolve_model_name
from edgeseg.paths import PACKAGE_DIR

ESTIMATE_GRAPHS = Path("artifacts") / "estimate-graphs"
PUBLISHED_FIGURES = PACKAGE_DIR / "assets" / "published" / "efficientvit-seg.yaml"
# The published EfficientViT-Seg figures were measured on the official graph: the head's bicubic Resize op.
PUBLISHED_UPSAMPLE = "resize"


def estimation_graph(
    model: str,
    dataset: str | None,
    target: str,
    size: str | tuple[int, int],
    upsample: str = EXPORT_DEFAULTS.upsample,
    cache: Path = ESTIMATE_GRAPHS,
) -> tuple[Path, str]:
    """The ONNX graph ``target`` would get for ``model`` at ``size`` (its rewrites applied; random weights: only
    the structure matters), exported in fp32 and cached. Returns (path, description)."""
    import hashlib

    from edgeseg.backends import get_target
    from edgeseg.backends.onnx.export import export_onnx
    from edgeseg.data.transforms import check_input_size
    from edgeseg.rewrite import DeployWrapper, apply_rewrites

    tgt = get_target(target)
    name, dataset = resolve_model_name(model, dataset)
    if upsample.startswith("reference"):  # a manifest of a model whose head has no upsampling choice (LVT, ...)
        upsample = None
    h, w = check_input_size(parse_size(size) if isinstance(size, str) else tuple(size))
    rewrites = deploy_rewrites(name, tgt.format, tgt.precision, upsample)  # the rewrites export would apply
    from edgeseg import __version__

    key = hashlib.sha256(repr((rewrites, torch.__version__, __version__)).encode()).hexdigest()[:10]
    path = Path(cache) / f"{name}-{dataset}-{h}x{w}-{key}.onnx"
    desc = f"{name} ({dataset} head) {h}x{w}, rewrites {', '.join(rewrites)}; ONNX opset 18, structure only"
    identity = f"{name}/{dataset}/{h}x{w}/{key}"
    if path.is_file() and _cached_graph_holds(path, identity, (h, w)):
        return path, desc
    net, _ = create_model(name, dataset)
    deploy, _ = apply_rewrites(net, rewrites)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial.onnx")
    try:
        export_onnx(DeployWrapper(deploy).eval(), torch.zeros(1, 3, h, w), tmp, 18, "logits")
        _seal_graph(tmp, identity)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, desc


# A cached estimation graph is a file in the working directory, so it is not served on its name alone: edgeseg
# writes into its metadata what it is (model, head, size, rewrite key) and the sha256 of its graph, and serves it
# only when both still hold (a stray, renamed or edited file is rebuilt).
_GRAPH_ID, _GRAPH_SHA = "edgeseg.estimation_graph", "edgeseg.graph_sha256"


def _graph_digest(model) -> str:
    import hashlib

    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def _seal_graph(path: Path, identity: str) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in ((_GRAPH_ID, identity), (_GRAPH_SHA, _graph_digest(model))):
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))


def _cached_graph_holds(path: Path, identity: str, size: tuple[int, int]) -> bool:
    import onnx

    try:
        model = onnx.load(str(path))
        meta = {p.key: p.value for p in model.metadata_props}
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    except Exception:  # not ONNX, truncated, no input: rebuilt
        return False
    return meta.get(_GRAPH_ID) == identity and meta.get(_GRAPH_SHA) == _graph_digest(model) and dims == [1, 3, *size]


def graph_cost_for(target: str, onnx_path: Path, from_float: bool):
    """Kernels of ``onnx_path`` under the fusion rules of ``target``'s runtime; a float graph standing in for a
    lower-precision target takes that precision (int8: Conv/MatMul kernels, the attention core stays float)."""
    from edgeseg.backends import backend_for, get_target
    from edgeseg.estimate.graph import graph_cost

    tgt = get_target(target)
    backend = backend_for(tgt.format)
    if backend.fusion is None:
        raise EdgesegError(f"the latency estimator has no fusion rules for {tgt.format} targets")
    cost = graph_cost(onnx_path, backend.fusion)
    if from_float and tgt.precision == "int8":
        cost = cost.with_precision("int8", anchors_only=True, rest=backend.int8_float_rest)
    elif from_float and tgt.precision != "fp32":
        cost = cost.with_precision(tgt.precision)
    return cost


def _artifact_cost(folder: Path, manifest: dict, cache: Path = ESTIMATE_GRAPHS):
    """(cost, description) of an exported artifact: its own ONNX where it has one, else the estimation graph of
    the same model, target, size and upsampling."""
    folder = Path(folder)
    onnx_file = folder / "model.onnx"
    from edgeseg.backends import backend_for

    if backend_for(manifest["format"]).graph_is_onnx and onnx_file.is_file():
        return graph_cost_for(manifest["target"], onnx_file, from_float=False), f"{onnx_file} (the artifact's graph)"
    _, _, h, w = manifest["input"]["shape"]
    path, desc = estimation_graph(
        manifest["model"], manifest["dataset"], manifest["target"], (h, w), manifest.get("upsample", "conv"), cache
    )
    return graph_cost_for(manifest["target"], path, from_float=True), desc


def _estimator_data(profile, profiles: Path | None, target: str):
    """(estimator data with a calibration usable for ``target``, notes) or a one-line error."""
    from edgeseg.bench.profiles import get_profile

    hw = profile.estimator
    if hw is None:
        raise EdgesegError(
            f"device {profile.name} has no estimator data: add an `estimator:` section (peak_gflops, memory_gbps "
            "with their sources) to its profile"
        )
    notes = []
    if hw.calibration_for(target) is None and hw.borrow_calibration:
        lender = get_profile(hw.borrow_calibration, profiles).estimator
        if lender is not None and lender.calibration_for(target) is not None:
            hw = hw.model_copy(update={"calibrations": lender.calibrations})
            notes.append(
                f"efficiencies borrowed from {hw.borrow_calibration} (same architecture), peaks and bandwidth of "
                f"{profile.name}; not validated on {profile.name}"
            )
    found = hw.calibration_for(target)
    if found is None:
        raise EdgesegError(
            f"device {profile.name} has no calibration for {target}: run `edgeseg fit-latency --device {profile.name} "
            f"--from bench.json` (measurements of {target} there) and pass --profiles with the written folder"
        )
    if found[0] != target:
        notes.append(f"efficiencies fitted for {found[0]}, applied to {target}")
    return hw, notes


def estimate_latency(
    device: str,
    model: str | None = None,
    dataset: str | None = None,
    target: str | None = None,
    size: str | None = None,
    artifact: Path | None = None,
    upsample: str = EXPORT_DEFAULTS.upsample,
    profiles: Path | None = None,
    cache: Path = ESTIMATE_GRAPHS,
) -> dict:
    """The estimated latency (labelled "estimate") of a model or artifact on ``device``, from its graph and the
    device profile's calibrated roofline."""
    from edgeseg.backends import get_target
    from edgeseg.bench.profiles import get_profile
    from edgeseg.estimate.roofline import estimate

    profile = get_profile(device, profiles)
    if artifact is not None:
        if model or target:
            raise EdgesegError("pass either --artifact or --model/--target, not both")
        folder, manifest = read_manifest(Path(artifact))
        target = manifest["target"]
        hw, notes = _estimator_data(profile, profiles, target)
        cost, desc = _artifact_cost(folder, manifest, cache)
    else:
        if not model or not target:
            raise EdgesegError("estimate needs --model and --target (or --artifact FOLDER)")
        tgt = get_target(target)
        hw, notes = _estimator_data(profile, profiles, tgt.name)
        name, dataset = resolve_model_name(model, dataset)
        input_size = parse_size(size) if size else DEFAULT_INPUT[dataset]
        path, desc = estimation_graph(name, dataset, tgt.name, input_size, upsample, cache)
        cost = graph_cost_for(tgt.name, path, from_float=True)
    est = estimate(cost, hw, profile.name, target, get_target(target).precision, desc)
    est = est.model_copy(update={"notes": notes})
    return {"estimate": est, "cost": cost.as_dict()}


def published_points(profile, file: Path, cache: Path) -> tuple[dict[str, list], str, str]:
    from edgeseg.estimate.calibrate import Point
    from edgeseg.estimate.schema import PublishedFigures
    from edgeseg.io import load_yaml_schema

    data = load_yaml_schema(Path(file), PublishedFigures, "published-figures file", "source, devices")
    entry = data.devices.get(profile.name)
    if entry is None:
        raise EdgesegError(
            f"{file} has no figures for {profile.name} (it has: {', '.join(data.devices)}); fit from "
            "bench.json measured on the device instead"
        )
    target = entry.target
    points = []
    for fig in entry.figures:
        path, _ = estimation_graph(fig.model, entry.dataset, target, fig.size, PUBLISHED_UPSAMPLE, cache)
        points.append(Point(f"{fig.model} {fig.size} {target}", graph_cost_for(target, path, from_float=True), fig.ms))
    source = f"{data.source} ({entry.conditions}): {len(points)} figures"
    graph = (
        f"{target} graphs of the official head (bicubic Resize, as measured there), {entry.dataset} head, "
        "edgeseg's other rewrites; kernels fused as the runtime does"
    )
    return {target: points}, source, graph


def _bench_points(report_path: Path, profile, cache: Path) -> dict[str, list]:
    from pydantic import ValidationError

    from edgeseg.bench.report import BenchReport
    from edgeseg.estimate.calibrate import Point

    try:
        text = Path(report_path).read_text()
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise EdgesegError(f"--from {report_path}: not a readable JSON file ({exc})") from None
    try:
        report = BenchReport.model_validate(data)
    except ValidationError as exc:
        raise EdgesegError(f"--from {report_path}: not a bench.json ({validation_problems(exc)})") from None
    if report.device.name != profile.name:
        raise EdgesegError(
            f"--from {report_path} was measured for device {report.device.name}, not {profile.name}: run "
            f"`edgeseg fit-latency --device {report.device.name}`"
        )
    out: dict[str, list] = {}
    for r in report.results:
        m = r.device.measured or (r.host if report.device.kind == "host" else None)
        if m is None or r.artifact is None:
            continue
        ms = m.stats.median_ms if m.stats.median_ms is not None else m.stats.mean_ms
        folder = Path(r.artifact.folder)
        if not (folder / "manifest.json").is_file():
            raise EdgesegError(
                f"--from {report_path}: artifact folder {folder} is gone; the estimator needs its graph (re-export)"
            )
        folder, manifest = read_manifest(folder)
        cost, _ = _artifact_cost(folder, manifest, cache)
        h, w = manifest["input"]["shape"][2:]
        out.setdefault(r.target, []).append(Point(f"{manifest.get('model', folder.name)} {h}x{w} {r.target}", cost, ms))
    return out


def fit_latency(
    device: str,
    sources: list[str],
    profiles: Path | None = None,
    out: Path = Path("profiles"),
    cache: Path = ESTIMATE_GRAPHS,
) -> dict:
    """Fit ``device``'s efficiency factors to measurements: bench.json files measured there, and/or
    ``published`` (the shipped EfficientViT-Seg figures) or a figures YAML of that shape. Writes a copy of the
    profile with the calibrations (and their source and leave-one-out error) to ``out/<device>.yaml``."""
    import yaml

    from edgeseg.bench.profiles import DeviceProfile, get_profile, load_profiles
    from edgeseg.estimate.calibrate import calibrate as fit_calibration
    from edgeseg.estimate.schema import EstimatorData

    if not sources:
        raise EdgesegError("fit-latency needs --from: bench.json files measured on the device, or 'published'")
    profile = get_profile(device, profiles)
    if profile.estimator is None:
        raise EdgesegError(
            f"device {profile.name} has no estimator data: add an `estimator:` section (peak_gflops, memory_gbps "
            "with their sources) to its profile first"
        )
    points: dict[str, list] = {}
    described: list[str] = []
    graphs: dict[str, str] = {}
    for src in sources:
        if src == "published" or src.endswith((".yaml", ".yml")):
            file = PUBLISHED_FIGURES if src == "published" else Path(src)
            if not file.is_file():
                raise EdgesegError(f"--from {src}: no such file")
            got, text, graph = published_points(profile, file, cache)
            described.append(text)
            graphs.update({t: graph for t in got})
        else:
            if not Path(src).is_file():
                raise EdgesegError(f"--from {src}: no such file (pass bench.json files or 'published')")
            got = _bench_points(Path(src), profile, cache)
            graphs.update({t: f"{t} artifacts' own graphs, kernels fused as the runtime does" for t in got})
            if not got:
                raise EdgesegError(f"--from {src}: no latency measured on {profile.name} in it")
            described.append(f"bench {src}: {sum(len(v) for v in got.values())} measurements")
        for t, pts in got.items():
            points.setdefault(t, []).extend(pts)
    source = "; ".join(described)
    hw: EstimatorData = profile.estimator
    calibrations = dict(hw.calibrations)
    rows = {}
    for target, pts in points.items():
        cal, held = fit_calibration(pts, hw, source, graphs[target])
        calibrations[target] = cal
        rows[target] = [{"label": h.label, "measured_ms": h.measured_ms, "estimated_ms": h.estimated_ms} for h in held]
    _, path = load_profiles(profiles)[profile.name]
    data = load_yaml_mapping(Path(path), "device profile", "name, targets, reach, ...")  # to write an edited copy
    data["estimator"]["calibrations"] = {
        t: c.model_dump(mode="json", exclude_none=True) for t, c in calibrations.items()
    }
    DeviceProfile.model_validate(data)  # what is written loads back
    out = Path(out)
    target_file = out / f"{profile.name}.yaml"
    if target_file.resolve() == Path(path).resolve() and str(path).startswith(str(PACKAGE_DIR)):
        raise EdgesegError(f"--out {out}: that is edgeseg's shipped profile folder; write the copy elsewhere")
    header = f"# {profile.name}: copy of {path} with estimator calibrations written by `edgeseg fit-latency`\n"
    atomic_write_bytes(target_file, (header + yaml.safe_dump(data, sort_keys=False, width=110)).encode())
    return {"device": profile.name, "file": str(target_file), "calibrations": calibrations, "held_out": rows}
