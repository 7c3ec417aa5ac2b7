"""Read every gateway replica's published counters from Redis (schema: contracts.gatewaystats).

Where it sits: the collector's gateway source when ``autoscaling.signals.redis_url`` is set
(the alternative to scraping each replica's ``/metrics``). One read ``SCAN`` s the replicas'
hashes (``<prefix><gateway id>``, kept alive by their TTL), fetches them in one pipeline and
hands each as :class:`contracts.gatewaystats.GatewayStats` to the
:class:`~autoscaler.signals.gateway.GatewayCollector`. A hash older than ``stale_after_s`` (by
its ``ts``) is skipped; one that does not parse is reported and skipped. Redis errors (translated by
:mod:`adapters.redisio`) become :class:`~autoscaler.errors.ScrapeError` here, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from adapters.errors import RedisFailed
from adapters.redisio import Redis, redis_errors
from autoscaler.errors import ParseError, ScrapeError, SignalError
from autoscaler.signals.gateway import GatewayCollector
from contracts.gatewaystats import KEY_PREFIX, GatewayStats, parse_hash_fields


@contextmanager
def scrape_errors(source: str) -> Iterator[None]:
    """Redis failures (translated by :mod:`adapters.redisio`) as a :class:`ScrapeError`."""
    try:
        with redis_errors("read gateway counters"):
            yield
    except RedisFailed as exc:
        raise ScrapeError(source, str(exc)) from exc


@dataclass
class RedisRead:
    stats: list[GatewayStats] = field(default_factory=list)
    errors: list[SignalError] = field(default_factory=list)


class RedisStatsReader:
    def __init__(self, client: Redis, prefix: str = KEY_PREFIX,
                 stale_after_s: float = 10.0) -> None:
        self.client = client
        self.prefix = prefix
        self.stale_after_s = stale_after_s

    async def read(self, now: float) -> RedisRead:
        """Every replica's fresh stats; raises :class:`ScrapeError` if Redis fails."""
        source = f"redis {self.prefix}*"
        with scrape_errors(source):
            keys = [k async for k in self.client.scan_iter(match=self.prefix + "*", count=100)]
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            hashes = await pipe.execute() if keys else []
        out = RedisRead()
        for key, fields in zip(keys, hashes, strict=True):
            name = key.decode() if isinstance(key, bytes) else str(key)
            gateway_id = name[len(self.prefix):]
            if not fields:
                continue  # expired between SCAN and HGETALL
            try:
                stats = parse_hash_fields(gateway_id, fields)
            except ValueError as exc:
                out.errors.append(ParseError(name, str(exc)))
                continue
            if now - stats.at <= self.stale_after_s:
                out.stats.append(stats)
        return out

    async def read_into(self, collector: GatewayCollector, now: float) -> list[SignalError]:
        """Read and record; replicas whose hash is gone are forgotten."""
        try:
            result = await self.read(now)
        except ScrapeError as exc:
            return [exc]
        for stats in result.stats:
            collector.record(stats)
        collector.forget(s.source for s in result.stats)
        return result.errors
