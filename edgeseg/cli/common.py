"""What every CLI module shares: the consoles, the user-error wrapper, small parsers and formatters, and the
options several commands declare alike (one definition each: same names, help text and type; the default is the
command's parameter default)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from edgeseg.errors import EdgesegError, Terminated
from edgeseg.io import atomic_write_bytes, describe_os_error, writable_file

# Piped output (CI logs, `| tee`) gets rich's 80-column default, which truncates model names in tables; a log is
# read later, so give it room. A terminal keeps its own width.
_PIPE_WIDTH = None if sys.stdout.isatty() else 160
console = Console(width=_PIPE_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def user_errors(fn):
    """Turn a user error into one line on stderr: an EdgesegError, an OSError (a path that cannot be read or
    written: the path and the fix) or an image over the pixel limit exit 2; SIGINT exits 130 and SIGTERM 143 (both
    after ``staging`` and the atomic writers removed their unfinished files)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgesegError as exc:
            _error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            _error_line(describe_os_error(exc))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            _error_line("interrupted (SIGINT): stopped; unfinished outputs were removed")
            raise typer.Exit(130) from None
        except Terminated:
            _error_line("terminated (SIGTERM): stopped; unfinished outputs were removed")
            raise typer.Exit(143) from None
        except Exception as exc:
            if type(exc).__name__ != "DecompressionBombError":  # PIL's, for an image file it will not decode
                raise
            _error_line(f"{exc} (edgeseg refuses images this large)")
            raise typer.Exit(2) from None

    return wrapper


def _error_line(text: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(text)}", soft_wrap=True, highlight=False)


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


def deprecated_alias(app: typer.Typer, old: str, new: str, command) -> None:
    """Register ``edgeseg OLD`` as a hidden alias of ``command`` (``edgeseg NEW``): same options, and a one-line
    note on stderr pointing at the new name first."""

    @functools.wraps(command)
    def alias(*args, **kwargs):
        err_console.print(
            f"note: `edgeseg {old}` is deprecated and will be removed: use `edgeseg {new}`",
            style="dim",
            soft_wrap=True,
            highlight=False,
        )
        return command(*args, **kwargs)

    alias.__doc__ = f"Deprecated alias of `edgeseg {new}`."
    app.command(old, hidden=True)(alias)


def notice(text: str) -> None:
    """A one-line note on stderr (which shipped weights a command picked, what it skipped), kept out of stdout."""
    err_console.print(text, style="dim", soft_wrap=True, highlight=False)


def _write_json(path: Path, obj: dict) -> None:
    """A JSON report (``--json``), written atomically (``check_json_out`` checked the path)."""
    atomic_write_bytes(check_json_out(path), (json.dumps(obj, indent=2) + "\n").encode())


def check_json_out(path: Path | None) -> Path | None:
    """Check a ``--json`` path before the command works: a file path (not a folder, not under a file); an existing
    file is replaced only when it is a JSON object (an earlier report), never an input given by mistake."""
    if path is None:
        return None
    path = writable_file(Path(path), "--json")
    if path.is_file() and not _is_json_object(path):
        raise EdgesegError(f"--json {path} exists and is not a JSON report: pass a new .json path (it is not replaced)")
    if path.is_file() and _is_manifest(path):
        raise EdgesegError(f"--json {path} is an artifact's manifest: pass a new .json path (it is not replaced)")
    return path


