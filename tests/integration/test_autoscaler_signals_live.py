"""The autoscaler's signal readers against real servers: Triton's /metrics, the gateway's
/metrics, and gateway counters published to (and read back from) a real Redis."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
import tritonclient.http as triton_http

from autoscaler.errors import ScrapeError
from autoscaler.policy import NoData
from autoscaler.signals import promtext
from autoscaler.signals.gateway import GatewayCollector, GatewayScraper, PoolMap
from autoscaler.signals.redis_stats import RedisStatsReader
from autoscaler.signals.triton import TritonCollector, TritonScraper, metrics_endpoints
from contracts import parse_config
from contracts.gatewaystats import GatewayStats, ModelCounters, build_hash_fields, stats_key
from servegate.local.launch import TritonProcess, free_port
from tests.conftest import pool_config
from tests.harness import GatewayProcess, RedisProcess, http_get, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture()
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def classify(target: str, batches: list[int]) -> None:
    c = triton_http.InferenceServerClient(target)
    try:
        for n in batches:
            inp = triton_http.InferInput("INPUT", [n, 16], "FP32")
            inp.set_data_from_numpy(np.ones((n, 16), dtype=np.float32))
            c.infer("classifier", [inp])
    finally:
        c.close()


def test_prometheus_parser_reads_a_live_triton(triton_pool: list[TritonProcess]) -> None:
    status, body = http_get(f"http://{triton_pool[0].metrics}/metrics")
    assert status == 200
    samples = promtext.parse(body.decode(), triton_pool[0].metrics)
    names = {s.name for s in samples}
    for counter in ("nv_inference_request_success", "nv_inference_count",
                    "nv_inference_exec_count", "nv_inference_queue_duration_us"):
        assert counter + "_total" in names  # the parser's spelling; lookups accept both
        assert promtext.total(samples, counter, model="classifier") is not None
    assert promtext.total(samples, "nv_inference_pending_request_count",
                          model="classifier") is not None


async def test_triton_signals_live(triton_pool: list[TritonProcess],
                                   client: httpx.AsyncClient) -> None:
    config = parse_config(pool_config(triton_pool))
    collector = TritonCollector(stale_after_s=30.0)
    scraper = TritonScraper(metrics_endpoints(config), collector, client, timeout_s=5.0)
    assert await scraper.scrape(time.time()) == []
    classify(triton_pool[0].http, [1, 2, 3, 4] * 5)  # 20 requests, 50 inferences
    assert await scraper.scrape(time.time() + 0.001) == []
    limit = await scraper.learn_batch_limit(triton_pool[0].http, "classifier")
    assert limit == 64
    r = collector.read("cpu", time.time(), "classifier", scraper.batch_limits)
    assert r.endpoints == 2 and r.pending == 0
    assert r.avg_batch == pytest.approx(2.5)  # sequential requests: one execution each
    assert r.batch_fill == pytest.approx(2.5 / 64)
    assert isinstance(r.queue_time_s, float) and 0 <= r.queue_time_s < 1.0
    assert isinstance(r.gpu_utilization, NoData)  # CPU-only Triton: no data, not zero


async def test_unreachable_endpoints_are_errors_and_no_data(client: httpx.AsyncClient) -> None:
    dead = f"127.0.0.1:{free_port()}"
    collector = TritonCollector()
    scraper = TritonScraper({dead: ("cpu", dead)}, collector, client, timeout_s=1.0)
    errors = await scraper.scrape(time.time())
    assert len(errors) == 1 and isinstance(errors[0], ScrapeError)
    assert dead in str(errors[0]) and errors[0].__cause__ is not None
    assert isinstance(collector.read("cpu", time.time()).pending, NoData)


async def test_gateway_signals_live(gateway: GatewayProcess, client: httpx.AsyncClient) -> None:
    config = parse_config(gateway.extra["config"])
    collector = GatewayCollector(stale_after_s=60.0, p99_window_s=60.0)
    scraper = GatewayScraper([gateway.url], PoolMap.from_config(config), collector, client,
                             timeout_s=5.0)
    t0 = time.time()
    assert await scraper.scrape(t0) == []
    classify(gateway.http, [1] * 30)
    elapsed = time.time() - t0
    assert await scraper.scrape(t0 + elapsed) == []
    r = collector.read("cpu", t0 + elapsed, model="classifier")
    assert r.replicas == 1 and r.in_flight == 0
    assert isinstance(r.arrival_rate, float)
    assert r.arrival_rate == pytest.approx(30 / elapsed, rel=0.01)
    assert isinstance(r.p99_s, float) and 0 < r.p99_s <= 1.0
    assert r.queued == 0.0  # servegate_queued_requests: nothing held by the cold-start buffer


# --------------------------------------------------------------------------------------------
# Redis: the gateway side writes build_hash_fields, the autoscaler reads them back
# --------------------------------------------------------------------------------------------

PREFIX = "test:gwstats:"


def publish(r: redis.Redis, stats: GatewayStats, ttl_ms: int = 15_000,
            prefix: str = PREFIX) -> None:
    """What a gateway replica's publisher does each interval (one transaction)."""
    key = stats_key(stats.source, prefix)
    with r.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping=build_hash_fields(stats))  # type: ignore[arg-type]
        pipe.pexpire(key, ttl_ms)
        pipe.execute()


