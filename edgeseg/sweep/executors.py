"""Where a sweep's jobs run: in this process (the default) or on a Ray cluster.

Both executors have one interface, so the sweep's loop is the same either way: ``submit`` a job (a module-level
function and its arguments), ``wait`` for the next one to finish and get ``(handle, result, error)``.

On Ray, artifact jobs run on any worker with a free CPU. A bench job for device D runs only on a node that
advertises D as a custom resource (``ray start --resources '{"jetson-agx-orin": 1}'``), with one unit per job, so
a device times one artifact at a time. A job whose worker dies (killed, out of memory, node lost) is retried by
Ray; a job that raises is not (its error is the cell's result).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from edgeseg.errors import EdgesegError

# Retries after a worker dies mid-job (the job's own exceptions are never retried: they are its result).
WORKER_RETRIES = 2


@dataclass(eq=False)  # a handle: compared and hashed by identity
class _LocalJob:
    fn: Callable
    args: tuple
    kwargs: dict


@dataclass
class LocalExecutor:
    """Runs each job in this process, in submission order, when ``wait`` asks for the next result."""

    description: str = "this process"
    queue: list = field(default_factory=list)

    def device_resources(self) -> dict[str, float]:
        return {}

    def put(self, value):
        return value

    def submit(self, fn: Callable, *args, device: str | None = None, **kwargs):
        job = _LocalJob(fn, args, kwargs)
        self.queue.append(job)
        return job

    def wait(self, handles: list):
        job = next(h for h in self.queue if h in handles)
        self.queue.remove(job)
        try:
            return job, job.fn(*job.args, **job.kwargs), None
        except Exception as exc:  # the job's failure is its result; the sweep goes on with the others
            return job, None, exc

    def close(self) -> None:
        pass


def ray_module():
    try:
        import ray
    except ImportError:
        raise EdgesegError("--cluster needs Ray: pip install 'edgeseg[cluster]'") from None
    return ray


class RayExecutor:
    """Jobs as Ray tasks on an existing cluster (``address``: ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``)."""

    def __init__(self, address: str, cpus_per_job: float = 1.0):
        ray = ray_module()
        self.ray = ray
        self.cpus_per_job = cpus_per_job
        _check_reachable(address)
        # workers import edgeseg from the same installation; keep their logs out of the driver's terminal
        try:
            ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise EdgesegError(
                f"--cluster {address}: cannot connect to a Ray cluster ({first}); start one with `ray start "
                "--head` or pass its address"
            ) from None
        self.description = f"Ray cluster {address} ({self._nodes()} nodes)"
        self._remotes: dict = {}
        self._device_of: dict = {}  # pending bench job -> its device
        self._devices = self._advertised()

    def _nodes(self) -> int:
        return sum(1 for n in self.ray.nodes() if n.get("Alive"))

    def _advertised(self) -> dict[str, float]:
        builtin = ("CPU", "GPU", "memory", "object_store_memory", "accelerator_type")
        return {k: v for k, v in self.ray.cluster_resources().items() if not k.startswith(("node:", *builtin))}

    def device_resources(self) -> dict[str, float]:
        """Custom resources the cluster's nodes advertised when the sweep joined (device names), with their units."""
        return self._devices

    def put(self, value):
        return self.ray.put(value)

    def _remote(self, fn: Callable, device: str | None):
        key = (fn, device)
        if key not in self._remotes:
            if device is None:
                options = {"num_cpus": self.cpus_per_job, "max_retries": WORKER_RETRIES, "retry_exceptions": False}
            else:
                # the device's own unit serialises its jobs; no CPU claim, so a device node can be started with
                # --num-cpus 0 and never gets export work that would disturb its timings
                options = {
                    "num_cpus": 0,
                    "resources": {device: 1},
                    "max_retries": WORKER_RETRIES,
                    "retry_exceptions": False,
                }
            self._remotes[key] = self.ray.remote(**options)(fn)
        return self._remotes[key]

    def submit(self, fn: Callable, *args, device: str | None = None, **kwargs):
        ref = self._remote(fn, device).remote(*args, **kwargs)
        if device is not None:
            self._device_of[ref] = device
        return ref

    def wait(self, handles: list, poll_seconds: float = 10.0):
        while True:
            ready, _ = self.ray.wait(handles, num_returns=1, timeout=poll_seconds)
            if ready:
                break
            # a bench job waits for its device's node; if no node advertises the device any more (the Jetson went
            # away), it would wait forever: fail it instead, with the reason
            alive = self._advertised()
            for ref in handles:
                device = self._device_of.get(ref)
                if device is not None and device not in alive:
                    self.ray.cancel(ref, force=True)
                    self._device_of.pop(ref, None)
                    return ref, None, RuntimeError(f"no node advertises {device} any more (its Ray node left)")
        ref = ready[0]
        self._device_of.pop(ref, None)
        try:
            return ref, self.ray.get(ref), None
        except self.ray.exceptions.RayTaskError as exc:  # the job raised: unwrap to its own exception
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            return ref, None, cause
        except self.ray.exceptions.RayError as exc:  # worker or node died more often than retried
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            return ref, None, RuntimeError(f"worker lost after {WORKER_RETRIES} retries: {first}")

    def close(self) -> None:
        self.ray.shutdown()


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail fast on an address nothing listens on: Ray itself retries a dead GCS address for minutes."""
    import socket

    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise EdgesegError(
            f"--cluster {address}: use auto, HOST:PORT (the head's GCS port, 6379 by default) or ray://HOST:PORT"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise EdgesegError(
            f"--cluster {address}: nothing answers at {host}:{port} ({exc.strerror or exc}); start the head with "
            "`ray start --head` or pass its address"
        ) from None


def open_executor(cluster: str | None):
    if cluster is None:
        return LocalExecutor()
    return RayExecutor(cluster)


def job_origin() -> dict:
    """Where a job ran: host name and process (the sweep records it per job)."""
    import socket

    return {"node": socket.gethostname(), "pid": os.getpid()}