def _is_manifest(path: Path) -> bool:
    """An artifact's manifest.json (a JSON object, but the artifact's identity, never a report to replace)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"target", "sha256", "file"} <= set(data)


def _is_json_object(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16).lstrip()
        return head.startswith(b"{") and isinstance(json.loads(path.read_text()), dict)
    except (OSError, ValueError):
        return False


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


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


def _parse_hw(text: str, what: str) -> tuple[int, int]:
    from edgeseg.data.transforms import parse_size

    try:
        return parse_size(text)
    except EdgesegError as exc:
        raise EdgesegError(f"{what}: {exc}") from None


def _split_targets(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


# ---------------------------------------------------------------------------------------------- shared options
# Annotated aliases: `model: ModelOpt` is required, `model: OptModelOpt = None` optional, the same --model both ways.

_model_option = typer.Option(
    "--model",
    "-m",
    help="Model name, e.g. efficientvit-b0 (see `edgeseg models`), or your own: PATH.py:NAME or package.module:NAME, "
    "NAME() returning an nn.Module from (1,3,H,W) images to (1,C,h,w) logits (this imports and runs that code).",
)
ModelOpt = Annotated[str, _model_option]
OptModelOpt = Annotated[str | None, _model_option]
NumClassesOpt = Annotated[
    int | None,
    typer.Option(
        "--num-classes",
        help="Your own model only: build it as NAME(num_classes=N); its output must then have N channels.",
    ),
]
ClassesOpt = Annotated[
    str | None,
    typer.Option(
        "--classes",
        help="Your own model only: the names of its classes, as a,b,c or a file (.txt, one name per line; .yaml, a "
        "list or {names, colors}); shown in legends and per-class IoU, recorded in the artifact's manifest.",
    ),
]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", "-d", help="Head/label set: camvid (default), cityscapes, ade20k.")
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        "-w",
        help="A .pt state dict, a shipped tag such as 'camvid' (default: the model's shipped weights for the "
        "dataset), or 'random' (seeded, untrained: graph, size, lint and latency; no mIoU).",
    ),
]
SplitOpt = Annotated[str, typer.Option("--split")]
UpsampleOpt = Annotated[
    str,
    typer.Option(
        "--upsample",
        help="Head upsampling: matmul (exact bicubic as two matmuls, default for export), conv (exact bicubic as "
        "pad + depthwise convolution), resize (bicubic Resize op), bilinear (approximation).",
    ),
]
ExportSizeOpt = Annotated[
    str | None,
    typer.Option("--size", help="Static input HxW, multiple of 32 (default: the dataset's, 384x480 for CamVid)."),
]
ArtifactsOutOpt = Annotated[Path, typer.Option("--out", help="Folder for artifact folders.")]
CalibDataOpt = Annotated[
    Path | None,
    typer.Option(
        "--calib-data",
        envvar="EDGESEG_CALIB_DATA",
        help="INT8: folder with train/images and train/labels (e.g. ../shared/data/camvid); default: the "
        "EDGESEG_CALIB_DATA environment variable.",
    ),
]
ParityImagesOpt = Annotated[int, typer.Option("--parity-images", help="How many parity images.")]
DeviceOpt = Annotated[str, typer.Option("--device", "-D", help="A device profile or alias (see `edgeseg devices`).")]
ProfilesOpt = Annotated[Path | None, typer.Option("--profiles", help="Also read <name>.yaml device profiles from DIR.")]
NoVerifyOpt = Annotated[
    bool,
    typer.Option(
        "--no-verify",
        help="Use artifacts whose model file no longer hashes to its manifest's sha256 (edited on purpose). The "
        "manifest's fields and paths are still checked.",
    ),
]


def artifact_checks(fn):
    """A command that reads artifacts and declares ``no_verify: NoVerifyOpt = False``: every artifact it reads
    (``edgeseg.artifact.read_manifest``, ``load_artifact``) has its model file's sha256 checked unless
    ``--no-verify`` is given. One switch for the whole command, not one argument threaded through every call."""
    from edgeseg.artifact import artifact_verification

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with artifact_verification(not kwargs.get("no_verify", False)):
            return fn(*args, **kwargs)

    return wrapper


def model_options(fn):
    """A command that takes ``--model`` also takes ``--num-classes`` and ``--classes`` (one definition, the same in
    every command): checked here, then in force for the whole command (``edgeseg.models.user.user_model_options``),
    so the user model is registered with them wherever the command resolves it. Either needs ``--model
    PATH.py:NAME`` (or ``package.module:NAME``): edgeseg's own models have fixed heads per ``--dataset``."""
    signature = inspect.signature(fn, eval_str=True)  # typer reads the annotations as objects
    extra = [
        inspect.Parameter("num_classes", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=NumClassesOpt),
        inspect.Parameter("classes", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ClassesOpt),
    ]

    @functools.wraps(fn)
    def wrapper(*args, num_classes: int | None = None, classes: str | None = None, **kwargs):
        from edgeseg.models.user import is_user_spec, parse_model_options, user_model_options

        options = parse_model_options(num_classes, classes)
        model = kwargs.get("model")
        if options and not (isinstance(model, str) and is_user_spec(model)):
            given = " and ".join(
                o for o, v in (("--num-classes", num_classes), ("--classes", classes)) if v is not None
            )
            what = (
                f"{model}'s heads are fixed per --dataset"
                if model
                else "an artifact keeps the classes it was exported with"
            )
            raise EdgesegError(f"{given} apply to your own model (--model PATH.py:NAME): {what}; drop {given}")
        with user_model_options(options):
            return fn(*args, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])
    wrapper.__annotations__ = {**fn.__annotations__, "num_classes": NumClassesOpt, "classes": ClassesOpt}
    return wrapper
