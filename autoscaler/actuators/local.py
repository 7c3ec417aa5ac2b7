"""The local actuator: real Triton processes on this host, per pool (demo and tests).

Where it sits: behind the :class:`~autoscaler.actuators.base.Actuator` port, for
``servegate autoscaler --actuator local`` and ``servegate demo``. Each pool's config
(``autoscaling.pools.<pool>.local``) says what a replica runs; a replica is one worker process
(:mod:`adapters.procs`) on three free ports.

- :meth:`LocalActuator.scale` returns at once: new replicas start in tasks of the actuator's
  own :class:`asyncio.TaskGroup` (a start takes seconds); surplus replicas are removed
  starting ones first, then the newest ready ones. A ready replica leaves the endpoint list
  ``drain_s`` before it gets SIGTERM, so the gateway stops sending to it first.
- :meth:`current` counts starting and ready replicas, :meth:`ready` the ready ones.
- :meth:`endpoints` lists a pool's READY replicas with a version that changes whenever the
  list does; :meth:`wait_endpoints` long-polls it (the status server's
  ``GET /pools/{pool}/endpoints``, which the gateway's local discovery watches).
- A replica that dies on its own leaves the list; the next tick sees the pool short and the
  decision (unchanged) starts a new one.

Leaving the ``async with`` stops every replica (cancelled starts included): no orphans.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from adapters.errors import ProcessStartError
from adapters.procs import WorkerProcess, WorkerSpec, python_env, start_worker
from autoscaler.errors import ActuatorError
from contracts.autoscaling import LocalReplicaConfig

log = logging.getLogger(__name__)

State = Literal["starting", "ready", "stopping"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ready replica's addresses (``host:port``)."""

    http: str
    grpc: str
    metrics: str

    def as_dict(self) -> dict[str, str]:
        return {"http": self.http, "grpc": self.grpc, "metrics": self.metrics}


@dataclass(eq=False)
class Replica:
    pool: str
    number: int
    state: State = "starting"
    worker: WorkerProcess | None = None
    task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{self.pool}-{self.number}"

    def endpoint(self, host: str = "127.0.0.1") -> Endpoint:
        assert self.worker is not None
        http, grpc, metrics = self.worker.ports
        return Endpoint(f"{host}:{http}", f"{host}:{grpc}", f"{host}:{metrics}")


@dataclass
class _Versioned:
    """A pool's endpoint-list version and an event fired (and replaced) on each change."""

    version: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def bump(self) -> None:
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()


def worker_argv(cfg: LocalReplicaConfig,
                python: str = sys.executable) -> Callable[[tuple[int, int, int]], Sequence[str]]:
    """``argv(ports)`` for a pool's replica (see :class:`LocalReplicaConfig`)."""

    def argv(ports: tuple[int, int, int]) -> Sequence[str]:
        http, grpc, metrics = ports
        return [python, "-m", cfg.module, "--http-port", str(http), "--grpc-port", str(grpc),
                "--metrics-port", str(metrics), "--models", ",".join(cfg.models), *cfg.args]

    return argv


