"""The ``edgeseg`` command line (typer + rich). Each command parses arguments, calls one function of
``edgeseg.commands`` and draws its result; user errors (``EdgesegError``) print one line and exit 2, without a
traceback. One module per command group; importing them below registers their commands on ``app``."""

from __future__ import annotations

import signal
import sys

import typer

app = typer.Typer(
    help="edgeseg: attention segmentation models from PyTorch to edge devices, with measured parity, mIoU and latency.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
weights_app = typer.Typer(help="Shipped weights: list and publish.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")

# The command groups register on import, in this order: the order `edgeseg --help` lists the commands in.
# isort: off
from edgeseg.cli import models  # noqa: E402, F401  models, eval, predict, train
from edgeseg.cli import export  # noqa: E402, F401  targets, export, quantize, lint, op-profile
from edgeseg.cli import bench  # noqa: E402, F401  devices, bench
from edgeseg.cli import sweep  # noqa: E402, F401  sweep
from edgeseg.cli import check  # noqa: E402, F401  check
from edgeseg.cli import estimate  # noqa: E402, F401  estimate, fit-latency
from edgeseg.cli import weights  # noqa: E402, F401  weights list, weights publish
from edgeseg.cli import rewrites  # noqa: E402, F401  rewrites
# isort: on


def _raise_terminated(signum, frame) -> None:
    from edgeseg.errors import Terminated

    # a second SIGTERM ends the process at once (a later run removes what the clean-up could not finish)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated()


def main() -> None:
    # Python's default SIGTERM ends the process without unwinding: raising instead lets staging folders and
    # temporary files be removed, and the command exit 143 with one line (cli.common.user_errors).
    signal.signal(signal.SIGTERM, _raise_terminated)
    # A command started as a background job inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: an explicit `kill -INT` would be lost. Ctrl-C / SIGINT always stops edgeseg (exit 130).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
