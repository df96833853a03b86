"""The ``edgeseg`` command line (typer + rich). Each command parses arguments, calls one function of
``edgeseg.commands`` and draws its result; user errors (``EdgesegError``) print one line and exit 2, without a
traceback."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from edgeseg.bench.device import RemoteOptions
from edgeseg.commands import bench as bench_cmd
from edgeseg.commands import check as check_cmd
from edgeseg.commands import estimate as estimate_cmd
from edgeseg.commands import evaluate as evaluate_cmd
from edgeseg.commands import export as export_cmd
from edgeseg.commands import sweep as sweep_cmd
from edgeseg.commands import weights as weights_cmd
from edgeseg.errors import EdgesegError
from edgeseg.io import atomic_write_bytes
from edgeseg.paths import SAMPLE_DATA

app = typer.Typer(
    help="edgeseg: attention segmentation models from PyTorch to edge devices, with measured parity, mIoU and latency.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
weights_app = typer.Typer(help="Shipped weights: list and publish.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")

# Piped output (CI logs, `| tee`) gets rich's 80-column default, which truncates model names in tables; a log is
# read later, so give it room. A terminal keeps its own width.
_PIPE_WIDTH = None if sys.stdout.isatty() else 160
console = Console(width=_PIPE_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def user_errors(fn):
    """Turn an EdgesegError into ``error: ...`` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgesegError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


class _Bar:
    """A rich progress bar driven by command events ("start", "advance"); it appears only once work starts, so
    an input error before that prints its one line and nothing else."""

    def __init__(self, description: str):
        self.description, self.progress, self.task = description, None, None

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, kind: str, **fields) -> None:
        if kind == "start":
            if "fit" in fields:
                err_console.print(f"input: {fields['fit']}")
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err_console,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=fields.get("total"))
        elif kind == "advance" and self.task is not None:
            self.progress.advance(self.task)


@contextlib.contextmanager
def _progress_line(key: str, label: str):
    """A status line that follows the command's ``progress(kind, **fields)`` events of kind ``key`` (a bench
    target, a check row), started at the first event and stopped on the way out."""
    status = None

    def on_event(kind: str, **f):
        nonlocal status
        if kind == key:
            if status is None:
                status = console.status("")
                status.start()
            status.update(f"{label} {f[key]}: {f['step']}")

    try:
        yield on_event
    finally:
        if status is not None:
            status.stop()


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2) + "\n").encode())


ModelOpt = typer.Option(..., "--model", "-m", help="Model name, e.g. efficientvit-b0 (see `edgeseg models`).")
DatasetOpt = typer.Option(None, "--dataset", "-d", help="Head/label set: camvid (default), cityscapes, ade20k.")
WeightsOpt = typer.Option(None, "--weights", "-w", help="A .pt state dict, or a shipped tag such as 'camvid'.")
FitOpt = typer.Option("pad", "--fit", help="Make H, W multiples of 32: 'pad' (exact, default) or 'resize'.")
SizeOpt = typer.Option(None, "--size", help="Network input HxW (multiples of 32); default: the image rounded up.")
UpsampleOpt = typer.Option(
    "matmul",
    "--upsample",
    help="Head upsampling: matmul (exact bicubic as two matmuls, default for export), conv (exact bicubic as "
    "pad + depthwise convolution), resize (bicubic Resize op), bilinear (approximation).",
)


