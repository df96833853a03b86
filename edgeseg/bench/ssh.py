"""Benchmarks on a device over SSH (asyncssh): copy the artifact, run ``trtexec`` or edgeseg's own runner there,
record the device's power mode and clocks, bring the numbers back.

Host keys are checked against a known_hosts file (the profile's, ``--known-hosts``, or ~/.ssh/known_hosts); an
unknown or changed key refuses the connection. Nothing here ever accepts a key on first use.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from edgeseg.bench import remote_runner
from edgeseg.bench.stats import summarize
from edgeseg.bench.trtexec import parse_trtexec, trtexec_bench_command
from edgeseg.errors import EdgesegError


@dataclass
class SshTarget:
    host: str  # user@host or host
    port: int = 22
    known_hosts: Path | None = None
    identity: Path | None = None
    workdir: str = "/tmp/edgeseg-bench"
    connect_timeout: float = 15.0

    @property
    def user(self) -> str | None:
        return self.host.split("@", 1)[0] if "@" in self.host else None

    @property
    def hostname(self) -> str:
        return self.host.split("@", 1)[-1]

    def known_hosts_file(self) -> Path:
        path = Path(self.known_hosts).expanduser() if self.known_hosts else Path("~/.ssh/known_hosts").expanduser()
        if not path.is_file():
            raise EdgesegError(
                f"no known_hosts file at {path}: check the device's host key fingerprint, then add it with "
                f"`ssh-keyscan -p {self.port} {shlex.quote(self.hostname)} >> {shlex.quote(str(path))}` "
                "(edgeseg never accepts unknown keys)"
            )
        return path


@dataclass
class RemoteResult:
    rc: int
    stdout: str
    stderr: str


class SshSession:
    """One SSH connection, used synchronously (``with SshSession(target) as s: s.run(...)``)."""

    def __init__(self, target: SshTarget):
        self.target = target
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn = None

    def __enter__(self) -> SshSession:
        try:
            import asyncssh
        except ImportError:
            raise EdgesegError("benching over SSH needs asyncssh: pip install 'edgeseg[bench]'") from None

        t = self.target
        known_hosts = str(t.known_hosts_file())
        kwargs = {"port": t.port, "known_hosts": known_hosts, "connect_timeout": t.connect_timeout}
        if t.user:
            kwargs["username"] = t.user
        if t.identity:
            kwargs["client_keys"] = [str(Path(t.identity).expanduser())]
        self._loop = asyncio.new_event_loop()
        try:
            self._conn = self._loop.run_until_complete(asyncssh.connect(t.hostname, **kwargs))
        except asyncssh.HostKeyNotVerifiable as exc:
            self._close_loop()
            raise EdgesegError(
                f"host key of {t.hostname}:{t.port} is not trusted by {known_hosts} ({exc.reason}); "
                "check its fingerprint and add it to known_hosts (edgeseg never accepts unknown keys)"
            ) from None
        except asyncssh.PermissionDenied:
            self._close_loop()
            raise EdgesegError(
                f"ssh {t.host} -p {t.port}: permission denied (pass --identity KEY or load the key into ssh-agent)"
            ) from None
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            self._close_loop()
            why = str(exc) or type(exc).__name__
            raise EdgesegError(f"cannot connect to {t.hostname}:{t.port} over SSH: {why}") from None
        return self

    def __exit__(self, *exc) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
            self._loop.run_until_complete(conn.wait_closed())
        self._close_loop()

    def _close_loop(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def _wait(self, what: str, coro):
        # A lost connection, a timeout or an SFTP failure is this target's failure on the device (RuntimeError,
        # which the bench turns into "not measured: why"), not a crash of the whole bench.
        import asyncssh

        try:
            return self._loop.run_until_complete(coro)
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            why = str(exc) or type(exc).__name__
            raise RuntimeError(f"{what} on {self.target.host}: {why}") from None

    def run(self, command: str, timeout: float = 300) -> RemoteResult:
        r = self._wait(f"`{command[:80]}`", self._conn.run(command, check=False, timeout=timeout))
        return RemoteResult(
            r.exit_status if r.exit_status is not None else -1, str(r.stdout or ""), str(r.stderr or "")
        )

    def put(self, local: Path, remote: str) -> None:
        async def _put():
            async with self._conn.start_sftp_client() as sftp:
                await sftp.put(str(local), remote)

        self._wait(f"copying {Path(local).name} to {remote}", _put())


# Device state that changes latency: power mode, clocks, governor. Each probe is optional (absent tools are skipped).
STATE_PROBES = {
    "model": "cat /proc/device-tree/model 2>/dev/null | tr -d '\\0'",
    "kernel": "uname -srm",
    "nvpmodel": "nvpmodel -q 2>/dev/null",
    "jetson_clocks": "jetson_clocks --show 2>/dev/null || sudo -n jetson_clocks --show 2>/dev/null",
    "cpu_governor": "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
    "cpu0_freq_khz": "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
    "devfreq": 'for f in /sys/class/devfreq/*/cur_freq; do [ -r "$f" ] && echo "$f $(cat "$f")"; done',
    "loadavg": "cat /proc/loadavg",
}


def device_state(session: SshSession) -> dict[str, str]:
    state = {}
    for key, cmd in STATE_PROBES.items():
        r = session.run(f"sh -c {shlex.quote(cmd)}", timeout=30)
        text = r.stdout.strip()
        if r.rc == 0 and text:
            state[key] = text[:2000]
    return state


def _stage(session: SshSession, model_file: Path, tag: str) -> str:
    remote_dir = f"{session.target.workdir.rstrip('/')}/{tag}"
    r = session.run(f"mkdir -p {shlex.quote(remote_dir)}")
    if r.rc != 0:
        raise EdgesegError(f"cannot create {remote_dir} on {session.target.host}: {r.stderr.strip()[:200]}")
    session.put(model_file, f"{remote_dir}/{model_file.name}")
    return remote_dir


def runner_command(python: str, remote_dir: str, model_name: str, warmup: int, runs: int, threads: int) -> str:
    q = shlex.quote
    return (
        f"cd {q(remote_dir)} && {q(python)} remote_runner.py {q(model_name)} "
        f"--warmup {warmup} --runs {runs} --threads {threads}"
    )


def bench_with_runner(
    session: SshSession, model_file: Path, tag: str, python: str, warmup: int, runs: int, threads: int
) -> dict:
    """Copy ``model_file`` (.onnx / .tflite) and edgeseg's runner, run it with the device's ``python``."""
    remote_dir = _stage(session, model_file, tag)
    session.put(Path(remote_runner.__file__), f"{remote_dir}/remote_runner.py")
    command = runner_command(python, remote_dir, model_file.name, warmup, runs, threads)
    r = session.run(command, timeout=1800)
    line = next((x for x in r.stdout.splitlines() if x.startswith(remote_runner.MARKER)), None)
    if r.rc != 0 or line is None:
        why = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"edgeseg runner failed on {session.target.host} (exit {r.rc}): {why[0][:300]}")
    result = json.loads(line[len(remote_runner.MARKER) :])
    return {
        "stats": summarize(result["samples_ms"], result["warmup"]),
        "samples_ms": result["samples_ms"],
        "runtime": result["runtime"],
        "threads": result["threads"],
        "remote_machine": result["machine"],
        "command": command,
    }


def bench_with_trtexec(
    session: SshSession, onnx_file: Path, tag: str, trtexec: str, warmup_ms: int = 500, duration_s: int = 10
) -> dict:
    """Copy the TensorRT-ready ONNX, build and time it with trtexec on the device."""
    remote_dir = _stage(session, onnx_file, tag)
    command = f"cd {shlex.quote(remote_dir)} && " + trtexec_bench_command(
        trtexec, onnx_file.name, warmup_ms, duration_s
    )
    r = session.run(command, timeout=3600)
    try:
        parsed = parse_trtexec(r.stdout + "\n" + r.stderr)
    except ValueError as exc:
        raise RuntimeError(f"trtexec on {session.target.host} (exit {r.rc}): {exc}") from None
    return {**parsed, "command": command}
