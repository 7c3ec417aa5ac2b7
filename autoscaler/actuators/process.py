"""Start and stop worker processes (local Triton replicas) without orphans, in asyncio.

Where it sits: under :class:`~autoscaler.actuators.local.LocalActuator`. This is the generic
half of ``servegate/local/launch.py`` (which the autoscaler must not import: the gateway and the
autoscaler meet only over the network), rewritten for asyncio so that a start can be
cancelled and never blocks the control loop:

- the worker runs in its own session (process group), so stopping it also stops the
  ``tritonserver`` and Python-backend stubs it spawned; on Linux it also gets SIGTERM if the
  autoscaler dies (:func:`adapters.procs.die_with_parent`), which stops its Triton;
- ``LD_LIBRARY_PATH`` starts with Python's LIBDIR, so the Python backend stub loads the same
  libpython as the interpreter;
- a start waits, with a deadline, for the worker's ready line on its output, and a failed
  start is tried again on fresh ports;
- a stop sends SIGTERM to the group, waits, then SIGKILLs the group (stragglers) - also when
  the stop itself is cancelled.

The output pump of each worker is a task in the caller's :class:`asyncio.TaskGroup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sysconfig
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from adapters.procs import die_with_parent
from autoscaler.errors import ReplicaStartError

log = logging.getLogger(__name__)

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a PyTriton process needs: LD_LIBRARY_PATH includes Python's LIBDIR."""
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass(frozen=True)
class WorkerSpec:
    """How to run one worker: ``argv(ports)`` builds the command for (http, grpc, metrics)."""

    argv: Callable[[tuple[int, int, int]], Sequence[str]]
    ready_line: str
    start_timeout_s: float = 120.0
    stop_timeout_s: float = 20.0
    attempts: int = 2
    cwd: str | None = None


class WorkerProcess:
    """A running worker: its process (own session), ports and the tail of its output."""

    def __init__(self, proc: asyncio.subprocess.Process, ports: tuple[int, int, int],
                 name: str) -> None:
        self.proc = proc
        self.ports = ports
        self.name = name
        self.log: deque[str] = deque(maxlen=400)
        self.ready = asyncio.Event()
        self.exited = asyncio.Event()

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def pump(self, ready_line: str) -> None:
        """Read the output until EOF (the pipe must be drained while the worker lives)."""
        assert self.proc.stdout is not None
        try:
            async for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                self.log.append(line)
                if ready_line in line:
                    self.ready.set()
            await self.proc.wait()
        finally:
            self.exited.set()

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the group, wait up to ``timeout_s``, then SIGKILL whatever is left."""
        try:
            if self.alive:
                self.signal_group(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.proc.wait(), timeout_s)
        finally:
            self.signal_group(signal.SIGKILL)  # stubs left behind by the group, if any
        await self.proc.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(list(self.log)[-lines:])


async def _spawn(spec: WorkerSpec, ports: tuple[int, int, int], name: str,
                 env: Mapping[str, str]) -> WorkerProcess:
    proc = await asyncio.create_subprocess_exec(
        *spec.argv(ports), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=dict(env), cwd=spec.cwd, start_new_session=True, preexec_fn=die_with_parent())
    return WorkerProcess(proc, ports, name)


async def _start_once(spec: WorkerSpec, name: str, tg: asyncio.TaskGroup,
                      env: Mapping[str, str]) -> WorkerProcess:
    worker = await _spawn(spec, (free_port(), free_port(), free_port()), name, env)
    tg.create_task(worker.pump(spec.ready_line), name=f"pump-{name}")
    try:
        async with asyncio.timeout(spec.start_timeout_s):
            ready = asyncio.ensure_future(worker.ready.wait())
            exited = asyncio.ensure_future(worker.exited.wait())
            try:
                await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
                exited.cancel()
        if not worker.ready.is_set():
            raise ReplicaStartError(name, f"exited with {worker.proc.returncode} before it "
                                          f"was ready:\n{worker.tail()}")
    except TimeoutError as exc:
        await worker.stop(spec.stop_timeout_s)
        raise ReplicaStartError(name, f"not ready after {spec.start_timeout_s:g}s:\n"
                                      f"{worker.tail()}") from exc
    except BaseException:
        await asyncio.shield(worker.stop(spec.stop_timeout_s))
        raise
    return worker


async def start_worker(spec: WorkerSpec, name: str, tg: asyncio.TaskGroup,
                       env: Mapping[str, str] | None = None) -> WorkerProcess:
    """Start a worker and wait until it prints its ready line; retried on fresh ports.

    PyTriton's Python-backend handshake has a 1 s timeout that a loaded machine can miss;
    the last failure, with the worker's output, is raised as :class:`ReplicaStartError`.
    """
    env = worker_env() if env is None else env
    for attempt in range(1, spec.attempts + 1):
        try:
            return await _start_once(spec, name, tg, env)
        except ReplicaStartError as exc:
            if attempt == spec.attempts:
                raise
            log.warning("%s: start failed, trying again: %s", name, str(exc)[-500:])
    raise AssertionError("unreachable")
