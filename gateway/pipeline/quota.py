"""Per-tenant rate and concurrency quotas, counted across gateway replicas through Redis.

Where it sits: called by :mod:`gateway.pipeline.admission` for every request of a tenant with a
quota, before the request is read or sent. The decision is local and synchronous (no network on the
request path): each replica counts its own requests per rate window and its own in-flight
requests, and a background task (:meth:`Quotas.run`, every ``sync_s``) pushes those counts to
Redis and reads back the other replicas' share:

    servegate:quota:rate:{tenant}:{window}     INCRBY per window, expires after 3 windows
    servegate:quota:inflight:{tenant}          hash replica -> its in-flight count
    servegate:quota:replicas                   sorted set replica -> last sync (wall clock)

A request is admitted when this replica's counts plus the others' last reported counts fit
the quota (the sliding-window estimate of :mod:`router.tenancy`), so a fleet overshoots by at
most what the other replicas admit within one sync interval. When Redis is down, or has not
answered for ``stale_s``, each replica falls back to its share of the quota (the quota
divided by the replicas it last saw) and counts locally; serving never waits on Redis. When
Redis comes back, the counts resume from the next sync.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.errors import RedisFailed
from adapters.outage import Outage
from adapters.redisio import Redis, close, connect, redis_errors
from contracts.tenancy import TenantConfig
from gateway.errors import Overloaded
from router.tenancy import concurrency_allows, local_share, rate_allows, retry_after_s, window_of

log = logging.getLogger("servegate.quota")

KEY_PREFIX = "servegate:quota:"
REPLICAS_KEY = KEY_PREFIX + "replicas"


def rate_key(tenant: str, window: int) -> str:
    return f"{KEY_PREFIX}rate:{tenant}:{window}"


def inflight_key(tenant: str) -> str:
    return f"{KEY_PREFIX}inflight:{tenant}"


@dataclass
class _Tenant:
    """One tenant's counts on this replica (event-loop confined)."""

    window_s: float = 1.0
    local: dict[int, int] = field(default_factory=dict)  # window -> requests admitted here
    synced: dict[int, int] = field(default_factory=dict)  # window -> of those, pushed
    others: dict[int, int] = field(default_factory=dict)  # window -> other replicas' count
    in_flight: int = 0
    others_in_flight: int = 0

    def prune(self, window: int) -> None:
        for counts in (self.local, self.synced, self.others):
            for w in [w for w in counts if w < window - 1]:
                del counts[w]


