"""Cost accounting in the gateway: per-request accumulators, the accounting tick, the report.

Where it sits: the front doors ask :meth:`CostMeter.slot` for the accumulator of a call's
(pool, model, tenant) once they know its route and tenant (three dict lookups, no allocation
once the slot exists) and hand it to :meth:`gateway.pipeline.proxy.Proxy.call`, which adds the
answered request's backend time and count to it: two adds per request. Refused requests never reach
the proxy, so they cost nothing; shadow mirrors are charged to the shadow target under the
tenant ``_shadow``. Every ``cost.tick_s`` :meth:`CostMeter.tick` collects the slots and each
endpoint's busy time, lets the pure :func:`router.cost.attribute` share out the pool's
provisioned GPU-seconds, adds the result to the Prometheus counters (children bound once) and
to the ledger behind ``GET /admin/cost``.

    servegate_pool_gpu_seconds_total{pool}                 provisioned (ready x GPUs x time)
    servegate_cost_gpu_seconds_total{pool,model,tenant}    busy share + idle share; per pool
                                                           the sum equals the pool's counter
    servegate_cost_idle_gpu_seconds_total{pool,model,tenant}  the idle part of the above
    servegate_cost_dollars_total{pool,model,tenant}        the above at the pool's price
    servegate_cost_requests_total{pool,model,tenant}       answered requests charged
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from gateway.pipeline.runtime import Runtime
from router.cost import (
    ANONYMOUS,
    DemandState,
    Key,
    Ledger,
    PoolInterval,
    attribute,
    report_rows,
    row_doc,
)

log = logging.getLogger("servegate.cost")

MAX_WINDOW_S = 86400.0


class CostSlot:
    """Backend seconds and answered requests of one (pool, model, tenant) since the last tick."""

    __slots__ = ("busy_s", "requests")

    def __init__(self) -> None:
        self.busy_s = 0.0
        self.requests = 0


class _Series:
    """The counter children of one (pool, model, tenant), bound once."""

    __slots__ = ("dollars", "gpu", "idle", "requests")

    def __init__(self, meter: CostMeter, labels: tuple[str, str, str]) -> None:
        self.gpu = meter.gpu_seconds.labels(*labels)
        self.idle = meter.idle_seconds.labels(*labels)
        self.dollars = meter.dollars.labels(*labels)
        self.requests = meter.requests.labels(*labels)


class CostMeter:
    def __init__(self, runtime: Runtime, registry: CollectorRegistry,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 replicas: Callable[[], int] = lambda: 1) -> None:
        self.runtime = runtime
        self._clock = clock
        self._wall = wall
        self._replicas = replicas
        labels = ["pool", "model", "tenant"]
        self.pool_seconds = Counter(
            "servegate_pool_gpu_seconds", "Provisioned GPU-seconds per pool: ready replicas x "
            "GPUs per replica x time (this gateway's share of the fleet)", ["pool"],
            registry=registry)
        self.gpu_seconds = Counter(
            "servegate_cost_gpu_seconds", "GPU-seconds charged: backend busy time plus a share "
            "of the pool's idle time by demand; model=tenant=_idle: idle nobody used",
            labels, registry=registry)
        self.idle_seconds = Counter(
            "servegate_cost_idle_gpu_seconds", "The idle part of servegate_cost_gpu_seconds",
            labels, registry=registry)
        self.dollars = Counter(
            "servegate_cost_dollars", "servegate_cost_gpu_seconds at the pool's price per "
            "GPU-hour (spot or on-demand)", labels, registry=registry)
        self.requests = Counter(
            "servegate_cost_requests", "Answered requests charged, per pool, model and tenant",
            labels, registry=registry)
        # pool -> model -> tenant -> slot: looked up per request without building a key.
        self._slots: dict[str, dict[str, dict[str, CostSlot]]] = {}
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._pool_series: dict[str, Any] = {}
        self._demand: dict[str, DemandState] = {}
        self.ledger = Ledger()
        self._last = clock()

    def slot(self, pool: str, model: str, tenant: str | None) -> CostSlot:
        """The accumulator a call is charged to (``None``: auth is off)."""
        by_model = self._slots.get(pool)
        if by_model is not None:
            by_tenant = by_model.get(model)
            if by_tenant is not None:
                found = by_tenant.get(tenant or ANONYMOUS)
                if found is not None:
                    return found
        by_tenant = self._slots.setdefault(pool, {}).setdefault(model, {})
        return by_tenant.setdefault(tenant or ANONYMOUS, CostSlot())

    def tick(self) -> None:
        """Share out every pool's provisioned GPU-seconds since the last tick."""
        now = self._clock()
        dt, self._last = now - self._last, now
        wall = self._wall()
        share = 1.0 / max(self._replicas(), 1)
        cfg = self.runtime.state.config
        for name, pool in self.runtime.state.pools.items():
            demand, requests = self._collect(name)
            busy = sum(ep.take_busy(now) for ep in pool.endpoints)
            pcost = pool.config.cost
            interval = PoolInterval(dt, pool.admitted_count(), pcost.gpus, busy, demand, share)
            charges, self._demand[name] = attribute(
                interval, self._demand.get(name, DemandState()), cfg.cost.idle_half_life_s)
            self._count(name, charges.rows, charges.provisioned_s, requests, pcost.price)
            self.ledger.add(wall, dt, name, charges, pcost.price, requests)
        self.ledger.tick_done(wall, dt)

    def _collect(self, pool: str) -> tuple[dict[Key, float], dict[Key, int]]:
        demand: dict[Key, float] = {}
        requests: dict[Key, int] = {}
        for model, by_tenant in self._slots.get(pool, {}).items():
            for tenant, s in by_tenant.items():
                if s.requests or s.busy_s:
                    demand[(model, tenant)] = s.busy_s
                    requests[(model, tenant)] = s.requests
                    s.busy_s, s.requests = 0.0, 0
        return demand, requests

    def _count(self, pool: str, rows: dict[Key, Any], provisioned: float,
               requests: dict[Key, int], price: float) -> None:
        ps = self._pool_series.get(pool)
        if ps is None:
            ps = self._pool_series[pool] = self.pool_seconds.labels(pool)
        ps.inc(provisioned)
        per_dollar = price / 3600.0
        for (model, tenant), ch in rows.items():
            s = self._series_of(pool, model, tenant)
            s.gpu.inc(ch.gpu_s)
            s.idle.inc(ch.idle_s)
            s.dollars.inc(ch.gpu_s * per_dollar)
        for (model, tenant), n in requests.items():
            self._series_of(pool, model, tenant).requests.inc(n)

    def _series_of(self, pool: str, model: str, tenant: str) -> _Series:
        key = (pool, model, tenant)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series(self, key)
        return s

    def report(self, window_s: float, window: str) -> dict[str, Any]:
        """The JSON of ``GET /admin/cost?window=...``."""
        rows, pools, covered = self.ledger.window(self._wall(), window_s)
        cfg = self.runtime.state.config
        pool_docs = []
        for name, t in sorted(pools.items()):
            pc = cfg.pools[name].cost if name in cfg.pools else None
            doc = row_doc({"pool": name}, t)
            doc["requests"] = sum(r.requests for k, r in rows.items() if k[0] == name)
            if pc is not None:
                doc.update(capacity=pc.capacity, gpus_per_replica=pc.gpus,
                           price_per_gpu_hour=pc.price)
            pool_docs.append(doc)
        return {"window": window, "window_s": window_s, "accounted_s": covered,
                "tick_s": cfg.cost.tick_s, "pools": pool_docs, "rows": report_rows(rows)}

    async def run(self) -> None:
        """Tick every ``cost.tick_s`` (read again each time: a reload may change it)."""
        while True:
            await asyncio.sleep(self.runtime.state.config.cost.tick_s)
            try:
                self.tick()
            except Exception:  # accounting must never take the gateway down
                log.exception("cost accounting tick failed")
