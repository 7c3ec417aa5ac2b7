"""Gateway signals per pool and model: in-flight, arrival rate, queued, fleet-wide p99.

Where it sits: the collector's gateway half. Every gateway replica's counters arrive as
:class:`contracts.gatewaystats.GatewayStats` - from Redis (:mod:`.redis_stats`) or from a scrape
of the replica's ``/metrics`` (:class:`GatewayScraper` here, mapped to pools with the shared
config) - and :class:`GatewayCollector` keeps a short history per replica. Reading a pool
sums the replicas' fresh numbers: gauges as they are, counters as deltas between a replica's
snapshots, and p99 from the *sum of the replicas' bucket deltas* over the p99 window, so it is
the fleet's p99, not an average of per-replica quantiles. A replica whose latest snapshot is
older than ``stale_after_s`` is left out; with none left a reading is :class:`NoData`.

From ``/metrics`` (names exported by ``gateway/metrics.py``):

- ``servegate_in_flight_requests{model}`` -> the model's pool (its default route);
- ``servegate_requests_total{model,endpoint,...}`` -> the pool serving ``endpoint`` (else the
  model's), plus ``servegate_rejected_requests_total{model,code=5xx}`` (e.g. no endpoint while
  a pool is at zero: demand the pool did not serve) -> the model's pool;
- ``servegate_request_duration_seconds_bucket{model,endpoint,le}`` -> as requests;
- ``servegate_queued_requests{pool}`` (optional; requests the gateway holds): absent -> no data.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import httpx

from autoscaler.errors import SignalError
from autoscaler.policy.spec import NoData, Reading
from autoscaler.signals import promtext
from autoscaler.signals.http import get_text, metrics_url
from contracts import metrics as metric_names
from contracts.config import Config
from contracts.gatewaystats import GatewayStats, ModelCounters

Key = tuple[str, str]  # (pool, model)
IN_FLIGHT = metric_names.IN_FLIGHT
REQUESTS = metric_names.REQUESTS
REJECTED = metric_names.REJECTED
LATENCY_BUCKET = metric_names.REQUEST_DURATION + "_bucket"
QUEUED = metric_names.QUEUED


@dataclass(frozen=True)
class PoolMap:
    """Which pool a model's requests count for: by endpoint address, else the model's route."""

    model_pool: Mapping[str, str]
    endpoint_pool: Mapping[str, str]

    @staticmethod
    def from_config(config: Config) -> PoolMap:
        endpoints: dict[str, str] = {}
        for name, pool in config.pools.items():
            for ep in pool.endpoints:
                for address in (ep.http, ep.grpc):
                    if address is not None:
                        endpoints.setdefault(address, name)
        return PoolMap({m: r.pool for m, r in config.models.items()}, endpoints)

    def pool_of(self, model: str, endpoint: str = "") -> str | None:
        return self.endpoint_pool.get(endpoint) or self.model_pool.get(model)


def _classify(s: promtext.Sample, pools: PoolMap) -> tuple[str, Key] | None:
    """Which counter a sample feeds (in_flight / requests / bucket) and for which key."""
    model, endpoint = s.labels.get("model", ""), s.labels.get("endpoint", "")
    if promtext.matches(s, IN_FLIGHT, {}):
        kind, pool = "in_flight", pools.pool_of(model)
    elif promtext.matches(s, REQUESTS, {}):
        kind, pool = "requests", pools.pool_of(model, endpoint)
    elif promtext.matches(s, REJECTED, {}) and s.labels.get("code", "").startswith("5"):
        kind, pool = "requests", pools.pool_of(model)
    elif s.name == LATENCY_BUCKET:
        kind, pool = "bucket", pools.pool_of(model, endpoint)
    else:
        return None
    return None if pool is None else (kind, (pool, model))


def stats_from_samples(samples: Sequence[promtext.Sample], source: str, at: float,
                       pools: PoolMap) -> GatewayStats:
    """One replica's :class:`GatewayStats` from its parsed ``/metrics``."""
    sums: dict[str, dict[Key, float]] = {"in_flight": {}, "requests": {}}
    buckets: dict[Key, dict[float, float]] = {}
    for s in samples:
        found = _classify(s, pools)
        if found is None:
            continue
        kind, key = found
        if kind == "bucket":
            le = promtext.parse_le(s.labels.get("le", "+Inf"))
            by_le = buckets.setdefault(key, {})
            by_le[le] = by_le.get(le, 0.0) + s.value
        else:
            sums[kind][key] = sums[kind].get(key, 0.0) + s.value
    in_flight, requests = sums["in_flight"], sums["requests"]
    models = {k: ModelCounters(in_flight.get(k, 0.0), requests.get(k, 0.0),
                               tuple(sorted(buckets.get(k, {}).items())))
              for k in in_flight.keys() | requests.keys() | buckets.keys()}
    queued = {s.labels.get("pool", ""): s.value for s in promtext.select(samples, QUEUED)}
    return GatewayStats(source, at, models, queued)


