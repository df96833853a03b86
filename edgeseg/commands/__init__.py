"""Command modules: what each CLI command does, without the terminal.

The layers read top-down: ``cli`` -> ``commands`` -> models / data / eval / train / rewrite / exporters / quantize /
runtimes / lint / bench / check / estimate / sweep. Nothing below imports ``commands`` (shared constants such as
``edgeseg.paths.SAMPLE_DATA`` live below). Progress is reported through plain callbacks (``Progress``) so the CLI
can draw rich bars and tests can run silently.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[..., None]
