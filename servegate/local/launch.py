"""Start and stop local Triton workers from synchronous code (demo, tests, benchmarks).

Where it sits: between the demo, the test fixtures and the benchmarks (plain threads and
blocking calls) and the one process launcher, :mod:`adapters.procs` (asyncio). The workers
are started by that launcher on one background event loop owned by this module (a daemon
thread that lives as long as the process), so each worker runs in its own process group, is
awaited with a deadline and retried on fresh ports, and never outlives this process: its
parent-death signal and its own parent watch stop it if this process dies.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import signal
import sys
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from adapters.procs import (
    LIVES_WITH_PROCESS,
    WorkerProcess,
    WorkerSpec,
    free_port,
    python_env,
    start_worker,
)
from servegate.local.triton_worker import READY_LINE

__all__ = ["TritonProcess", "free_port", "start_process", "start_triton", "triton_env"]

T = TypeVar("T")
triton_env = python_env


class _Loop:
    """One event loop on a daemon thread, with a task group that holds the workers' pumps."""

    _lock = threading.Lock()
    _instance: _Loop | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._group: Future[asyncio.TaskGroup] = Future()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="servegate-launcher")
        setattr(self._thread, LIVES_WITH_PROCESS, True)  # its children take the death signal
        self._thread.start()
        self._hold_task: asyncio.Task[None] | None = None
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.group = self._group.result(10)
        atexit.register(self.close)

    async def _start(self) -> None:
        self._hold_task = asyncio.get_running_loop().create_task(self._hold())

    async def _hold(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._group.set_result(tg)
            await asyncio.Event().wait()  # for the life of the process

    async def _shutdown(self) -> None:
        if self._hold_task is not None:
            self._hold_task.cancel()
            with contextlib.suppress(BaseException):
                await self._hold_task

    def close(self) -> None:
        """At exit: end the task group (its pumps) and the loop, so nothing is left pending.
        Workers still running stop on their own (parent-death signal, parent watch)."""
        with contextlib.suppress(BaseException):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    @classmethod
    def get(cls) -> _Loop:
        with cls._lock:
            if cls._instance is None:
                cls._instance = _Loop()
            return cls._instance

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@dataclass
class TritonProcess:
    """A running worker: its ports, process and the tail of its output."""

    worker: WorkerProcess
    stop_timeout_s: float = 20.0

    @property
    def http_port(self) -> int:
        return self.worker.ports[0]

    @property
    def grpc_port(self) -> int:
        return self.worker.ports[1]

    @property
    def metrics_port(self) -> int:
        return self.worker.ports[2]

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    @property
    def proc(self) -> asyncio.subprocess.Process:
        return self.worker.proc

    @property
    def log(self) -> list[str]:
        return list(self.worker.log)

    def alive(self) -> bool:
        return self.worker.alive

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, as the tests need)."""
        self.worker.signal_group(signal.SIGKILL)
        _Loop.get().run(self.worker.proc.wait(), 10)

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM the group, wait, then SIGKILL what is left."""
        timeout = self.stop_timeout_s if timeout is None else timeout
        _Loop.get().run(self.worker.stop(timeout), timeout + 10)


def start_triton(
    models: Sequence[str] = ("classifier", "embedder", "identity"),
    classifier_version: int = 1,
    ports: tuple[int, int, int] | None = None,
    timeout: float = 120.0,
    quiet: bool = True,
    attempts: int = 2,
    extra_args: Sequence[str] = (),
) -> TritonProcess:
    """Start a worker and wait (with a deadline) until it prints its ready line.

    PyTriton's Python-backend handshake has a 1 s timeout that a loaded 2-core machine can
    miss while several servers start at once; a failed start is retried (fresh ports unless
    ``ports`` is given) and the last failure, with the worker's output, is raised as
    :class:`adapters.errors.ProcessStartError`.
    """

    def argv(p: tuple[int, int, int]) -> list[str]:
        return [sys.executable, "-m", "servegate.local.triton_worker",
                "--http-port", str(p[0]), "--grpc-port", str(p[1]), "--metrics-port", str(p[2]),
                "--models", ",".join(models), "--classifier-version", str(classifier_version),
                *extra_args]

    spec = WorkerSpec(argv, READY_LINE, start_timeout_s=timeout, attempts=attempts, ports=ports,
                      echo=None if quiet else (lambda line: print(line, file=sys.stderr)))
    return start_process(spec, f"triton-{','.join(models)}-v{classifier_version}")


def start_process(spec: WorkerSpec, name: str,
                  env: dict[str, str] | None = None) -> TritonProcess:
    """Any worker ``spec`` on the launcher's loop; blocks until it is ready (or raises
    :class:`adapters.errors.ProcessStartError`)."""
    loop = _Loop.get()
    worker = loop.run(start_worker(spec, name, loop.group, env or python_env()),
                      spec.start_timeout_s * spec.attempts + 60)
    return TritonProcess(worker, spec.stop_timeout_s)

