"""The one process launcher: child processes started, awaited and stopped without orphans.

Where it sits: under the autoscaler's local actuator (local Triton replicas) and under the
local runtime (``servegate.local.launch``: the Triton workers of the demo, the test fixtures
and the benchmarks, started from synchronous code through one background event loop); the
demo runner's own children (gateway, autoscaler) take :func:`die_with_parent` too.

- A worker runs in its own session (process group), so stopping it also stops the
  ``tritonserver`` and Python-backend stubs it spawned.
- :func:`die_with_parent` (``preexec_fn``): Linux signals the child when its parent dies,
  however it dies (SIGKILL, an OOM kill, a crashed terminal, a CI time-out), and the child's
  own SIGTERM handling stops what it started in turn (a Triton worker its ``tritonserver``).
- :func:`python_env`: ``LD_LIBRARY_PATH`` starts with Python's LIBDIR, so the Python backend
  stub loads the same libpython as the interpreter.
- :func:`start_worker` waits, with a deadline, for the worker's ready line on its output (or,
  for a binary whose output we do not write, for a ready URL to answer 200), and tries a
  failed start again on fresh ports; :meth:`WorkerProcess.stop` sends SIGTERM to the
  group, waits, then SIGKILLs the group (stragglers) - also when the stop itself is cancelled.
  The output pump of each worker is a task in the caller's :class:`asyncio.TaskGroup`.

Linux sends the parent-death signal when the *thread* that forked the child exits, not the
process: a child started from a pool thread would be stopped as soon as that thread ends. So
:func:`die_with_parent` arms it only on the main thread or on a thread marked as living as long
as the process (``LIVES_WITH_PROCESS``: ``servegate.local.launch``'s event loop), and a child
of our own that may be started from elsewhere also runs :func:`watch_parent`, which notices
the process-level event - being re-parented.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import random
import signal
import socket
import sys
import sysconfig
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from adapters.errors import ProcessStartError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# Set true on a thread that ends only with the process: children it forks may take the
# parent-death signal (Linux sends it when the forking thread ends).
LIVES_WITH_PROCESS = "servegate_lives_with_process"


_PORTS_FROM = 10_000  # free_port's range starts here and ends below the ephemeral range
_picked: set[int] = set()  # handed out by this process (each only once)
_rng = random.SystemRandom()  # not the random module's state, which forked children share


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server started a moment later.

    Taken below the kernel's ephemeral range (``ip_local_port_range``): a port from that range
    (what ``bind(0)`` gives) can become the source port of any outgoing connection in the
    time between being chosen and being bound, e.g. while Triton servers start, and the
    server then fails with "address already in use". Falls back to ``bind(0)`` when nothing
    free is found there.
    """
    low = _ephemeral_low()
    for _ in range(64):
        port = _rng.randrange(_PORTS_FROM, low) if low > _PORTS_FROM + 1000 else 0
        if port in _picked:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        _picked.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def python_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a PyTriton process needs: LD_LIBRARY_PATH includes Python's LIBDIR."""
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def signal_group(pid: int, sig: int) -> None:
    """``sig`` to the process group ``pid`` leads (gone already: nothing to do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks the kernel to send ``sig`` to the child when the parent
    exits; ``None`` where the platform has no parent-death signal.

    The parent's pid is read before the fork: a parent that died between the fork and the
    ``prctl`` call is caught by comparing it with ``getppid()`` afterwards. ``None`` too
    off the main thread (see the module's docstring), unless the calling thread is marked as
    living as long as the process (its attribute ``LIVES_WITH_PROCESS`` set true, as
    ``servegate.local.launch``'s event-loop thread is).
    """
    if not sys.platform.startswith("linux"):
        return None
    thread = threading.current_thread()
    if thread is not threading.main_thread() and not getattr(thread, LIVES_WITH_PROCESS, False):
        return None  # it would fire when this thread ends: the child must watch_parent()
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def watch_parent(on_orphaned: Callable[[], None], every_s: float = 0.5) -> threading.Thread:
    """Call ``on_orphaned()`` once, from a daemon thread, when this process's parent exits
    (this process is re-parented: ``getppid()`` changes). For a child's ``main``."""
    parent = os.getppid()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every_s):
            if os.getppid() != parent:
                stop.set()
                on_orphaned()

    thread = threading.Thread(target=watch, daemon=True, name="watch-parent")
    thread.start()
    return thread


