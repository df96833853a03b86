"""ExecuTorch programs (.pte) through ExecuTorch's Python runtime (``executorch.runtime.Runtime``), behind the
Predictor call: NCHW float32 in, the program's output (logits or labels) out. A program lowered for XNNPACK
takes its image in channels-last dim order (``export.lower``); its input is given in the dim order the program
records (``input_dim_orders``), since ExecuTorch reads an input's bytes in that order without checking the
caller's strides (an NCHW-contiguous tensor given to a channels-last program runs, with wrong results).

The runtime's thread pool is process-wide (XNNPACK's kernels share it): a model opened with ``threads`` sets the
pool to that size before each call when another model changed it, so models with different thread counts can be
timed side by side in one process.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import torch

from edgeseg.errors import EdgesegError


@contextlib.contextmanager
def native_log():
    """Capture what the runtime's C++ code writes to file descriptor 2 (its ``[program.cpp:168] ...`` log lines and
    cpuinfo's probing) so commands print only their own output; yields a list filled with the lines on exit."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def import_executorch() -> None:
    """Import ExecuTorch with torchao's import-time warnings (CUDA kernels it cannot load on a CPU machine, a
    pytree deprecation) kept off the user's terminal: they say nothing about the command being run."""
    import logging

    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        import executorch.exir  # noqa: F401
        import executorch.runtime  # noqa: F401
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _why(exc: Exception, log: list[str]) -> str:
    """The runtime's own reason (its last log line, e.g. "Program identifier 'ageg' != expected 'ET12'") beside
    the exception's text."""
    said = (str(exc).splitlines() or [type(exc).__name__])[0]
    last = next((line.split("] ", 1)[-1] for line in reversed(log) if line.strip()), "")
    return f"{said} ({last})"[:240] if last and last not in said else said[:240]


def registered_backends() -> list[str]:
    import_executorch()
    from executorch.runtime import Runtime

    with native_log():
        return list(Runtime.get().backend_registry.registered_backend_names)


def set_threads(threads: int) -> None:
    """Resize the runtime's process-wide thread pool (no-op when it already has ``threads``)."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        with native_log():
            portable_lib._unsafe_reset_threadpool(threads)


def _first_use() -> None:
    """The thread pool's first use probes the CPU (cpuinfo) and logs to fd 2: done once, quietly."""
    from executorch.extension.pybindings import portable_lib

    with native_log():
        portable_lib._threadpool_get_thread_count()


def thread_count() -> int:
    from executorch.extension.pybindings import portable_lib

    return int(portable_lib._threadpool_get_thread_count())


def read_program_bytes(path: Path) -> bytes:
    """The .pte's bytes, checked for ExecuTorch's flatbuffer identifier (``ET12`` at offset 4) so that a file of
    another kind gets a plain error before the runtime sees it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EdgesegError(f"cannot read ExecuTorch program {path}: {exc.strerror}") from None
    if len(data) < 8 or data[4:6] != b"ET":
        raise EdgesegError(f"{path} is not an ExecuTorch program (.pte): re-export it with edgeseg export")
    return data


def input_dim_orders(data: bytes, outputs: bool = False) -> list[tuple[int, ...] | None]:
    """The dim order of each input (``outputs``: each output) of the program's first method, read from the .pte's
    flatbuffer (``Program -> execution_plan[0] -> values[inputs[i]]``, a ``Tensor``'s ``dim_order``):
    ``(0, 2, 3, 1)`` for a channels-last image, ``None`` for a value that is not a tensor. The runtime's method
    metadata has no dim order, and ``deserialize_pte_binary`` converts the whole program (seconds); these are a few
    table reads."""
    from flatbuffers import encode, number_types, packer
    from flatbuffers.table import Table

    def vector_table(tab: Table, slot: int, j: int) -> Table:
        at = tab.Vector(tab.Offset(slot)) + j * 4
        return Table(tab.Bytes, tab.Indirect(at))

    program = Table(data, encode.Get(packer.uoffset, data, 0))
    plan = vector_table(program, 6, 0)  # Program.execution_plan
    inputs = plan.Offset(12 if outputs else 10)  # ExecutionPlan.inputs / outputs: [int]
    orders: list[tuple[int, ...] | None] = []
    for j in range(plan.VectorLen(inputs) if inputs else 0):
        index = plan.Get(number_types.Int32Flags, plan.Vector(inputs) + j * 4)
        value = vector_table(plan, 8, index)  # ExecutionPlan.values
        kind = value.Offset(4)  # EValue.val_type; 5: Tensor
        if not kind or value.Get(number_types.Uint8Flags, value.Pos + kind) != 5:
            orders.append(None)
            continue
        tensor = Table(data, 0)
        value.Union(tensor, value.Offset(6))
        dims = tensor.Offset(10)  # Tensor.dim_order: [ubyte]
        count = tensor.VectorLen(dims) if dims else 0
        start = tensor.Vector(dims) if dims else 0
        orders.append(tuple(int(data[start + d]) for d in range(count)))
    return orders


CHANNELS_LAST = (0, 2, 3, 1)


class ExecuTorchModel:
    """One loaded program's ``forward``; ``etdump=True`` records per-op events (ETDump) for the profiler."""

    def __init__(self, path: Path, threads: int | None = None, etdump: bool = False):
        import_executorch()
        from executorch.runtime import Runtime

        self.path, self.threads = Path(path), threads or 2
        data = read_program_bytes(self.path)
        _first_use()
        set_threads(self.threads)
        try:
            with native_log() as log:
                self.program = Runtime.get().load_program(
                    data,
                    enable_etdump=etdump,
                    debug_buffer_size=0,  # timings only: no intermediate outputs
                )
                self.method = self.program.load_method("forward")
        except Exception as exc:  # the runtime raises RuntimeError / ValueError with its error code
            raise EdgesegError(
                f"ExecuTorch cannot load {path}: {_why(exc, log)}; re-export it with edgeseg export"
            ) from None
        meta = self.method.metadata
        self.input_shape = tuple(meta.input_tensor_meta(0).sizes())
        try:  # the runtime loaded it, so the flatbuffer is sound; a reader error is a program it cannot place
            self.channels_last = input_dim_orders(data)[:1] == [CHANNELS_LAST]
        except Exception as exc:  # a layout guessed wrong would give wrong logits silently: refuse instead
            raise EdgesegError(
                f"cannot read the input dim order of {path} ({type(exc).__name__}); re-export it with edgeseg export"
            ) from None
        self.etdump = etdump

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (float32) in the program's input dim order."""
        x = x.float()
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        set_threads(self.threads)
        try:
            (out,) = self.method.execute([x])
        except Exception as exc:
            why = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise EdgesegError(f"ExecuTorch failed to run {self.path.name}: {why}") from None
        return out

    def timing_call(self, x: torch.Tensor):
        """One execute on ``x`` as a no-argument call (the input prepared once)."""
        x = self._layout(x)
        return lambda: self._run(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != self.input_shape:
            raise EdgesegError(f"artifact takes input {self.input_shape}, got {tuple(x.shape)}")
        return self._run(self._layout(x)).clone()

    def write_etdump(self, etdump_path: Path) -> None:
        if not self.etdump:
            raise RuntimeError("this program was loaded without ETDump")
        self.program.write_etdump_result_to_file(str(etdump_path), str(etdump_path.with_suffix(".debug.bin")))
