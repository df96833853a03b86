"""Device profiles: YAML files shipped in ``edgeseg/assets/devices/``, extended (or overridden by name) with a
user folder (``--profiles DIR``). Each file is validated against ``DeviceProfile``; a bad file is refused with
one line naming the file and the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgeseg.backends import TargetNames
from edgeseg.errors import EdgesegError
from edgeseg.estimate.schema import EstimatorData
from edgeseg.io import load_yaml_schema

SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "devices"
DEFAULT_BUDGET_MS = 33.3  # 30 FPS


class _Strict(BaseModel):
    # finite only: an inf budget or a nan floor makes the profile's gates unable to fail
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class HardwareFact(_Strict):
    """A published hardware fact and where it was published (a spec sheet, a vendor page); not a measurement."""

    fact: str
    value: str
    source: str = Field(min_length=3)


class Reach(_Strict):
    """How edgeseg reaches the device. ``local``: this machine. ``ssh``: ``host`` (user@host) with host keys
    checked against ``known_hosts`` (never auto-accepted). ``adb``: ``serial`` and a ``benchmark_model`` binary
    path on the device. ``none``: no way to run there from edgeseg (e.g. an iPhone: Xcode's Core ML performance
    report)."""

    method: Literal["local", "ssh", "adb", "none"]
    host: str | None = None
    port: int = Field(22, ge=1, le=65535)
    known_hosts: str | None = None  # default ~/.ssh/known_hosts
    identity: str | None = None  # private key; default: ssh agent / ~/.ssh/id_*
    workdir: str = "/tmp/edgeseg-bench"
    python: str = "python3"  # runs edgeseg's runner for ONNX/TFLite on the device
    trtexec: str = "trtexec"  # JetPack: /usr/src/tensorrt/bin/trtexec
    serial: str | None = None
    benchmark_model: str | None = None  # TFLite benchmark_model on the device, e.g. /data/local/tmp/benchmark_model
    delegate: Literal["xnnpack", "gpu", "nnapi", "cpu"] = "xnnpack"
    cpu_mask: str | None = None  # taskset mask for the big cores, e.g. "f0"
    how: str = ""  # what to do on the device when edgeseg cannot run there


class DeviceProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    aliases: list[str] = Field([], max_length=64)
    kind: Literal["host", "jetson", "iphone", "android", "raspberry-pi"]
    targets: TargetNames = Field(min_length=1, max_length=64)  # preferred first
    runtime: str
    reach: Reach
    threads: int = Field(2, ge=1, le=64)
    budget_ms: float = Field(DEFAULT_BUDGET_MS, gt=0, le=3_600_000)
    miou_floor: float = Field(ge=0, le=1)
    hardware: list[HardwareFact] = Field([], max_length=256)
    notes: str = ""
    # Roofline estimator data: spec-sheet peaks and bandwidth with sources, and efficiency factors that only
    # `edgeseg fit-latency` writes (fitted to measurements, with their source and validation error).
    estimator: EstimatorData | None = None

    @field_validator("aliases")
    @classmethod
    def _alias_names(cls, value: list[str]) -> list[str]:
        for a in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", a):
                raise ValueError(f"alias {a!r}: use lowercase letters, digits and '-'")
        return value

    def reachable(self) -> bool:
        r = self.reach
        return r.method == "local" or (r.method == "ssh" and bool(r.host)) or (r.method == "adb" and bool(r.serial))


def load_profile(path: Path) -> DeviceProfile:
    path = Path(path)
    profile = load_yaml_schema(path, DeviceProfile, "device profile", "name, targets, reach, ...")
    if profile.name != path.stem:
        raise EdgesegError(
            f"device profile {path}: field 'name' is {profile.name!r}; name the file {profile.name}.yaml"
        )
    return profile


def load_profiles(extra: Path | None = None) -> dict[str, tuple[DeviceProfile, Path]]:
    """Shipped profiles, then ``extra``'s (a user file replaces a shipped one of the same name)."""
    found: dict[str, tuple[DeviceProfile, Path]] = {}
    folders = [SHIPPED]
    if extra is not None:
        extra = Path(extra)
        if not extra.is_dir():
            raise EdgesegError(f"--profiles {extra}: not a folder (pass a folder of <name>.yaml device profiles)")
        folders.append(extra)
    for folder in folders:
        for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
            p = load_profile(path)
            found[p.name] = (p, path)
    owners: dict[str, Path] = {}
    for p, path in found.values():
        for alias in p.aliases:
            if alias in found:
                raise EdgesegError(f"device profile {path}: alias {alias!r} is also a profile name ({found[alias][1]})")
            if alias in owners:
                raise EdgesegError(f"device profile {path}: alias {alias!r} is also claimed by {owners[alias]}")
            owners[alias] = path
    return found


def get_profile(name: str, extra: Path | None = None) -> DeviceProfile:
    import difflib

    profiles = load_profiles(extra)
    if name in profiles:
        return profiles[name][0]
    for p, _ in profiles.values():
        if name in p.aliases:
            return p
    names = sorted(list(profiles) + [a for p, _ in profiles.values() for a in p.aliases])
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise EdgesegError(f"unknown device {name!r}.{hint} Known: {', '.join(names)} (see `edgeseg devices`)")
