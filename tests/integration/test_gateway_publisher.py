"""A gateway replica publishes its counters to a real Redis in the autoscaler's schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis
import tritonclient.http as httpclient

from contracts.gatewaystats import parse_hash_fields, stats_key
from servegate.local.launch import TritonProcess
from tests.conftest import pool_config
from tests.harness import RedisProcess, start_gateway, wait_for

pytestmark = pytest.mark.integration


def test_counters_reach_redis(triton_pool: list[TritonProcess], redis_server: RedisProcess,
                              tmp_path: Path) -> None:
    gw = start_gateway(pool_config(triton_pool), tmp_path / "gw",
                       "--redis-url", redis_server.url, "--replica-id", "gw-a")
    try:
        client = httpclient.InferenceServerClient(gw.http)
        inp = httpclient.InferInput("INPUT", [1, 16], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 16), np.float32))
        for _ in range(20):
            client.infer("classifier", [inp])
        r = redis.Redis.from_url(redis_server.url, decode_responses=True)
        key = stats_key("gw-a")

        def published() -> float:
            fields = r.hgetall(key)
            if not fields:
                return 0.0
            stats = parse_hash_fields("gw-a", fields)
            counters = stats.models.get(("cpu", "classifier"))
            return counters.requests if counters else 0.0

        wait_for(lambda: published() >= 20, 10, "20 requests in the published counters")
        stats = parse_hash_fields("gw-a", r.hgetall(key))
        counters = stats.models[("cpu", "classifier")]
        assert counters.buckets and counters.buckets[-1][1] == counters.requests
        assert 0 < r.pttl(key) <= 15_000  # a dead replica's counters expire
    finally:
        gw.stop()
