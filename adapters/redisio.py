"""The one Redis adapter: how clients are made, and the one place Redis errors are translated.

Where it sits: under every Redis user of both processes - the gateway's shared traffic state
(``gateway.adapters.state``), its quota counts (``gateway.pipeline.quota``), its counter
publisher (``gateway.jobs.publisher``) and activation signal (``gateway.adapters.activation``);
the autoscaler's counter reader (``autoscaler.signals.redis_stats``) and activation listener
(``autoscaler.activation``). No other module imports ``redis``. Users call the client's
commands inside :func:`redis_errors`, which raises :class:`adapters.errors.RedisFailed` (or
:class:`~adapters.errors.RedisUnavailable` when Redis did not answer); each user turns that into
its own package's error or logs it through one :class:`adapters.outage.Outage`.

Every client has socket timeouts on connect and on each call, and retries a command once at
once (a pooled connection may have died with a restarted Redis), never with a backoff: callers
run on their own cadence and must not stall while Redis is down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as _ConnectionError
from redis.exceptions import RedisError as _RedisError
from redis.exceptions import TimeoutError as _TimeoutError

from adapters.errors import RedisFailed, RedisUnavailable

Redis = aioredis.Redis


def connect(url: str, *, timeout_s: float = 1.0, decode: bool = False) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``); connects lazily."""
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        decode_responses=decode, retry=Retry(NoBackoff(), 1))


@contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Translate what the ``redis`` library (and the socket under it) raises."""
    try:
        yield
    except _TimeoutError as exc:
        raise RedisUnavailable(what, "timed out") from exc
    except (_ConnectionError, OSError) as exc:
        raise RedisUnavailable(what, f"unreachable: {exc}") from exc
    except _RedisError as exc:
        raise RedisFailed(what, str(exc)) from exc


async def subscribe(client: Redis, channel: str, poll_s: float = 1.0) -> AsyncIterator[str]:
    """Each message published on ``channel``, as text, until the caller stops iterating or
    the connection fails (:class:`RedisFailed`); the subscription is closed either way."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        with redis_errors(f"subscribe {channel}"):
            await pubsub.subscribe(channel)
        while True:
            with redis_errors(f"listen {channel}"):
                message = await pubsub.get_message(timeout=poll_s)
            if message is not None:
                data = message.get("data")
                yield data.decode(errors="replace") if isinstance(data, bytes) else str(data)
    finally:
        # Typed in redis >= 8.2, untyped before: a typed alias type-checks under both.
        close_pubsub: Callable[[], Awaitable[None]] = pubsub.aclose
        with suppress(Exception):
            await close_pubsub()


async def close(client: Redis) -> None:
    """Close a client, whatever state its connections are in."""
    with suppress(Exception):
        await client.aclose()