@dataclass(frozen=True)
class WorkerSpec:
    """How to run one worker: ``argv(ports)`` builds the command for (http, grpc, metrics)."""

    argv: Callable[[tuple[int, int, int]], Sequence[str]]
    ready_line: str
    start_timeout_s: float = 120.0
    stop_timeout_s: float = 20.0
    attempts: int = 2
    cwd: str | None = None
    ports: tuple[int, int, int] | None = None  # fixed ports (else free ones, new per attempt)
    echo: Callable[[str], None] | None = None  # each output line, as it comes
    # Ready when this URL (built from the ports) answers 200, instead of a line on the output
    # (a binary whose output we do not write: ``ready_line`` may then be "").
    ready_url: Callable[[tuple[int, int, int]], str] | None = None
    # False: stay in the caller's process group (a worker stopped as a group stops it too).
    own_session: bool = True


class WorkerProcess:
    """A running worker: its process (own session), ports and the tail of its output."""

    def __init__(self, proc: asyncio.subprocess.Process, ports: tuple[int, int, int],
                 name: str, own_group: bool = True) -> None:
        self.own_group = own_group
        self.proc = proc
        self.ports = ports
        self.name = name
        self.log: deque[str] = deque(maxlen=400)
        self.ready = asyncio.Event()
        self.exited = asyncio.Event()

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def pump(self, ready_line: str | None,
                   echo: Callable[[str], None] | None = None) -> None:
        """Read the output until EOF (the pipe must be drained while the worker lives)."""
        assert self.proc.stdout is not None
        try:
            async for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                self.log.append(line)
                if ready_line is not None and ready_line in line:
                    self.ready.set()
                elif echo is not None:
                    echo(line)
            await self.proc.wait()
        finally:
            self.exited.set()

    def signal_group(self, sig: int) -> None:
        """``sig`` to the worker's process group, or to the worker alone when it shares its
        parent's group."""
        if self.own_group:
            signal_group(self.proc.pid, sig)
        else:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

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
        env=dict(env), cwd=spec.cwd, start_new_session=spec.own_session,
        preexec_fn=die_with_parent())
    return WorkerProcess(proc, ports, name, own_group=spec.own_session)


async def _poll_ready(url: str, worker: WorkerProcess, every_s: float = 0.1) -> None:
    """Set ``worker.ready`` once ``GET url`` answers 200 (plain HTTP/1.0 on a fresh connection)
    while the worker lives."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = f"GET {parts.path or '/'} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()
    while worker.alive and not worker.ready.is_set():
        with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
            async with asyncio.timeout(1.0):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    writer.write(request)
                    status = await reader.readline()
                finally:
                    writer.close()
                if status.split(b" ")[1:2] == [b"200"]:
                    worker.ready.set()
                    return
        await asyncio.sleep(every_s)


async def _start_once(spec: WorkerSpec, name: str, tg: asyncio.TaskGroup,
                      env: Mapping[str, str]) -> WorkerProcess:
    worker = await _spawn(spec, spec.ports or (free_port(), free_port(), free_port()), name, env)
    tg.create_task(worker.pump(spec.ready_line if spec.ready_url is None else None, spec.echo),
                   name=f"pump-{name}")
    if spec.ready_url is not None:
        tg.create_task(_poll_ready(spec.ready_url(worker.ports), worker), name=f"ready-{name}")
    try:
        async with asyncio.timeout(spec.start_timeout_s):
            await first_set(worker.ready, worker.exited)
        if not worker.ready.is_set():
            raise ProcessStartError(name, f"exited with {worker.proc.returncode} before it "
                                          f"was ready:\n{worker.tail()}")
    except TimeoutError as exc:
        await worker.stop(spec.stop_timeout_s)
        raise ProcessStartError(name, f"not ready after {spec.start_timeout_s:g}s:\n"
                                      f"{worker.tail()}") from exc
    except BaseException:
        await asyncio.shield(worker.stop(spec.stop_timeout_s))
        raise
    return worker


async def first_set(*events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def start_worker(spec: WorkerSpec, name: str, tg: asyncio.TaskGroup,
                       env: Mapping[str, str] | None = None) -> WorkerProcess:
    """Start a worker and wait until it prints its ready line; retried on fresh ports.

    PyTriton's Python-backend handshake has a 1 s timeout that a loaded machine can miss;
    the last failure, with the worker's output, is raised as :class:`ProcessStartError`.
    """
    env = python_env() if env is None else env
    for attempt in range(1, spec.attempts + 1):
        try:
            return await _start_once(spec, name, tg, env)
        except ProcessStartError as exc:
            if attempt == spec.attempts:
                raise
            log.warning("%s: start failed, trying again: %s", name, str(exc)[-500:])
    raise AssertionError("unreachable")