@dataclass(frozen=True, slots=True)
class GatewayReading:
    in_flight: Reading
    arrival_rate: Reading  # requests/s
    queued: Reading
    p99_s: Reading
    replicas: int  # gateway replicas with fresh numbers


def _keys(stats: GatewayStats, pool: str, model: str | None) -> list[Key]:
    return [k for k in stats.models if k[0] == pool and (model is None or k[1] == model)]


def _requests(stats: GatewayStats, keys: Iterable[Key]) -> float:
    return sum(stats.models[k].requests for k in keys if k in stats.models)


def _buckets(stats: GatewayStats, keys: Iterable[Key]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for k in keys:
        if k in stats.models:
            out = promtext.add_buckets(out, stats.models[k].buckets)
    return out


class GatewayCollector:
    """Recent :class:`GatewayStats` per gateway replica; pool readings summed over replicas.

    Pure bookkeeping: stats come in through :meth:`record`, time through ``now``.
    """

    def __init__(self, stale_after_s: float = 10.0, p99_window_s: float = 10.0) -> None:
        self.stale_after_s = stale_after_s
        self.p99_window_s = p99_window_s
        self._history: dict[str, deque[GatewayStats]] = {}

    def record(self, stats: GatewayStats) -> None:
        history = self._history.setdefault(stats.source, deque())
        if history and stats.at <= history[-1].at:
            return  # the same publish read twice, or out of order
        history.append(stats)
        keep = stats.at - self.p99_window_s - self.stale_after_s
        while len(history) > 2 and history[1].at <= keep:
            history.popleft()

    def forget(self, keep_sources: Iterable[str]) -> None:
        """Drop replicas that are gone (no longer listed, or their key expired)."""
        keep = set(keep_sources)
        for source in [s for s in self._history if s not in keep]:
            del self._history[source]

    def _fresh(self, now: float) -> list[deque[GatewayStats]]:
        return [h for h in self._history.values()
                if h and now - h[-1].at <= self.stale_after_s]

    def read(self, pool: str, now: float, model: str | None = None) -> GatewayReading:
        fresh = self._fresh(now)
        if not fresh:
            gone = NoData(f"no gateway stats newer than {self.stale_after_s:g}s")
            return GatewayReading(gone, gone, gone, gone, 0)
        latest = [h[-1] for h in fresh]
        in_flight = sum(s.models[k].in_flight for s in latest for k in _keys(s, pool, model))
        return GatewayReading(float(in_flight), self._rate(fresh, pool, model),
                              self._queued(latest, pool), self._p99(fresh, pool, model),
                              len(fresh))

    @staticmethod
    def _queued(latest: list[GatewayStats], pool: str) -> Reading:
        reported = [s.queued[pool] for s in latest if pool in s.queued]
        return sum(reported) if reported else NoData("the gateway reports no queue")

    @staticmethod
    def _rate(fresh: list[deque[GatewayStats]], pool: str, model: str | None) -> Reading:
        rate, measured = 0.0, False
        for h in fresh:
            if len(h) < 2:
                continue
            before, now = h[-2], h[-1]
            keys = set(_keys(before, pool, model)) | set(_keys(now, pool, model))
            delta = promtext.counter_delta(_requests(before, keys), _requests(now, keys))
            rate += delta / (now.at - before.at)
            measured = True
        return rate if measured else NoData("need two snapshots for a rate")

    def _p99(self, fresh: list[deque[GatewayStats]], pool: str, model: str | None) -> Reading:
        total: list[tuple[float, float]] = []
        measured = False
        for h in fresh:
            if len(h) < 2:
                continue
            now = h[-1]
            base = next((s for s in reversed(h) if s.at <= now.at - self.p99_window_s), h[0])
            keys = set(_keys(base, pool, model)) | set(_keys(now, pool, model))
            gained = promtext.buckets_delta(_buckets(base, keys), _buckets(now, keys))
            total = promtext.add_buckets(total, gained)
            measured = True
        if not measured:
            return NoData("need two snapshots for a p99")
        p99 = promtext.quantile(0.99, total)
        if p99 is None or math.isnan(p99):
            return NoData(f"no requests in the last {self.p99_window_s:g}s", idle=True)
        return p99


class GatewayScraper:
    """Scrapes every gateway replica's ``/metrics`` into a :class:`GatewayCollector`."""

    def __init__(self, urls: Sequence[str], pools: PoolMap, collector: GatewayCollector,
                 client: httpx.AsyncClient, timeout_s: float = 1.0) -> None:
        self.urls = [metrics_url(u) for u in urls]
        self.pools = pools
        self.collector = collector
        self.client = client
        self.timeout_s = timeout_s

    async def scrape(self, now: float) -> list[SignalError]:
        """One round over every replica; returns the failures (the collector ages them out)."""
        results = await asyncio.gather(*(self._one(url, now) for url in self.urls))
        return [r for r in results if r is not None]

    async def _one(self, url: str, now: float) -> SignalError | None:
        try:
            text = await get_text(self.client, url, self.timeout_s)
            samples = promtext.parse(text, url)
        except SignalError as exc:
            return exc
        self.collector.record(stats_from_samples(samples, url, now, self.pools))
        return None