@app.command()
@user_errors
def models(
    size: str | None = typer.Option(None, "--size", help="Count MACs at HxW instead of each dataset's default input."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the table as JSON."),
):
    """List registered models: dataset heads, classes, params, GMACs, shipped weights."""
    rows = evaluate_cmd.models_table(size)
    table = Table(title="edgeseg models")
    for col in ("model", "dataset", "classes", "params M", "input", "GMACs", "weights"):
        table.add_column(col, justify="right" if col in ("classes", "params M", "GMACs") else "left", no_wrap=True)
    for r in rows:
        table.add_row(
            r["model"],
            r["dataset"],
            str(r["classes"]),
            f"{r['params_m']:.3f}",
            r["input"],
            f"{r['gmacs']:.2f}",
            r["weights"] or "-",
        )
    console.print(table)
    if json_out:
        _write_json(json_out, {"models": rows})


def _metrics_table(report: dict) -> Table:
    table = Table(
        title=f"{report['model']} ({report.get('target', 'reference')}, {report['runtime']}) on "
        f"{report['data']} [{report['split']}], "
        f"{report['images']} images"
    )
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for name, iou in report["iou"].items():
        table.add_row(name, "-" if iou is None else f"{100 * iou:.2f}")
    table.add_section()
    table.add_row("[bold]mIoU", f"[bold]{100 * report['miou']:.2f}")
    table.add_row("pixel accuracy", f"{100 * report['pixel_accuracy']:.2f}")
    return table


ArtifactOpt = typer.Option(
    None,
    "--artifact",
    "-a",
    help="An artifact folder from `edgeseg export` (instead of --model/--weights), run with its runtime here.",
)
OptModelOpt = typer.Option(None, "--model", "-m", help="Model name, e.g. efficientvit-b0 (see `edgeseg models`).")


@app.command("eval")
@user_errors
def eval_cmd(
    model: str | None = OptModelOpt,
    artifact: Path | None = ArtifactOpt,
    dataset: str | None = DatasetOpt,
    weights: str | None = WeightsOpt,
    data: Path = typer.Option(
        SAMPLE_DATA,
        "--data",
        help="Folder with SPLIT/images and SPLIT/labels (default: the bundled CamVid sample).",
    ),
    split: str = typer.Option("val", "--split"),
    fit: str = FitOpt,
    size: str | None = SizeOpt,
    limit: int | None = typer.Option(None, "--limit", help="Only the first N images."),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON."),
    upsample: str | None = typer.Option(
        None,
        "--upsample",
        help="Evaluate with a deploy head upsampling (matmul | conv | resize | bilinear), not the reference model.",
    ),
):
    """mIoU, pixel accuracy and per-class IoU on a labelled split."""
    with _Bar("eval") as bar:
        report = evaluate_cmd.evaluate(
            model,
            dataset,
            weights,
            data,
            split,
            fit,
            size,
            limit,
            threads,
            progress=bar,
            upsample=upsample,
            artifact=artifact,
        )
    console.print(_metrics_table(report))
    console.print(
        f"mIoU {100 * report['miou']:.2f}  pixel accuracy {100 * report['pixel_accuracy']:.2f}  "
        f"({report['images']} images, {report['seconds']:.1f} s)"
    )
    if json_out:
        _write_json(json_out, report)


@app.command()
@user_errors
def predict(
    model: str | None = OptModelOpt,
    artifact: Path | None = ArtifactOpt,
    dataset: str | None = DatasetOpt,
    weights: str | None = WeightsOpt,
    images: Path = typer.Option(..., "--images", help="Folder of .jpg/.png images."),
    out: Path = typer.Option(..., "--out", help="Output folder for label PNGs."),
    overlay: bool = typer.Option(False, "--overlay", help="Also write colour overlays to OUT/overlay."),
    fit: str = FitOpt,
    size: str | None = SizeOpt,
):
    """Write one 8-bit class-index PNG per image (same stem, same size), optionally colour overlays."""
    with _Bar("predict") as bar:
        written = evaluate_cmd.predict(
            model, dataset, weights, images, out, overlay, fit, size, progress=bar, artifact=artifact
        )
    console.print(
        f"wrote {len(written)} label map(s) to {out}" + (f" and overlays to {out / 'overlay'}" if overlay else "")
    )


def _parse_hw(text: str, what: str) -> tuple[int, int]:
    from edgeseg.data.transforms import parse_size

    try:
        return parse_size(text)
    except EdgesegError as exc:
        raise EdgesegError(f"{what}: {exc}") from None


@app.command()
@user_errors
def train(
    model: str = ModelOpt,
    dataset: str = typer.Option("camvid", "--dataset", "-d"),
    data: Path = typer.Option(..., "--data", help="Folder with train/ and val/ (images/ + labels/)."),
    out: Path = typer.Option(..., "--out", help="Run folder: last.pt, best.pt, train.json."),
    epochs: int = typer.Option(150, "--epochs"),
    batch_size: int = typer.Option(8, "--batch-size"),
    crop: str = typer.Option("320x320", "--crop", help="Random crop HxW (multiple of 32)."),
    lr: float = typer.Option(2e-3, "--lr"),
    weight_decay: float = typer.Option(0.05, "--weight-decay"),
    warmup_epochs: float = typer.Option(3.0, "--warmup-epochs", help="Linear LR warm-up length (short runs: < 1)."),
    loss: str = typer.Option("wce", "--loss", help="ce | wce (class-weighted CE) | ohem"),
    eval_every: int = typer.Option(5, "--eval-every"),
    seed: int = typer.Option(0, "--seed"),
    threads: int | None = typer.Option(None, "--threads"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after N steps (smoke runs)."),
    limit_train: int | None = typer.Option(None, "--limit-train", help="Use only the first N train images."),
    limit_val: int | None = typer.Option(None, "--limit-val", help="Use only the first N val images."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt."),
):
    """Train a model (CPU, or CUDA when present); best and last checkpoints and train.json in OUT."""
    from edgeseg.train.trainer import TrainConfig

    cfg = TrainConfig(
        model=model,
        dataset=dataset,
        data=str(data),
        out=str(out),
        epochs=epochs,
        batch_size=batch_size,
        crop=_parse_hw(crop, "--crop"),
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        loss=loss,
        eval_every=eval_every,
        seed=seed,
        threads=threads,
        max_steps=max_steps,
        limit_train=limit_train,
        limit_val=limit_val,
    )
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "epoch {task.fields[epoch]} loss {task.fields[loss]:.4f} lr {task.fields[lr]:.2e} "
            "{task.fields[ips]:.1f} img/s best mIoU {task.fields[best]}"
        ),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    )
    state = {"task": None}

    def report(kind: str, **f):
        if kind == "start":
            err_console.print(f"training {model} on {f['images']} images, device {f['device']}")
            progress.start()  # only now: an input error before this prints just its one line
            state["task"] = progress.add_task(
                "train", total=f["total_steps"], completed=f["done_steps"], epoch=0, loss=0.0, lr=0.0, ips=0.0, best="-"
            )
        elif kind == "step":
            progress.update(
                state["task"], completed=f["step"], epoch=f["epoch"], loss=f["loss"], lr=f["lr"], ips=f["ips"]
            )
        elif kind == "eval":
            progress.update(state["task"], best=f"{100 * f['best']:.2f}")
            progress.console.print(f"epoch {f['epoch']}: val mIoU {100 * f['miou']:.2f} (best {100 * f['best']:.2f})")

    try:
        result = evaluate_cmd.train(cfg, progress=report, resume=resume)
    finally:
        progress.stop()
    console.print(
        f"best val mIoU {100 * result.best_miou:.2f} at epoch {result.best_epoch}; checkpoints in {result.out}"
    )


@app.command()
@user_errors
def targets():
    """The target registry: format, precision, file, runtime here, extra, lint rules, rewrites."""
    from edgeseg.targets import TARGETS

    table = Table(title="edgeseg targets")
    for col in ("target", "format", "precision", "suffix", "runs here with", "extra", "rules", "exporter"):
        table.add_column(col)
    for t in TARGETS.values():
        table.add_row(
            t.name,
            t.format,
            t.precision,
            t.suffix,
            t.runtime,
            escape(f"edgeseg[{t.extra}]"),
            t.rules,
            "yes" if t.available else f"not yet ({t.planned})",
        )
    console.print(table)


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


CalibDataOpt = typer.Option(
    None, "--calib-data", help="INT8: folder with train/images and train/labels (e.g. ../shared/data/camvid)."
)
CalibSizeOpt = typer.Option(64, "--calib-size", help="INT8: number of calibration images (class-balanced).")
CalibMethodOpt = typer.Option("percentile", "--calib-method", help="INT8: percentile (default) | minmax | entropy.")
MaxDropOpt = typer.Option(
    "0.5",
    "--max-miou-drop",
    help="INT8: mIoU points int8 may lose vs fp32 on a held-out train slice; ONNX, TensorRT and TFLite keep the "
    "fewest layers float that meet it (sensitivity analysis; Core ML is checked only). 'off' quantizes all the "
    "policy allows.",
)


def _parse_budget(text: str) -> float | None:
    if text.strip().lower() in ("off", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise EdgesegError(f"--max-miou-drop {text!r} is not a number: pass e.g. 0.5, or 'off'") from None
    if value < 0 or value != value:
        raise EdgesegError(f"--max-miou-drop must be >= 0 mIoU points (got {text})")
    return value


ExportSizeOpt = typer.Option(
    None, "--size", help="Static input HxW, multiple of 32 (default: the dataset's, 384x480 for CamVid)."
)
ArtifactsOutOpt = typer.Option(Path("artifacts"), "--out", help="Folder for artifact folders.")
ParityDataOpt = typer.Option(
    None, "--parity-data", help="Folder with val/images for parity (default: the bundled CamVid sample)."
)
ParityImagesOpt = typer.Option(20, "--parity-images", help="How many parity images.")
ForceOpt = typer.Option(False, "--force", help="Rebuild even when the cache has this artifact.")


@app.command()
@user_errors
def export(
    model: str = ModelOpt,
    target: str = typer.Option(..., "--target", "-t", help="See `edgeseg targets`, e.g. onnx-fp32."),
    dataset: str | None = DatasetOpt,
    weights: str | None = WeightsOpt,
    size: str | None = ExportSizeOpt,
    out: Path = ArtifactsOutOpt,
    with_argmax: bool = typer.Option(False, "--with-argmax", help="Upsample + argmax in the graph: int32 labels."),
    opset: int = typer.Option(18, "--opset"),
    parity_data: Path | None = ParityDataOpt,
    parity_images: int = ParityImagesOpt,
    force: bool = ForceOpt,
    upsample: str = UpsampleOpt,
    calib_data: Path | None = CalibDataOpt,
    calib_size: int = CalibSizeOpt,
    calib_method: str = CalibMethodOpt,
    max_miou_drop: str = MaxDropOpt,
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
            progress=lambda msg: status.update(f"exporting {model} -> {target}: {msg}"),
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
        if mp:
            table.add_row(
                "held-out mIoU",
                f"{mp['miou_final']:.2f} vs fp32 {mp['miou_fp32']:.2f} (drop {mp['drop_final']:.2f}, budget "
                f"{mp['budget']}) on {mp['holdout_images']} train images not calibrated on",
            )
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
    table.add_row("export time", f"{m['export_seconds']:.1f} s")
    console.print(table)
    if not lint["clean"]:
        err_console.print(f"lint failed: see {m['folder']}/lint.json or `edgeseg lint {m['folder']}`")
        raise typer.Exit(1)


@app.command()
@user_errors
def quantize(
    model: str = ModelOpt,
    target: str = typer.Option("onnx-int8", "--target", "-t", help="An INT8 target (see `edgeseg targets`)."),
    calib_data: Path = typer.Option(
        ..., "--calib-data", help="Folder with train/images and train/labels (e.g. ../shared/data/camvid)."
    ),
    calib_size: int = CalibSizeOpt,
    calib_method: str = CalibMethodOpt,
    dataset: str | None = DatasetOpt,
    weights: str | None = WeightsOpt,
    size: str | None = ExportSizeOpt,
    out: Path = ArtifactsOutOpt,
    parity_data: Path | None = ParityDataOpt,
    parity_images: int = ParityImagesOpt,
    force: bool = ForceOpt,
    max_miou_drop: str = MaxDropOpt,
):
    """INT8 export with calibration on real images (the same as `edgeseg export --target X-int8`)."""
    budget = _parse_budget(max_miou_drop)
    with console.status(f"quantizing {model} -> {target}") as status:
        m = export_cmd.quantize(
            model,
            dataset,
            weights,
            target,
            calib_data,
            calib_size,
            calib_method,
            size=size,
            out=out,
            parity_data=parity_data,
            parity_images=parity_images,
            force=force,
            max_miou_drop=budget,
            progress=lambda msg: status.update(f"quantizing {model} -> {target}: {msg}"),
        )
    _print_export_summary(m)


@app.command()
@user_errors
def lint(
    artifact: Path = typer.Argument(..., help="An .onnx file or an artifact folder."),
    target: str | None = typer.Option(
        None, "--target", "-t", help="Rule set of this target (default: the artifact's own)."
    ),
    json_out: Path | None = typer.Option(None, "--json"),
):
    """Check an exported graph against a backend's conformance rules; exit 1 on errors."""
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
    if json_out:
        _write_json(json_out, report)
    if report["errors"]:
        raise typer.Exit(1)


@app.command()
@user_errors
def profile(
    artifact: Path = typer.Argument(..., help="An artifact folder written by `edgeseg export` (or its model file)."),
    threads: int = typer.Option(2, "--threads", help="Intra-op threads, as bench uses them."),
    runs: int = typer.Option(20, "--runs", help="Timed runs; each kernel's time is its mean over them."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed runs first."),
    top: int = typer.Option(15, "--top", help="Kernels to list."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full profile as JSON."),
):
    """Where an artifact's time goes here: top kernels, share per op type, and what falls off the fast path."""
    p = export_cmd.profile(artifact, threads=threads, runs=runs, warmup=warmup)
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
    if json_out:
        _write_json(json_out, p)


@app.command()
@user_errors
def devices(
    profiles: Path | None = typer.Option(None, "--profiles", help="Also read <name>.yaml device profiles from DIR."),
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


def _split_targets(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


@app.command()
@user_errors
def bench(
    device: str = typer.Option(..., "--device", "-D", help="A device profile or alias (see `edgeseg devices`)."),
    model: str | None = OptModelOpt,
    weights: str | None = WeightsOpt,
    dataset: str | None = DatasetOpt,
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
    split: str = typer.Option("val", "--split"),
    limit: int | None = typer.Option(None, "--limit", help="mIoU on the first N images only."),
    size: str | None = ExportSizeOpt,
    profiles: Path | None = typer.Option(None, "--profiles", help="Also read <name>.yaml device profiles from DIR."),
    out: Path = ArtifactsOutOpt,
    report: Path | None = typer.Option(
        None, "--report", help="Folder for bench.json, bench.md, report.html (default bench/<model>-<device>)."
    ),
    calib_data: Path | None = typer.Option(
        None,
        "--calib-data",
        help="INT8 calibration data (train/images + train/labels); default: --data if it has train/.",
    ),
    parity_images: int = ParityImagesOpt,
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
):
    """Export what is missing, then per target: status, size, parity, mIoU, latency here and on the device."""
    from edgeseg.bench.report import STATUS_TEXT, device_cell, latency_cell, mean_std_cell
    from edgeseg.bench.stats import TimingPlan

    try:
        plan = TimingPlan(warmup=warmup, min_runs=runs, max_runs=max(max_runs, runs), max_seconds=max_seconds)
    except ValueError:
        raise EdgesegError(f"--warmup {warmup} --runs {runs}: use warm-up >= 0 and runs >= 1") from None
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
        )
    r = result["report"]
    name = r.device.name
    table = Table(title=f"{r.model.name if r.model else 'artifacts'} on {name} ({r.device.title})")
    cols = ("target", "status", "MB", "parity", "mIoU", "here: median/p90/p99 ms", "mean ± std", "N (warm)", "FPS")
    for col in cols + (f"on {name}",):
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
    paths = result["paths"]
    console.print(f"wrote {paths['json']}, {paths['md']}, {paths['html']}", highlight=False)


class _SweepDisplay:
    """The matrix while it runs: one row per artifact job (export -> quantize -> mIoU), a column per device, each
    cell the job's state. On a terminal it is a live table; in a log, one line per job event."""

    def __init__(self):
        self.live, self.rows, self.devices, self.cells = None, [], [], {}

    def _table(self) -> Table:
        table = Table(title="edgeseg sweep", title_justify="left")
        for col in ["artifact", "export + mIoU", *self.devices]:
            table.add_column(col, overflow="fold")
        for label in self.rows:
            table.add_row(label, *(self.cells.get((label, c), "") for c in ["export", *self.devices]))
        return table

    def __call__(self, kind: str, **f) -> None:
        from rich.live import Live

        if kind == "start":
            self.rows, self.devices = f["artifacts"], f["devices"]
            self.cells = {(label, device): "-" for label, device in f["cells"]}
            if console.is_terminal:
                self.live = Live(self._table(), console=console, refresh_per_second=4, transient=True)
                self.live.start()
            return
        if kind != "job":
            return
        column = f.get("device") or "export"
        text = f["status"] + (f" ({f['node']})" if f.get("node") and f["status"] == "done" else "")
        self.cells[(f["label"], column)] = text
        if self.live is not None:
            self.live.update(self._table())
        else:
            reason = f": {f['reason']}" if f.get("reason") else ""
            console.print(f"sweep: {f['label']} [{column}] {text}{reason}", highlight=False, markup=False)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


@app.command()
@user_errors
def sweep(
    matrix: Path = typer.Option(..., "--matrix", help="The sweep matrix YAML (see examples/sweep.yaml)."),
    out: Path = typer.Option(Path("sweep"), "--out", help="Folder for the cache, artifacts and reports."),
    cluster: str | None = typer.Option(
        None,
        "--cluster",
        help="Run on a Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: in this process).",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an unfinished sweep in --out."),
):
    """Run a models x targets x devices x sizes matrix as cached jobs: export, quantize, mIoU, then bench."""
    display = _SweepDisplay()
    try:
        result = sweep_cmd.sweep(
            matrix,
            out,
            cluster=cluster,
            resume=resume,
            command="edgeseg " + " ".join(sys.argv[1:]) if sys.argv[1:] else None,
            progress=display,
        )
    finally:
        display.close()
    from edgeseg.sweep.report import row_cells, table_head

    table = result["table"]
    view = Table(title=f"sweep {matrix}", title_justify="left")
    for col in table_head(table):
        view.add_column(col, overflow="fold")
    for row in table["rows"]:
        view.add_row(*(escape(c) for c in row_cells(table, row)))
    console.print(view)
    jobs = result["jobs"].values()
    cached = sum(j["status"] == "cached" for j in jobs)
    console.print(
        f"{len(result['jobs'])} jobs, {cached} from the cache, {result['failed']} failed. Latency cells are "
        "measured medians; '~N ms estimate' is computed (roofline), not measured.",
        highlight=False,
    )
    for j in jobs:
        if j["status"] == "failed":
            where = f" on {j['device']}" if j.get("device") else ""
            console.print(f"failed: {j['label']}{where}: {j.get('reason')}", highlight=False, markup=False)
    paths = result["paths"]
    console.print(f"wrote {paths['html']}, {paths['md']} and one bench report per device in {out}", highlight=False)
    if result["failed"]:
        raise typer.Exit(1)


@app.command()
@user_errors
def check(
    config: Path = typer.Option(Path("edgeseg.yaml"), "--config", "-c", help="The check config (see examples/)."),
    baseline: Path | None = typer.Option(
        None, "--baseline", "-b", help="Baseline JSON (default: baseline.json beside the config)."
    ),
    update_baseline: bool = typer.Option(
        False, "--update-baseline", help="Record this run as the baseline (and copy its artifacts beside it)."
    ),
    markdown: Path = typer.Option(Path("check.md"), "--markdown", help="Markdown summary (a pull-request comment)."),
    junit: Path | None = typer.Option(None, "--junit", help="JUnit XML: one test case per row (CI test reports)."),
    json_out: Path | None = typer.Option(None, "--json", help="Full report as JSON."),
):
    """CI regression gate: export (cached) or take artifacts, evaluate, compare with the baseline; exit 1 on any
    failing row."""
    from edgeseg import check as chk

    with _progress_line("row", "check") as on_event:
        result = check_cmd.check(config, baseline, update_baseline, progress=on_event)
    r = result["report"]
    table = Table(title=f"edgeseg check {r.config} (baseline {r.baseline})")
    table.add_column("row", no_wrap=True)
    for col in ("status", "parity", "mIoU (PyTorch)", "latency vs baseline", "size", "lint"):
        table.add_column(col, overflow="fold")
    for row in r.rows:
        miou = "-" if row.miou is None else f"{100 * row.miou:.2f} ({100 * row.miou_reference:.2f})"
        table.add_row(
            row.row_id,
            "[green]pass[/]" if row.passed else "[bold red]FAIL[/]",
            *(escape(chk.cell(row.gates, g)) for g in ("parity",)),
            miou,
            *(escape(chk.cell(row.gates, g)) for g in ("latency", "size", "lint")),
        )
    console.print(table)
    for row in r.rows:
        if not row.passed:
            console.print(f"[bold red]FAIL[/] {escape(row.row_id)}: {escape(row.cause())}", highlight=False)
    console.print(f"mIoU on {r.data} ({r.images} images). Latency: {chk.LATENCY_NOTE}.", highlight=False)
    atomic_write_bytes(markdown, chk.markdown(r).encode())
    written = [str(markdown)]
    if junit:
        atomic_write_bytes(junit, chk.junit_xml(r))
        written.append(str(junit))
    if json_out:
        _write_json(json_out, r.as_dict())
        written.append(str(json_out))
    if result["baseline_written"]:
        written.append(f"baseline {result['baseline_written']}")
    elif update_baseline:
        err_console.print("baseline not updated: rows fail their absolute gates (fix them, then record again)")
    console.print(f"wrote {', '.join(written)}", highlight=False)
    passed = sum(row.passed for row in r.rows)
    console.print(f"{passed}/{len(r.rows)} rows passed in {r.seconds:.0f} s", highlight=False)
    if not r.passed:
        raise typer.Exit(1)


@app.command()
@user_errors
def estimate(
    device: str = typer.Option(..., "--device", "-D", help="A device profile or alias (see `edgeseg devices`)."),
    model: str | None = OptModelOpt,
    dataset: str | None = DatasetOpt,
    target: str | None = typer.Option(None, "--target", "-t", help="Target, e.g. trt-fp16 (see `edgeseg targets`)."),
    size: str | None = typer.Option(None, "--size", help="Input HxW (default: the dataset's evaluation size)."),
    artifact: Path | None = typer.Option(None, "--artifact", "-a", help="Estimate this artifact folder instead."),
    upsample: str = UpsampleOpt,
    profiles: Path | None = typer.Option(None, "--profiles", help="Also read <name>.yaml device profiles from DIR."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the estimate as JSON."),
):
    """Estimate (not measure) latency on a device from the exported graph and the device's calibrated roofline."""
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


@app.command()
@user_errors
def calibrate(
    device: str = typer.Option(..., "--device", "-D", help="A device profile or alias (see `edgeseg devices`)."),
    sources: list[str] = typer.Option(
        ...,
        "--from",
        help="bench.json measured on the device (repeatable), 'published' (the shipped EfficientViT-Seg README "
        "figures) or a figures YAML of that shape.",
    ),
    profiles: Path | None = typer.Option(None, "--profiles", help="Also read <name>.yaml device profiles from DIR."),
    out: Path = typer.Option(Path("profiles"), "--out", help="Folder for the calibrated copy <device>.yaml."),
):
    """Fit a device's efficiency factors to measurements; write a profile copy with them (pass it via --profiles)."""
    result = estimate_cmd.calibrate_device(device, sources, profiles=profiles, out=out)
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


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


@weights_app.command("list")
@user_errors
def weights_list(
    markdown: bool = typer.Option(False, "--markdown", help="Print the README's markdown table instead."),
):
    """Shipped weights with their recorded val mIoU (and rare-class IoU), training time and hardware."""
    if markdown:
        typer.echo(weights_cmd.shipped_weights_markdown())
        return
    table = Table(title="shipped weights (val mIoU measured on the published fp16 file)")
    for col in ("model", "tag", "val mIoU", *weights_cmd.RARE_CAMVID_CLASSES, "epochs", "train min", "file", "sha256"):
        table.add_column(col)
    for r in weights_cmd.shipped_weights_rows():
        table.add_row(
            r["model"],
            r["tag"],
            _pct(r["val_miou"], 2),
            *(_pct(r["rare_iou"].get(c)) for c in weights_cmd.RARE_CAMVID_CLASSES),
            str(r["epochs"]),
            f"{r['train_minutes']:.0f}",
            r["file"],
            r["sha256"][:12],
        )
    console.print(table)


@weights_app.command("publish")
@user_errors
def weights_publish(
    run: Path = typer.Option(..., "--run", help="A finished training run folder (best.pt, train.json)."),
    tag: str = typer.Option(..., "--tag", help="Registry tag, e.g. camvid."),
    command: str | None = typer.Option(None, "--command", help="The training command to record."),
    hardware: str | None = typer.Option(None, "--hardware", help="Where it was trained, to record."),
):
    """Ship a run's best checkpoint as fp16 weights and record its (re-measured) val mIoU and sha256."""
    record = weights_cmd.publish_weights(run, tag, command, hardware)
    console.print(
        f"published {record['file']}: val mIoU {100 * record['val_miou']:.2f}, sha256 {record['sha256'][:12]}"
    )


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
