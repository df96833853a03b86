"""Reaching the device a profile describes, for bench and sweep: the command-line overrides of its ``reach``,
the SSH session or adb transport (opened on first use), the device column (measured there, or why not and the
command that would measure it), and the report's device facts."""

from __future__ import annotations

import dataclasses
import platform
import shlex
from dataclasses import dataclass
from pathlib import Path

from edgeseg.backends import backend_for
from edgeseg.errors import EdgesegError


@dataclass
class RemoteOptions:
    """Command-line overrides of a profile's ``reach`` (None keeps the profile's value)."""

    host: str | None = None
    port: int | None = None
    known_hosts: Path | None = None
    identity: Path | None = None
    serial: str | None = None
    benchmark_model: str | None = None

    def apply(self, reach):
        update = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items() if v is not None}
        if self.host and reach.method == "none":
            raise EdgesegError(f"--host: this device is not reached over SSH ({reach.how or 'no way to run there'})")
        return reach.model_copy(update=update)


def measurement(timing, runtime: str, machine: str, method: str, state: dict | None = None, command=None):
    from edgeseg.bench.report import Measurement, Stats

    return Measurement(
        machine=machine,
        runtime=runtime,
        method=method,
        stats=Stats.of(timing.stats),
        stop=timing.stop,
        state=state or {},
        command=command,
    )


def would_be_command(profile, reach, entry_folder: str, tgt, plan, device_threads: int) -> str:
    from edgeseg.bench.adb import benchmark_model_command
    from edgeseg.bench.ssh import runner_command
    from edgeseg.bench.trtexec import trtexec_bench_command

    # shell-quoted: the folder name is whatever the user (or whoever made the folder) chose
    rerun = shlex.join(["edgeseg", "bench", "--device", profile.name, "--artifact", str(entry_folder)])
    backend = backend_for(tgt.format)
    if reach.method == "ssh":
        on_device = (
            trtexec_bench_command(reach.trtexec, "model.onnx")
            if backend.ssh_timer == "trtexec"
            else runner_command(reach.python, reach.workdir, f"model{tgt.suffix}", 10, plan.max_runs, device_threads)
        )
        return f"{rerun} --host USER@HOST   # runs on the device: {on_device}"
    if reach.method == "adb":
        binary = reach.benchmark_model or "/data/local/tmp/benchmark_model"
        on_device = benchmark_model_command(
            binary,
            "/data/local/tmp/edgeseg/model.tflite",
            device_threads,
            reach.delegate,
            10,
            plan.max_runs,
            reach.cpu_mask,
        )
        return f"{rerun} --serial SERIAL   # runs on the phone: {on_device}"
    return reach.how or rerun


class DeviceConnection:
    """The SSH session or adb transport to the profile's device, opened on first use; a failure to connect is
    kept as the reason the device column says 'not measured'."""

    def __init__(self, profile, reach):
        self.profile, self.reach = profile, reach
        self.session, self.transport, self.error, self.state = None, None, None, {}

    def ssh(self):
        from edgeseg.bench.ssh import SshSession, SshTarget, device_state

        if self.session is None and self.error is None:
            r = self.reach
            target = SshTarget(
                r.host,
                r.port,
                Path(r.known_hosts) if r.known_hosts else None,
                Path(r.identity) if r.identity else None,
                r.workdir,
            )
            try:
                self.session = SshSession(target).__enter__()
                self.state = device_state(self.session)
            except (EdgesegError, RuntimeError) as exc:
                self.error = str(exc)
                self.close()
        return self.session

    def adb(self):
        from edgeseg.bench.adb import AdbutilsTransport

        if self.transport is None and self.error is None:
            try:
                self.transport = AdbutilsTransport(self.reach.serial)
            except EdgesegError as exc:
                self.error = str(exc)
        return self.transport

    def close(self):
        if self.session is not None:
            session, self.session = self.session, None
            session.__exit__(None, None, None)


