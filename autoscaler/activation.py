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
from collections.abc import Callable

from adapters.errors import RedisFailed
from adapters.redisio import Redis, close, connect, subscribe

log = logging.getLogger(__name__)

CHANNEL = "servegate:activate"


async def _listen(client: Redis, channel: str, activate: Callable[[str, str], bool]) -> None:
    log.info("listening for activations on Redis channel %s", channel)
    async for pool in subscribe(client, channel):
        if not activate(pool.strip(), "redis"):
            log.warning("activation for unknown pool %r ignored", pool)


async def subscribe_activations(url: str, activate: Callable[[str, str], bool],
                                channel: str = CHANNEL, max_backoff_s: float = 10.0) -> None:
    """Run until cancelled, calling ``activate(pool, "redis")`` for each message."""
    backoff = 0.5
    while True:
        client = connect(url, timeout_s=2.0)
        try:
            await _listen(client, channel, activate)
        except RedisFailed as exc:
            log.warning("Redis activation channel: %s; again in %.1fs", exc, backoff)
        finally:
            await close(client)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff_s)
