"""The cold-start buffer: hold requests while their pool has no ready endpoint.

Where it sits: inside :meth:`gateway.pipeline.proxy.Proxy.call`, between "route" and "pick". When a
pool with ``cold_start.enabled`` has no admitted endpoint, the request waits here instead of
failing, in a bounded per-pool FIFO:

- the first waiter starts a cold start and signals activation at once
  (:class:`gateway.adapters.activation.Activator`: the autoscaler's ``/activate``, Redis pub/sub);
- while requests wait, the prober checks the pool every ``cold_start.probe_interval_s``
  (short fixed retries, no backoff) and discovery pushes new endpoints; either calls
  :meth:`ColdStart.notify`, which wakes the waiters in arrival order;
- a request waits at most its own deadline and the pool's ``max_wait_s``; if its deadline is
  earlier than the predicted ready time (an average of this pool's past cold starts) it is
  answered at once with 503 + Retry-After instead of being held to time out; a full queue is a
  503 + Retry-After too. Nothing is dropped silently or sent twice: a waiter either proceeds
  to exactly one upstream call or gets an error;
- a model-managed pool (``model_control: explicit``) holds a call for a model no endpoint
  holds in the same way, in a bounded FIFO per (pool, model)
  (:meth:`ColdStart.wait_for_model`): :mod:`gateway.pipeline.residency` issues one load and calls
  :meth:`ColdStart.model_ready` (waiters proceed) or :meth:`ColdStart.model_failed` (waiters
  get the load's error); the prediction is the pool's average load time;
- when the gateway shuts down (:meth:`ColdStart.drain`), waiting goes on (a pool that becomes
  ready in time still serves its queue) but no wait outlasts the drain deadline: whoever is
  still held then gets 503 + Retry-After, so the connection is answered, not dropped when the
  server's grace period ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from contracts.config import ResidencyConfig
from gateway.errors import Unavailable
from gateway.metrics import GatewayMetrics
from gateway.pipeline.load import Load
from gateway.pipeline.runtime import Runtime
from router import NoEndpoint

log = logging.getLogger("servegate.coldstart")

_EWMA = 0.5  # weight of the latest cold start in the prediction


@dataclass
class ColdWait:
    """Per-request cold-start budget in, time waited out."""

    budget_s: Callable[[], float | None] = lambda: None
    waited_s: float = 0.0
    # In a model-managed pool, may this call load its model? Not a readiness check: it
    # answers "not ready" instead (a health checker polling every model would load them all).
    load: bool = True


class ColdStart:
    def __init__(self, runtime: Runtime, metrics: GatewayMetrics,
                 activate: Callable[[str], None] = lambda pool: None,
                 clock: Callable[[], float] = time.monotonic, load: Load | None = None) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self._activate = activate
        self._clock = clock
        # The held requests' queues live in the shared load accounting (admission and the
        # metrics read their lengths there).
        self._waiters: dict[str, deque[asyncio.Future[None]]] = (load or Load()).held
        self._started: dict[str, float] = {}  # pool -> when its current cold start began
        self._typical: dict[str, float] = {}  # pool -> average cold start duration
        self._drain_at: float | None = None  # shutting down: no wait ends later than this
        # Calls held for a model load in a model-managed pool, by (pool, model).
        self._model_waiters: dict[tuple[str, str], deque[asyncio.Future[None]]] = {}
        self._load_started: dict[tuple[str, str], float] = {}
        self._typical_load: dict[str, float] = {}  # pool -> average load wait

    def _limit(self, max_wait_s: float, budget_s: float | None,
               now: float) -> tuple[float, bool]:
        """How long a request may wait: the pool's ``max_wait_s``, the request's own budget,
        and, while shutting down, the drain deadline (then ``True``)."""
        limit = max_wait_s if budget_s is None else min(budget_s, max_wait_s)
        if self._drain_at is not None and self._drain_at - now < limit:
            return max(self._drain_at - now, 0.0), True
        return limit, False

    def queued(self) -> dict[str, int]:
        return {pool: len(q) for pool, q in self._waiters.items()}  # as Load.queued

    def waiting(self, pool: str) -> bool:
        return bool(self._waiters.get(pool))

    def predicted_remaining(self, pool: str, now: float) -> float | None:
        typical = self._typical.get(pool)
        if typical is None:
            return None
        return max(typical - (now - self._started.get(pool, now)), 0.0)

    async def wait(self, pool_name: str, budget_s: float | None) -> float:
        """Wait until ``pool_name`` has an admitted endpoint; the seconds waited.

        Raises :class:`router.NoEndpoint` when the pool does not buffer, and
        :class:`gateway.errors.Unavailable` (503 + Retry-After) when the queue is full, the
        deadline comes before the predicted ready time, or the wait runs out.
        """
        pool = self.runtime.state.pools[pool_name]
        cfg = pool.config.cold_start
        if not cfg.enabled:
            raise NoEndpoint(pool_name)
        queue = self._waiters.setdefault(pool_name, deque())
        now = self._clock()
        predicted = self.predicted_remaining(pool_name, now)
        retry = max(1, math.ceil(predicted or 1.0))
        if len(queue) >= cfg.max_queue:
            raise Unavailable(f"pool '{pool_name}' is starting and its queue is full "
                              f"({cfg.max_queue} waiting)", retry)
        limit, draining = self._limit(cfg.max_wait_s, budget_s, now)
        if (predicted is not None and limit < predicted) or (draining and limit <= 0):
            if draining:
                raise self._shutting_down(pool_name, retry)
            raise Unavailable(f"pool '{pool_name}' is starting: ready in about {predicted:.1f}s, "
                              f"after this request's deadline ({limit:.1f}s)", retry)
        if pool_name not in self._started:
            self._started[pool_name] = now
            self.metrics.activations.labels(pool_name).inc()
            log.info("pool %s has no ready endpoint: holding requests, activating", pool_name)
            self._activate(pool_name)
        await self._hold(queue, limit, draining, pool_name, retry,
                         f"pool '{pool_name}' had no ready endpoint within {limit:g}s")
        waited = self._clock() - now
        self.metrics.cold_start_wait.labels(pool_name).observe(waited)
        return waited

    async def _hold(self, queue: deque[asyncio.Future[None]], limit: float, draining: bool,
                    pool_name: str, retry: int, timed_out: str) -> None:
        """Wait in ``queue`` until woken, at most ``limit`` seconds: 503 + Retry-After saying
        ``timed_out`` when the wait runs out, or that the gateway is shutting down."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(future)
        try:
            await asyncio.wait_for(future, limit)
        except _Drained:
            raise self._shutting_down(pool_name, retry) from None
        except TimeoutError:
            if draining:
                raise self._shutting_down(pool_name, retry) from None
            raise Unavailable(timed_out, retry) from None
        finally:
            if not future.done():
                future.cancel()
            with contextlib.suppress(ValueError):
                queue.remove(future)

    @staticmethod
    def _shutting_down(pool_name: str, retry: int) -> Unavailable:
        return Unavailable(f"the gateway is shutting down and pool '{pool_name}' has no ready "
                           "endpoint yet; retry on another replica", retry)

    def drain(self, within_s: float) -> None:
        """Shutting down: every wait, held now or started later, ends within ``within_s``.

        Waiters keep waiting until then (a pool that becomes ready still serves them); the
        ones still held at the deadline get 503 + Retry-After.
        """
        self._drain_at = self._clock() + within_s
        asyncio.get_running_loop().call_later(within_s, self._end_waits)
        held = sum(len(q) for q in self._waiters.values())
        if held:
            log.info("draining: %d request(s) held for a cold start wait at most %.1fs more",
                     held, within_s)

    def _end_waits(self) -> None:
        for queue in [*self._waiters.values(), *self._model_waiters.values()]:
            for future in queue:
                if not future.done():
                    future.set_exception(_Drained())

    def notify(self, pool_name: str) -> None:
        """An endpoint of ``pool_name`` may have become ready: wake its waiters in order."""
        pool = self.runtime.state.pools.get(pool_name)
        if pool is None or not pool.admitted_count():
            return
        started = self._started.pop(pool_name, None)
        if started is not None:
            took = self._clock() - started
            self.metrics.cold_start.labels(pool_name).observe(took)
            old = self._typical.get(pool_name)
            self._typical[pool_name] = took if old is None else _EWMA * took + (1 - _EWMA) * old
            log.info("pool %s ready after %.2fs cold start", pool_name, took)
        for future in self._waiters.get(pool_name, ()):
            if not future.done():
                future.set_result(None)

    def notify_all(self) -> None:
        for pool_name in list(self._waiters):
            self.notify(pool_name)


    # ------------------------------------------------------------ model loads (managed pools)

    def model_queued(self, pool_name: str, model: str) -> int:
        return len(self._model_waiters.get((pool_name, model), ()))

    async def wait_for_model(self, pool_name: str, model: str, cfg: ResidencyConfig,
                             budget_s: float | None) -> float:
        """Hold a call until ``model`` is loaded on an endpoint of ``pool_name``; the seconds
        waited. :class:`Unavailable` (503 + Retry-After) when the model's queue is full, the
        deadline comes before the predicted load time, the wait runs out, or the load failed.
        """
        key = (pool_name, model)
        queue = self._model_waiters.setdefault(key, deque())
        now = self._clock()
        self._load_started.setdefault(key, now)
        typical = self._typical_load.get(pool_name)
        predicted = (None if typical is None
                     else max(typical - (now - self._load_started[key]), 0.0))
        retry = max(1, math.ceil(predicted or 1.0))
        if len(queue) >= cfg.max_queue:
            raise Unavailable(f"model '{model}' is loading and its queue is full "
                              f"({cfg.max_queue} waiting)", retry)
        limit, draining = self._limit(cfg.max_wait_s, budget_s, now)
        if draining and limit <= 0:
            raise self._shutting_down(pool_name, retry)
        if predicted is not None and limit < predicted:
            raise Unavailable(f"model '{model}' is loading: ready in about {predicted:.1f}s, "
                              f"after this request's deadline ({limit:.1f}s)", retry)
        try:
            await self._hold(queue, limit, draining, pool_name, retry,
                             f"model '{model}' was not loaded within {limit:g}s")
        finally:
            if not queue:
                self._model_waiters.pop(key, None)
        waited = self._clock() - now
        self.metrics.cold_start_wait.labels(pool_name).observe(waited)
        return waited

    def model_ready(self, pool_name: str, model: str, took_s: float | None = None) -> None:
        """``model`` is loaded on an endpoint of ``pool_name``: its held calls proceed."""
        key = (pool_name, model)
        started = self._load_started.pop(key, None)
        if started is not None:
            took = self._clock() - started if took_s is None else took_s
            old = self._typical_load.get(pool_name)
            self._typical_load[pool_name] = (took if old is None
                                             else _EWMA * took + (1 - _EWMA) * old)
        for future in self._model_waiters.get(key, ()):
            if not future.done():
                future.set_result(None)

    def model_failed(self, pool_name: str, model: str, message: str, retry_s: int) -> None:
        """The load of ``model`` failed: its held calls are answered with 503 + ``message``."""
        self._load_started.pop((pool_name, model), None)
        for future in self._model_waiters.get((pool_name, model), ()):
            if not future.done():
                future.set_exception(Unavailable(message, retry_s))


class _Drained(Exception):
    """Set on a held request's future when the drain deadline comes."""