def device_column(conn: DeviceConnection, folder: Path, manifest: dict, tgt, plan, device_threads: int, command):
    """Measure on the profile's device, or say plainly why not (and what would measure it)."""
    from edgeseg.bench.report import DeviceColumn, Measurement, Stats

    profile, reach = conn.profile, conn.reach
    name = profile.name
    model_file = folder / manifest["file"]
    tag = f"{folder.name}-{manifest['sha256'][:8]}"
    if not profile.reachable():
        why = {
            "ssh": "no host configured (set reach.host in the profile or pass --host USER@HOST)",
            "adb": "no adb serial configured (set reach.serial in the profile or pass --serial)",
        }.get(reach.method, reach.how or "edgeseg cannot run there")
        if reach.method in ("ssh", "adb"):
            why = why.split(" (")[0]
        return DeviceColumn(device=name, note=f"not measured on {name}: {why}", command=command)
    backend = backend_for(tgt.format)
    if reach.method == "ssh":
        if backend.ssh_timer is None:
            return DeviceColumn(device=name, note=f"not measured on {name}: {backend.device_note}")
        session = conn.ssh()
        if session is None:
            return DeviceColumn(device=name, note=f"not measured on {name}: {conn.error}", command=command)
        from edgeseg.bench.ssh import bench_with_runner, bench_with_trtexec

        machine = f"{name} ({reach.host})"
        try:
            if backend.ssh_timer == "trtexec":
                r = bench_with_trtexec(session, model_file, tag, reach.trtexec)
                m = Measurement(
                    machine=machine,
                    runtime=f"TensorRT {r['tensorrt'] or '(version not printed)'} via trtexec",
                    method="trtexec GPU compute time (--useCudaGraph --noDataTransfers --useSpinWait)",
                    stats=Stats.of(r["gpu_compute"]),
                    secondary={"end_to_end": Stats.of(r["end_to_end"])},
                    state=conn.state,
                    command=r["command"],
                )
            else:
                r = bench_with_runner(
                    session, model_file, tag, reach.python, plan.warmup, plan.max_runs, device_threads
                )
                m = Measurement(
                    machine=machine,
                    runtime=r["runtime"],
                    method=f"edgeseg runner on the device, {r['threads']} threads, fixed {r['stats'].n} runs",
                    stats=Stats.of(r["stats"]),
                    state={**conn.state, "runner_machine": r["remote_machine"]},
                    command=r["command"],
                )
        except RuntimeError as exc:
            return DeviceColumn(device=name, note=f"not measured on {name}: {exc}", command=command)
        return DeviceColumn(device=name, measured=m)
    if reach.method == "adb":
        if not backend.adb_timer:
            return DeviceColumn(device=name, note=f"not measured on {name}: the adb path runs .tflite only")
        if not reach.benchmark_model:
            return DeviceColumn(
                device=name,
                note=f"not measured on {name}: no benchmark_model path (--benchmark-model)",
                command=command,
            )
        transport = conn.adb()
        if transport is None:
            return DeviceColumn(device=name, note=f"not measured on {name}: {conn.error}", command=command)
        from edgeseg.bench.adb import bench_over_adb

        try:
            r = bench_over_adb(
                transport,
                model_file,
                reach.benchmark_model,
                device_threads,
                reach.delegate,
                plan.warmup,
                plan.max_runs,
                reach.cpu_mask,
            )
        except RuntimeError as exc:
            return DeviceColumn(device=name, note=f"not measured on {name}: {exc}", command=command)
        m = Measurement(
            machine=f"{name} (adb {reach.serial})",
            runtime=r["runtime"],
            method="TFLite benchmark_model (mean/std; median only where the build prints it)",
            stats=Stats.of(r["stats"]),
            state=r["device_state"],
            command=r["command"],
        )
        return DeviceColumn(device=name, measured=m)
    return DeviceColumn(device=name, note=f"not measured on {name}: {reach.how}", command=command)


def node_stands_in(profile) -> str | None:
    """Why this machine does not look like the device it times for (a Ray node advertising a device), if so."""
    machine = platform.machine().lower()
    if profile.kind in ("jetson", "raspberry-pi") and machine not in ("aarch64", "arm64"):
        return (
            f"this node is {machine}, not the {profile.kind}'s aarch64: it stands in for {profile.name} "
            "(check which node advertises the resource)"
        )
    return None


def device_info(profile):
    from edgeseg.bench.report import DeviceInfo

    reach = profile.reach
    return DeviceInfo(
        name=profile.name,
        title=profile.title,
        kind=profile.kind,
        runtime=profile.runtime,
        reach=reach.method + (f" {reach.host}" if reach.host else "") + (f" {reach.serial}" if reach.serial else ""),
        budget_ms=profile.budget_ms,
        miou_floor=profile.miou_floor,
    )
