"""Activations over Redis: the gateway publishes a pool name on ``servegate:activate``.

Where it sits: one task in the autoscaler's task group when ``--redis-url`` is given (the
other way in is ``POST /activate``). Each message is a pool name and has the same effect as
the HTTP call: :meth:`autoscaler.loop.Controller.activate`. Redis errors are logged and the
subscription is retried with a backoff (0.5 s doubling to 10 s); cancelling the task closes
the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANNEL = "servegate:activate"


async def _listen(client: aioredis.Redis, channel: str,
                  activate: Callable[[str, str], bool]) -> None:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(channel)
        log.info("listening for activations on Redis channel %s", channel)
        async for message in pubsub.listen():
            data = message.get("data")
            pool = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
            if not activate(pool.strip(), "redis"):
                log.warning("activation for unknown pool %r ignored", pool)
    finally:
        # Typed in redis >= 8.2, untyped before: a typed alias type-checks under both.
        close: Callable[[], Awaitable[None]] = pubsub.aclose
        await close()


async def subscribe_activations(url: str, activate: Callable[[str, str], bool],
                                channel: str = CHANNEL, max_backoff_s: float = 10.0) -> None:
    """Run until cancelled, calling ``activate(pool, "redis")`` for each message."""
    backoff = 0.5
    while True:
        client = aioredis.from_url(url, socket_connect_timeout=2.0, health_check_interval=15)
        try:
            await _listen(client, channel, activate)
        except (RedisError, OSError) as exc:
            log.warning("Redis activation channel: %s; again in %.1fs", exc, backoff)
        finally:
            await client.aclose()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff_s)
