"""Activations over a real Redis: a message on ``servegate:activate`` has the effect of
``POST /activate`` (the pool at zero is scaled to one at once)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from autoscaler.main import Autoscaler, AutoscalerSettings
from contracts import parse_config
from tests.harness import RedisProcess

pytestmark = pytest.mark.integration


async def test_redis_message_activates_the_pool(redis_server: RedisProcess,
                                                tmp_path: Path) -> None:
    config = parse_config({
        "pools": {"cpu": {"endpoints": []}}, "models": {"m": {"pool": "cpu"}},
        "autoscaling": {"controller": {"tick_s": 30},
                        "pools": {"cpu": {"targets": {"concurrency_per_replica": 4}}}}})
    settings = AutoscalerSettings(tmp_path / "sg.yaml", actuator="hpa", host="127.0.0.1",
                                  status_port=0, redis_url=redis_server.url)
    stop = asyncio.Event()
    async with Autoscaler(settings, config=config) as a:
        run = asyncio.create_task(a.run(stop))
        actuator: Any = a.actuator
        client = aioredis.from_url(redis_server.url)
        try:
            async with asyncio.timeout(5):
                while await client.pubsub_numsub("servegate:activate") == [
                        (b"servegate:activate", 0)]:
                    await asyncio.sleep(0.02)
                await client.publish("servegate:activate", "nope")  # unknown: ignored
                await client.publish("servegate:activate", "cpu")
                while await actuator.current("cpu") == 0:
                    await asyncio.sleep(0.01)
        finally:
            await client.aclose()
        assert a.controller is not None
        assert a.controller.pools["cpu"].activations == 1
        last = a.controller.pools["cpu"].last
        assert last is not None and last.dominant == "activation"
        stop.set()
        await asyncio.wait_for(run, 5)
