"""The collector: scrape the signal sources on tick, keep each pool's windows, hand out one
:class:`~autoscaler.policy.Observation` per pool.

Where it sits: first step of collect -> decide -> act (knative's ``metrics/collector.go``).
:meth:`Collector.collect` reads every source once (gateway ``/metrics`` or Redis, Triton
``/metrics``, a GPU source) and records the pool readings into time-bucketed
:class:`~autoscaler.policy.Window` s; :meth:`Collector.observe` is the one narrow read the
decider's caller uses. Missing data stays :class:`~autoscaler.policy.NoData` all the way.

Per pool:

- ``concurrency`` / ``arrival_rate`` / ``queued`` - windowed (stable and panic window) from
  the gateway's in-flight, request rate and held requests (``servegate_queued_requests``)
  plus Triton's pending requests;
- ``p99_s`` - the gateway fleet's p99; ``queue_time_s``, ``batch_fill`` and (per pool, else
  from the global GPU source) ``gpu_utilization`` - from Triton;
- ``activated`` - a request waits for the pool and no replica is ready: set by
  :meth:`Collector.activate` (the gateway's ``POST /activate`` or Redis message) until a
  replica is ready or ``activation_hold_s`` passes, and whenever the gateway reports held
  requests for a pool with nothing ready.

Time always comes in as ``now`` (epoch seconds); nothing here reads the clock.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from autoscaler.errors import SignalError
from autoscaler.policy import NO_DATA, Observation, Reading, ScalerSpec, Window, has_value
from autoscaler.policy.spec import sum_available
from autoscaler.signals.gateway import GatewayCollector, GatewayScraper, PoolMap
from autoscaler.signals.triton import TritonCollector, TritonScraper

log = logging.getLogger(__name__)

GpuSource = Callable[[float], Awaitable[Reading]]
TritonEndpoints = Callable[[], Mapping[str, tuple[str, str]]]  # metrics -> (pool, http)


class GatewaySource(Protocol):
    """Puts every gateway replica's fresh stats into the collector."""

    async def read_into(self, collector: GatewayCollector, now: float) -> list[SignalError]:
        ...


class ScrapedGateways:
    """:class:`GatewaySource` scraping every gateway replica's ``/metrics``."""

    def __init__(self, urls: Sequence[str], pools: PoolMap, client: httpx.AsyncClient,
                 timeout_s: float = 1.0) -> None:
        self.urls = list(urls)
        self.pools = pools
        self.client = client
        self.timeout_s = timeout_s
        self._scraper: GatewayScraper | None = None

    async def read_into(self, collector: GatewayCollector, now: float) -> list[SignalError]:
        if self._scraper is None or self._scraper.collector is not collector:
            self._scraper = GatewayScraper(self.urls, self.pools, collector, self.client,
                                           self.timeout_s)
        return await self._scraper.scrape(now)


@dataclass
class TritonSource:
    """Triton ``/metrics`` of the configured endpoints plus the ones ``dynamic`` lists
    (``metrics address -> (pool, http address)``), and the models whose batch limit to learn
    per pool (for ``batch_fill``)."""

    client: httpx.AsyncClient
    timeout_s: float = 1.0
    static: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    dynamic: TritonEndpoints | None = None
    pool_models: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass
class _PoolSignals:
    concurrency: Window
    rate: Window
    queued: Window
    last_queued: Reading = NO_DATA
    p99: Reading = NO_DATA
    gpu: Reading = NO_DATA
    queue_time: Reading = NO_DATA
    batch_fill: Reading = NO_DATA
    activated_at: float | None = None


