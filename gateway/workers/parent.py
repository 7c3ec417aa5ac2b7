"""The supervising parent of ``servegate gateway --workers N`` (N > 1).

Where it sits: behind the CLI when ``--workers`` is above 1 (one worker is plain
:func:`gateway.server.run`, in the same process). The parent checks the config, makes a private
directory (mode 0700: each worker's settings for its start, and the workers' metrics sockets),
and starts N workers (``python -m gateway.workers.child``) through the one process launcher,
:mod:`adapters.procs`: each in its own session, with the parent-death signal, so none outlives
the parent however it dies (a SIGKILL included: the workers get SIGTERM and drain). Each worker
binds the same REST (and gRPC) port with SO_REUSEPORT and publishes under its own replica id,
``<replica_id>/w<i>``. The workers' output passes through the parent's.

- SIGTERM/SIGINT are forwarded to every worker, which drains as one gateway does
  (:mod:`gateway.server`); a second signal is forwarded too (it skips the rest of the shutdown
  delay). The parent exits 0 once every worker exited 0 (1 otherwise); a worker still running
  ``shutdown_delay_s + graceful_shutdown_s`` plus a margin after the signal is killed.
- SIGHUP is forwarded (each worker reloads the config).
- A worker that exits unexpectedly is logged and started again after a backoff (0.5 s,
  doubling to 30 s while it keeps dying within a minute of its start). A worker that fails its
  first start stops the pod (exit 1): a bad port or config is not retried for ever.

Without Redis each worker keeps its own shared state (admin-API weights and rollouts, quota
counts, cold-start buffers): logged at start, see the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

from adapters.configfile import load_config_file
from adapters.errors import ProcessStartError
from adapters.procs import WorkerProcess, WorkerSpec, first_set, start_worker
from gateway.settings import GatewaySettings, WorkerSlot
from gateway.workers import WORKER_READY

log = logging.getLogger("servegate.workers")

BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0  # a worker that ran this long before dying starts again after BACKOFF_S
START_TIMEOUT_S = 60.0
KILL_MARGIN_S = 5.0  # past the drain deadline, a worker still running is killed


def worker_settings(settings: GatewaySettings, index: int, sockets_dir: Path,
                    base_id: str) -> GatewaySettings:
    """Worker ``index``'s settings: its slot, and its own replica id under the pod's."""
    return dataclasses.replace(
        settings, replica_id=f"{base_id}/w{index}",
        worker=WorkerSlot(index=index, count=settings.workers, sockets_dir=sockets_dir))


def warn_shared_state(settings: GatewaySettings) -> None:
    if settings.redis_url:
        return
    log.warning(
        "%d workers without --redis-url: each worker keeps its own state - split weights and "
        "rollouts set through the admin API reach only the worker that took the call, quotas "
        "are split evenly (each worker enforces 1/%d), max_in_flight, shedding and cold-start "
        "buffers count per worker, model residency is tracked per worker; set --redis-url to "
        "share them", settings.workers, settings.workers)


class Pod:
    """The N workers: started, watched, restarted, signalled, awaited."""

    def __init__(self, settings: GatewaySettings, sockets_dir: Path) -> None:
        self.settings = settings
        self.dir = sockets_dir
        self.base_id = settings.replica_id or f"{socket.gethostname()}:{os.getpid()}"
        self.live: dict[int, WorkerProcess] = {}
        self.stopping = asyncio.Event()
        self.exit_codes: dict[int, int | None] = {}
        srv = settings.server
        self.drain_s = srv.shutdown_delay_s + srv.graceful_shutdown_s + KILL_MARGIN_S

    def spec(self, index: int) -> WorkerSpec:
        path = self.dir / f"worker-{index}.settings"
        data = pickle.dumps(worker_settings(self.settings, index, self.dir, self.base_id))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:  # the child reads it once, then removes it
            f.write(data)
        srv = self.settings.server
        return WorkerSpec(
            argv=lambda ports: [sys.executable, "-m", "gateway.workers.child", str(path)],
            ready_line=WORKER_READY, start_timeout_s=START_TIMEOUT_S,
            stop_timeout_s=self.drain_s, attempts=1, ports=(srv.http_port, srv.grpc_port, 0),
            echo=_echo)

    def signal(self, sig: int) -> None:
        for worker in self.live.values():
            worker.signal_group(sig)

    def stop(self, sig: int) -> None:
        if not self.stopping.is_set():
            log.info("%s: stopping %d workers", signal.Signals(sig).name, len(self.live))
        self.stopping.set()
        self.signal(sig)

    async def keep(self, index: int, tg: asyncio.TaskGroup) -> None:
        """Run worker ``index`` until the pod stops, starting it again when it dies."""
        backoff, first = BACKOFF_S, True
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            try:
                worker = await start_worker(self.spec(index), f"worker-{index}", tg,
                                            env=dict(os.environ))
            except ProcessStartError:
                if first:
                    raise
                log.exception("worker %d did not start; trying again in %.1fs", index, backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            first, started = False, loop.time()
            self.live[index] = worker
            try:
                if self.stopping.is_set():  # the signal came while it started
                    worker.signal_group(signal.SIGTERM)
                log.info("worker %d serving (pid %d)", index, worker.proc.pid)
                if await self._exit_or_stop(worker):
                    await self._drain(index, worker)
                    return
            finally:
                del self.live[index]
                if worker.alive:  # cancelled (the pod failed): no worker left behind
                    await asyncio.shield(worker.stop(self.drain_s))
            if loop.time() - started >= STABLE_S:
                backoff = BACKOFF_S
            log.error("worker %d (pid %d) exited unexpectedly with %s; starting it again in "
                      "%.1fs", index, worker.proc.pid, worker.proc.returncode, backoff)
            await self._pause(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _exit_or_stop(self, worker: WorkerProcess) -> bool:
        """Wait until the worker exits or the pod stops; True when the pod stops."""
        await first_set(worker.exited, self.stopping)
        return self.stopping.is_set()

    async def _drain(self, index: int, worker: WorkerProcess) -> None:
        try:
            await asyncio.wait_for(worker.exited.wait(), self.drain_s)
        except TimeoutError:
            log.error("worker %d (pid %d) still running %.0fs after the signal: killed",
                      index, worker.proc.pid, self.drain_s)
            worker.signal_group(signal.SIGKILL)
        code = await worker.proc.wait()
        self.exit_codes[index] = code
        if code != 0:
            log.error("worker %d (pid %d) exited with %s", index, worker.proc.pid, code)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)


def _echo(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


async def serve_pod(settings: GatewaySettings) -> int:
    """Run the pod until a signal stops it; the exit status (0: every worker exited 0)."""
    sockets_dir = Path(tempfile.mkdtemp(prefix="servegate-workers-"))
    pod = Pod(settings, sockets_dir)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, pod.stop, sig)
    loop.add_signal_handler(signal.SIGHUP, pod.signal, signal.SIGHUP)
    start_failed = False
    try:
        async with asyncio.TaskGroup() as tg:
            for i in range(settings.workers):
                tg.create_task(pod.keep(i, tg), name=f"keep-worker-{i}")
    except* ProcessStartError as group:
        start_failed = True
        for exc in group.exceptions:
            log.error("a worker failed to start, stopping the pod: %s", str(exc).splitlines()[0])
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        shutil.rmtree(sockets_dir, ignore_errors=True)
    if start_failed:
        return 1
    failed = sorted(i for i, code in pod.exit_codes.items() if code != 0)
    log.info("all %d workers stopped%s", settings.workers,
             f" (workers {failed} exited non-zero)" if failed else "")
    return 1 if failed else 0


def run_workers(settings: GatewaySettings) -> int:
    """``servegate gateway --workers N``: check the settings and config, then run the pod."""
    if settings.server.http_port == 0:
        raise SystemExit("--workers needs a fixed --http-port (0 would give each worker its own)")
    load_config_file(settings.config_path)  # a bad config fails here, once, not in N workers
    warn_shared_state(settings)
    return asyncio.run(serve_pod(settings))