def counters(requests: float, fast: float, slow: float, in_flight: float = 0) -> ModelCounters:
    return ModelCounters(in_flight, requests, ((0.01, fast), (0.1, fast), (1.0, fast + slow),
                                               (math.inf, fast + slow)))


async def test_redis_stats_round_trip_across_replicas(redis_server: RedisProcess) -> None:
    r = redis.Redis.from_url(redis_server.url)
    async_client = aioredis.from_url(redis_server.url)
    try:
        r.delete(*r.keys(PREFIX + "*") or ["-"])
        reader = RedisStatsReader(async_client, PREFIX, stale_after_s=10.0)
        collector = GatewayCollector(stale_after_s=10.0, p99_window_s=10.0)
        now = time.time()
        for gw in ("gw-a", "gw-b"):
            publish(r, GatewayStats(gw, now - 5, {("cpu", "m"): counters(0, 0, 0)}))
        assert await reader.read_into(collector, now - 5) == []
        publish(r, GatewayStats("gw-a", now, {("cpu", "m"): counters(990, 990, 0, 2)},
                                {"cpu": 4}))
        publish(r, GatewayStats("gw-b", now, {("cpu", "m"): counters(10, 0, 10, 1)}))
        r.hset(PREFIX + "gw-broken", mapping={"v": "1", "ts": str(now), "m:cpu": "x"})
        publish(r, GatewayStats("gw-old", now - 60, {("cpu", "m"): counters(5, 5, 0)}))
        errors = await reader.read_into(collector, now)
        assert len(errors) == 1 and "gw-broken" in str(errors[0])
        reading = collector.read("cpu", now)
        assert reading.replicas == 2 and reading.in_flight == 3 and reading.queued == 4
        assert reading.arrival_rate == pytest.approx(1000 / 5)
        assert reading.p99_s == pytest.approx(0.01)  # the fleet's p99, from summed deltas
    finally:
        await async_client.aclose()
        r.close()


async def test_expired_replicas_are_forgotten(redis_server: RedisProcess) -> None:
    r = redis.Redis.from_url(redis_server.url)
    async_client = aioredis.from_url(redis_server.url)
    try:
        reader = RedisStatsReader(async_client, "expiry:", stale_after_s=10.0)
        collector = GatewayCollector()
        publish(r, GatewayStats("gw-x", time.time(), {("cpu", "m"): counters(1, 1, 0)}),
                ttl_ms=300, prefix="expiry:")
        await reader.read_into(collector, time.time())
        assert collector.read("cpu", time.time()).replicas == 1
        wait_for(lambda: not r.exists("expiry:gw-x"), 5, "the hash to expire")
        await reader.read_into(collector, time.time())
        assert collector.read("cpu", time.time()).replicas == 0
    finally:
        await async_client.aclose()
        r.close()


async def test_unreachable_redis_is_a_scrape_error() -> None:
    async_client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0",
                                     socket_connect_timeout=1)
    try:
        reader = RedisStatsReader(async_client)
        errors = await reader.read_into(GatewayCollector(), time.time())
        assert len(errors) == 1 and isinstance(errors[0], ScrapeError)
        assert "Redis" in str(errors[0]) and errors[0].__cause__ is not None
    finally:
        await async_client.aclose()
