"""Telling the autoscaler that a pool at zero has demand, the moment it arrives.

Where it sits: called by :class:`gateway.pipeline.coldstart.ColdStart` when the first request of a
cold start is held. Fire and forget: the request keeps waiting whatever happens here, and a
failure is logged, once per outage (the autoscaler also sees ``servegate_queued_requests``
when it scrapes, and the Redis counters once they are back).

- ``POST {autoscaler_url}/activate`` with ``{"pool": name}`` (the sidecar's status server);
- ``PUBLISH servegate:activate <pool>`` when the gateway has a Redis URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import urlsplit

from adapters.errors import RedisFailed
from adapters.outage import Outage
from adapters.redisio import close, connect, redis_errors
from gateway.adapters.upstream import Upstream
from gateway.errors import UpstreamError

log = logging.getLogger("servegate.activation")

CHANNEL = "servegate:activate"


class Activator:
    def __init__(self, upstream: Upstream, autoscaler_url: str | None = None,
                 redis_url: str | None = None) -> None:
        self.upstream = upstream
        self._target: tuple[str, int] | None = None
        if autoscaler_url:
            parts = urlsplit(autoscaler_url)
            self._target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._redis = connect(redis_url, timeout_s=1.0) if redis_url else None
        self._tasks: set[asyncio.Task[None]] = set()
        self.http_outage = Outage(log, "autoscaler /activate")
        self.redis_outage = Outage(log, "redis activation channel")

    def __call__(self, pool: str) -> None:
        task = asyncio.get_running_loop().create_task(self._send(pool))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, pool: str) -> None:
        if self._target is not None:
            body = json.dumps({"pool": pool}).encode()
            try:
                resp = await self.upstream.request(
                    *self._target, b"POST", b"/activate",
                    [(b"content-type", b"application/json")], body, 0.5, 2.0)
                if resp.status >= 300:
                    log.warning("activation of %s: autoscaler answered %d", pool, resp.status)
                self.http_outage.ok()
            except UpstreamError as exc:
                self.http_outage.failed(exc, f"activation of {pool} not sent")
        if self._redis is not None:
            try:
                with redis_errors("publish activation"):
                    await self._redis.publish(CHANNEL, pool)
            except RedisFailed as exc:
                self.redis_outage.failed(exc, f"activation of {pool} not sent")
            else:
                self.redis_outage.ok()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._redis is not None:
            await close(self._redis)