class LocalActuator:
    """Runs each pool's replicas as local worker processes; use as ``async with``."""

    def __init__(self, pools: Mapping[str, LocalReplicaConfig], *, cwd: str | None = None,
                 python: str = sys.executable) -> None:
        self.specs = {pool: WorkerSpec(worker_argv(cfg, python), cfg.ready_line,
                                       cfg.start_timeout_s, cfg.stop_timeout_s,
                                       cfg.start_attempts, cwd)
                      for pool, cfg in pools.items()}
        self.drain_s = {pool: cfg.drain_s for pool, cfg in pools.items()}
        self._replicas: dict[str, list[Replica]] = {pool: [] for pool in pools}
        self._versions = {pool: _Versioned() for pool in pools}
        self._numbers = itertools.count(1)
        self._env = python_env()
        self._tg: asyncio.TaskGroup | None = None
        self.start_failures = 0

    async def __aenter__(self) -> LocalActuator:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._tg is not None
        try:
            await asyncio.shield(self._stop_everything())
        finally:
            await self._tg.__aexit__(exc_type, exc, tb)
            self._tg = None

    async def _stop_everything(self) -> None:
        replicas = [r for rs in self._replicas.values() for r in rs]
        for r in replicas:
            if r.task is not None and r.state == "starting":
                r.task.cancel()
            r.state = "stopping"
        for versioned in self._versions.values():
            versioned.bump()
        await asyncio.gather(*(self._terminate(r) for r in replicas), return_exceptions=True)

    # ---------------------------------------------------------------- the Actuator port

    def _pool(self, pool: str) -> list[Replica]:
        if pool not in self._replicas:
            raise ActuatorError(f"local pool {pool!r}", "no 'local' replica config for it")
        return self._replicas[pool]

    def _live(self, pool: str) -> list[Replica]:
        return [r for r in self._pool(pool) if r.state != "stopping"]

    async def current(self, pool: str) -> int:
        return len(self._live(pool))

    async def ready(self, pool: str) -> int:
        return sum(1 for r in self._pool(pool) if r.state == "ready")

    async def scale(self, pool: str, replicas: int) -> None:
        live = self._live(pool)
        if replicas > len(live):
            for _ in range(replicas - len(live)):
                self._add(pool)
        elif replicas < len(live):
            starting = [r for r in live if r.state == "starting"]
            ready = [r for r in live if r.state == "ready"]
            victims = (starting[::-1] + ready[::-1])[:len(live) - replicas]
            for r in victims:
                self._remove(r)

    # ---------------------------------------------------------------- endpoints

    def endpoints(self, pool: str) -> tuple[int, list[Endpoint]]:
        ready = [r.endpoint() for r in self._pool(pool) if r.state == "ready"]
        return self._versions[pool].version, ready

    async def wait_endpoints(self, pool: str, version: int | None,
                             wait_s: float) -> tuple[int, list[Endpoint]]:
        """The endpoints once their version differs from ``version`` (or after ``wait_s``)."""
        self._pool(pool)
        v = self._versions[pool]
        if version is not None and version == v.version and wait_s > 0:
            try:
                async with asyncio.timeout(wait_s):
                    await v.changed.wait()
            except TimeoutError:
                pass
        return self.endpoints(pool)

    # ---------------------------------------------------------------- replica lifecycle

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        if self._tg is None:
            coro.close()
            raise ActuatorError("local actuator", "used outside 'async with'")
        return self._tg.create_task(coro, name=name)

    def _add(self, pool: str) -> None:
        r = Replica(pool, next(self._numbers))
        self._replicas[pool].append(r)
        r.task = self._spawn(f"start-{r.name}", self._start(r))
        log.info("%s: starting", r.name)

    def _remove(self, r: Replica) -> None:
        was_ready = r.state == "ready"
        r.state = "stopping"
        if was_ready:
            self._versions[r.pool].bump()
        if r.task is not None and not r.task.done():
            r.task.cancel()  # a start in progress stops its own process
            self._forget(r)
            return
        self._spawn(f"stop-{r.name}", self._stop(r, self.drain_s[r.pool] if was_ready else 0))

    async def _start(self, r: Replica) -> None:
        assert self._tg is not None
        try:
            r.worker = await start_worker(self.specs[r.pool], r.name, self._tg, self._env)
        except ProcessStartError as exc:
            self.start_failures += 1
            log.error("%s", exc)
            self._forget(r)
            return
        if r.state != "starting":  # removed while the start was finishing
            await r.worker.stop(self.specs[r.pool].stop_timeout_s)
            self._forget(r)
            return
        r.state = "ready"
        self._versions[r.pool].bump()
        log.info("%s: ready on %s", r.name, r.endpoint().http)
        self._spawn(f"watch-{r.name}", self._watch(r))

    async def _watch(self, r: Replica) -> None:
        """Take a replica out of the list when its process dies on its own."""
        assert r.worker is not None
        await r.worker.exited.wait()
        if r.state == "ready":
            log.warning("%s: exited with %s:\n%s", r.name, r.worker.proc.returncode,
                        r.worker.tail(20))
            r.state = "stopping"
            self._versions[r.pool].bump()
            self._forget(r)

    async def _stop(self, r: Replica, drain_s: float) -> None:
        if drain_s > 0:
            await asyncio.sleep(drain_s)
        await self._terminate(r)
        log.info("%s: stopped", r.name)

    async def _terminate(self, r: Replica) -> None:
        try:
            if r.worker is not None:
                await r.worker.stop(self.specs[r.pool].stop_timeout_s)
        finally:
            self._forget(r)

    def _forget(self, r: Replica) -> None:
        replicas = self._replicas.get(r.pool, [])
        if r in replicas:
            replicas.remove(r)