class Collector:
    def __init__(self, specs: Mapping[str, ScalerSpec], gateway: GatewaySource | None, *,
                 triton: TritonSource | None = None, gpu: GpuSource | None = None,
                 stale_after_s: float = 10.0, p99_window_s: float = 10.0,
                 activation_hold_s: Mapping[str, float] | None = None) -> None:
        self.specs = dict(specs)
        self.gateway = gateway
        self.triton = triton
        self.gpu = gpu
        self.gateways = GatewayCollector(stale_after_s, p99_window_s)
        self.tritons = TritonCollector(stale_after_s)
        self._triton_scraper = None if triton is None else TritonScraper(
            {}, self.tritons, triton.client, triton.timeout_s)
        self.hold_s = dict(activation_hold_s or {})
        self._pools = {pool: self._signals(spec, stale_after_s) for pool, spec in specs.items()}

    @staticmethod
    def _signals(spec: ScalerSpec, stale_after_s: float) -> _PoolSignals:
        horizon = max(spec.stable_window_s, spec.panic_window_s)
        def window() -> Window:
            return Window(horizon, stale_after_s=stale_after_s)

        return _PoolSignals(window(), window(), window())

    # ---------------------------------------------------------------- collect

    async def collect(self, now: float) -> list[SignalError]:
        """Read every source once and record each pool's readings at ``now``."""
        errors: list[SignalError] = []
        if self.gateway is not None:
            errors += await self.gateway.read_into(self.gateways, now)
        if self.triton is not None:
            errors += await self._scrape_tritons(now)
        gpu = await self.gpu(now) if self.gpu is not None else NO_DATA
        for pool in self._pools:
            self._record(pool, now, gpu)
        return errors

    async def _scrape_tritons(self, now: float) -> list[SignalError]:
        source, scraper = self.triton, self._triton_scraper
        assert source is not None and scraper is not None
        endpoints = dict(source.static)
        if source.dynamic is not None:
            endpoints.update(source.dynamic())
        scraper.endpoints = endpoints
        errors = await scraper.scrape(now) if endpoints else []
        for pool, models in source.pool_models.items():
            http = next((h for p, h in endpoints.values() if p == pool), None)
            for model in models if http is not None else ():
                try:
                    await scraper.learn_batch_limit(http or "", model)
                except SignalError as exc:
                    errors.append(exc)
        return errors

    def _record(self, pool: str, now: float, gpu: Reading) -> None:
        s = self._pools[pool]
        g = self.gateways.read(pool, now)
        for window, reading in ((s.concurrency, g.in_flight), (s.rate, g.arrival_rate)):
            if has_value(reading):
                window.record(now, reading)
        pending: Reading = NO_DATA
        if self._triton_scraper is not None:
            t = self.tritons.read(pool, now, None, self._triton_scraper.batch_limits)
            pending, s.queue_time, s.batch_fill = t.pending, t.queue_time_s, t.batch_fill
            gpu = t.gpu_utilization if has_value(t.gpu_utilization) else gpu
        queued = g.queued if self.triton is None else sum_available(g.queued, pending)
        if has_value(queued):
            s.queued.record(now, queued)
        s.last_queued, s.p99, s.gpu = g.queued, g.p99_s, gpu

    # ---------------------------------------------------------------- activation and read

    def activate(self, pool: str, now: float) -> bool:
        """A request waits for ``pool``: count it as traffic until a replica is ready."""
        if pool not in self._pools:
            return False
        self._pools[pool].activated_at = now
        return True

    def _activated(self, pool: str, now: float, ready: int) -> bool:
        s = self._pools[pool]
        if ready > 0:
            s.activated_at = None
            return False
        if s.activated_at is not None:
            if now - s.activated_at < self.hold_s.get(pool, 120.0):
                return True
            s.activated_at = None
        return has_value(s.last_queued) and s.last_queued > 0

    def observe(self, pool: str, now: float, current: int, ready: int) -> Observation:
        """What the decider is told about ``pool`` at ``now``."""
        s, spec = self._pools[pool], self.specs[pool]
        stable, panic = spec.stable_window_s, spec.panic_window_s
        return Observation(
            current_replicas=current, ready_replicas=ready,
            concurrency=s.concurrency.windowed(now, stable, panic),
            arrival_rate=s.rate.windowed(now, stable, panic),
            queued=s.queued.windowed(now, stable, panic),
            p99_s=s.p99, gpu_utilization=s.gpu, queue_time_s=s.queue_time,
            batch_fill=s.batch_fill, activated=self._activated(pool, now, ready))

    def demand(self, pool: str, now: float) -> float:
        """In-flight plus queued requests (stable window; 0 without data), for /metrics."""
        s, spec = self._pools[pool], self.specs[pool]
        total = 0.0
        for window in (s.concurrency, s.queued):
            reading = window.average(now, spec.stable_window_s)
            total += reading if has_value(reading) else 0.0
        return total
