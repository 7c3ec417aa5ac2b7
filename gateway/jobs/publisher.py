"""Publishing this replica's counters to Redis for the autoscaler (fleet-wide signals).

Where it sits: a background task of the gateway process when ``--redis-url`` is set. Every
interval it reads the replica's own Prometheus registry (requests and latency buckets per
model, in-flight per model, requests held per pool), groups models by the pool that serves
them, and writes the hash of :mod:`contracts.gatewaystats` (``DEL``, ``HSET``, ``PEXPIRE`` in one
transaction, TTL a few intervals, so a dead replica disappears). The autoscaler sums the
hashes of all replicas, so its p99 comes from fleet-wide bucket deltas. Serving never depends
on this: while Redis is down every interval fails fast (one immediate retry, no backoff), the
outage is logged once (then once a minute, :class:`adapters.outage.Outage`), and the first
interval after Redis is back publishes again; an unexpected error is logged, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict

from adapters.errors import RedisFailed
from adapters.outage import Outage
from adapters.redisio import close, connect, redis_errors
from contracts.gatewaystats import (
    DEFAULT_TTL_S,
    KEY_PREFIX,
    GatewayStats,
    ModelCounters,
    build_hash_fields,
    stats_key,
)
from gateway.metrics import GatewayMetrics
from gateway.pipeline.runtime import Runtime

log = logging.getLogger("servegate.publisher")


def snapshot(metrics: GatewayMetrics, runtime: Runtime, source: str, at: float) -> GatewayStats:
    """This replica's counters now, keyed by (pool, model)."""
    requests: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    in_flight: dict[str, float] = {}
    queued: dict[str, float] = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            model = s.labels.get("model", "")
            if s.name == "servegate_requests_total":
                requests[model] += s.value
            elif s.name == "servegate_request_duration_seconds_bucket":
                le = s.labels["le"]
                buckets[model][math.inf if le == "+Inf" else float(le)] += s.value
            elif s.name == "servegate_in_flight_requests":
                in_flight[model] = s.value
            elif s.name == "servegate_queued_requests" and s.value:
                queued[s.labels["pool"]] = s.value
    table = runtime.state.table
    models: dict[tuple[str, str], ModelCounters] = {}
    for route in table.routes():
        if route.version or (route.model not in requests and route.model not in in_flight):
            continue
        models[(route.pool, route.model)] = ModelCounters(
            in_flight=in_flight.get(route.model, 0.0), requests=requests.get(route.model, 0.0),
            buckets=tuple(sorted(buckets.get(route.model, {}).items())))
    return GatewayStats(source, at, models, queued)


class Publisher:
    def __init__(self, redis_url: str, replica_id: str, metrics: GatewayMetrics,
                 runtime: Runtime, interval_s: float = 1.0, prefix: str = KEY_PREFIX) -> None:
        self._redis = connect(redis_url, timeout_s=1.0)
        self.outage = Outage(log, "redis (gateway counters for the autoscaler)")
        self.published = 0  # successful intervals
        self.key = stats_key(replica_id, prefix)
        self.replica_id = replica_id
        self.metrics = metrics
        self.runtime = runtime
        self.interval_s = interval_s
        self.ttl_ms = int(max(DEFAULT_TTL_S, interval_s * 5) * 1000)

    async def publish_once(self) -> None:
        fields = build_hash_fields(snapshot(self.metrics, self.runtime, self.replica_id,
                                            time.time()))
        with redis_errors("publish counters"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.key)
                pipe.hset(self.key, mapping=fields)  # type: ignore[arg-type]
                pipe.pexpire(self.key, self.ttl_ms)
                await pipe.execute()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.publish_once()
                except RedisFailed as exc:
                    self.outage.failed(exc, "the autoscaler sees no counters from this replica")
                except Exception:  # a bug here must not end publishing for good
                    log.exception("publishing gateway counters failed")
                else:
                    self.published += 1
                    self.outage.ok()
                await asyncio.sleep(self.interval_s)
        finally:
            await close(self._redis)