class Quotas:
    def __init__(self, replica_id: str, redis_url: str | None = None, sync_s: float = 0.1,
                 stale_s: float = 2.0, clock: Callable[[], float] = time.time) -> None:
        self.replica_id = replica_id
        self.redis_url = redis_url
        self.sync_s = sync_s
        self.stale_s = stale_s
        self._clock = clock
        self._tenants: dict[str, _Tenant] = {}
        self._last_sync: float | None = None  # wall clock of the last successful sync
        self.replicas = 1  # replicas seen at the last sync (for the fallback share)
        self._redis: Redis | None = None
        self.outage = Outage(log, "quota counts in Redis")

    @property
    def shared(self) -> bool:
        """Whether the other replicas' counts are fresh enough to count on."""
        return (self.redis_url is not None and self._last_sync is not None
                and self._clock() - self._last_sync < self.stale_s)

    def acquire(self, tenant: str, cfg: TenantConfig) -> None:
        """Count one request in, or raise :class:`Overloaded` (429) if it is over quota."""
        t = self._tenants.get(tenant)
        if t is None:
            t = self._tenants[tenant] = _Tenant(cfg.window_s)
        t.window_s = cfg.window_s
        shared = self.shared
        replicas = 1 if shared else self.replicas
        if cfg.max_concurrency is not None:
            limit = cfg.max_concurrency
            others = t.others_in_flight if shared else 0
            if not shared:
                limit = max(1, math.floor(local_share(limit, replicas)))
            if not concurrency_allows(limit, t.in_flight, others):
                raise Overloaded(f"tenant '{tenant}' is over its concurrency quota "
                                 f"({cfg.max_concurrency} requests in flight)", "concurrency")
        window = 0
        if cfg.requests_per_s is not None:
            window, elapsed = window_of(self._clock(), cfg.window_s)
            t.prune(window)
            previous = t.local.get(window - 1, 0)
            current = t.local.get(window, 0)
            if shared:
                previous += t.others.get(window - 1, 0)
                current += t.others.get(window, 0)
            limit_w = local_share(cfg.requests_per_s * cfg.window_s, replicas)
            if not rate_allows(limit_w, previous, current, elapsed):
                raise Overloaded(
                    f"tenant '{tenant}' is over its rate quota ({cfg.requests_per_s:g} "
                    "requests/s)", "rate",
                    retry_after_s(limit_w, previous, current, elapsed, cfg.window_s))
            t.local[window] = t.local.get(window, 0) + 1
        t.in_flight += 1

    def release(self, tenant: str) -> None:
        t = self._tenants.get(tenant)
        if t is not None and t.in_flight > 0:
            t.in_flight -= 1

    def in_flight(self, tenant: str) -> int:
        t = self._tenants.get(tenant)
        return t.in_flight if t is not None else 0

    # ------------------------------------------------------------------ Redis sync

    async def run(self) -> None:
        """Sync with Redis every ``sync_s`` until cancelled (nothing to do without Redis)."""
        if self.redis_url is None:
            return
        client = connect(self.redis_url, timeout_s=1.0)
        self._redis = client
        try:
            while True:
                await self.sync_once()
                await asyncio.sleep(self.sync_s)
        finally:
            await close(client)

    async def sync_once(self) -> None:
        client = self._redis
        if client is None:
            return
        now = self._clock()
        try:
            with redis_errors("quota sync"):
                await self._sync(client, now)
        except RedisFailed as exc:
            self.outage.failed(exc, f"each replica enforces its share of {self.replicas}")
            return
        self.outage.ok()
        self._last_sync = now

    async def _sync(self, client: Redis, now: float) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.zadd(REPLICAS_KEY, {self.replica_id: now})
        pipe.zremrangebyscore(REPLICAS_KEY, "-inf", now - 3 * max(self.stale_s, self.sync_s))
        pipe.zrange(REPLICAS_KEY, 0, -1)
        plan: list[tuple[str, _Tenant, int, dict[int, int]]] = []
        for name, t in self._tenants.items():
            window, _ = window_of(now, t.window_s)
            t.prune(window)
            pushed = {w: n - t.synced.get(w, 0) for w, n in t.local.items()
                      if n > t.synced.get(w, 0)}
            ttl = max(1, math.ceil(3 * t.window_s))
            for w, delta in pushed.items():
                pipe.incrby(rate_key(name, w), delta)
                pipe.expire(rate_key(name, w), ttl)
            pipe.mget([rate_key(name, window - 1), rate_key(name, window)])
            pipe.hset(inflight_key(name), self.replica_id, t.in_flight)
            pipe.expire(inflight_key(name), ttl + 10)
            pipe.hgetall(inflight_key(name))
            plan.append((name, t, window, pushed))
        results = await pipe.execute()
        alive = {r.decode() if isinstance(r, bytes) else str(r) for r in results[2]}
        self.replicas = max(len(alive), 1)
        pos = 3
        for _name, t, window, pushed in plan:
            pos += 2 * len(pushed)
            totals = results[pos]
            counts_in = results[pos + 3]
            pos += 4
            for w, delta in pushed.items():
                t.synced[w] = t.synced.get(w, 0) + delta
            for w, total in zip((window - 1, window), totals, strict=True):
                fleet = int(total or 0)
                t.others[w] = max(fleet - t.synced.get(w, 0), 0)
            others = 0
            for replica, count in counts_in.items():
                rid = replica.decode() if isinstance(replica, bytes) else str(replica)
                if rid != self.replica_id and rid in alive:
                    others += int(count)
            t.others_in_flight = others
