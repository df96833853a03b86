"""Where and how a benchmark's numbers were measured, recorded in its JSON output.

A benchmark script calls :func:`start` before it measures anything and writes ``finish(started)`` into its
``--json`` file under ``"provenance"``:

    started = provenance.start()
    ...                                    # measure
    doc["provenance"] = provenance.finish(started)

The record holds the UTC start date, the commit (``git rev-parse HEAD``, ``-dirty`` when tracked files differ from
it), the machine (CPU model from /proc/cpuinfo, cores, RAM, OS), the 1/5/15-minute load average at start and at
end, the command line and the edgeseg and torch versions. ``benchmarks/render_docs.py`` prints it above the tables
of a docs page. The CPU model is read as ``edgeseg bench`` reads it (``edgeseg.bench.host.cpu_name``).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from edgeseg.bench.host import cpu_name

REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def commit() -> str:
    """``git rev-parse HEAD`` of this repository, plus ``-dirty`` when tracked files have changes; "unknown"
    outside a git checkout."""
    head = _git("rev-parse", "HEAD")
    if not head:
        return "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no")
    return head + ("-dirty" if status else "")


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)  # kB -> GiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip().strip(chr(34))} (kernel {platform.release()})"
    except OSError:
        pass
    return platform.platform()


def machine() -> dict:
    """CPU model, logical cores, RAM in GiB and OS of this machine."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "os": _os_name(),
        "python": platform.python_version(),
    }


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load average (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(package: str) -> str | None:
    module = sys.modules.get(package)
    if module is not None and getattr(module, "__version__", None):
        return str(module.__version__)
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def command() -> str:
    """The command line as typed: the python executable's name, then ``sys.argv``."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def start() -> dict:
    """What is known before measuring: the UTC date and the load average at start."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average_start": load_average(),
    }


def finish(started: dict | None = None) -> dict:
    """The full provenance record; ``started`` comes from :func:`start` (without it, start = now)."""
    started = started or start()
    return {
        "date": started["date"],
        "commit": commit(),
        "machine": machine(),
        "load_average_start": started["load_average_start"],
        "load_average_end": load_average(),
        "command": command(),
        "edgeseg_version": _version("edgeseg"),
        "torch_version": _version("torch"),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(finish(), indent=2))
