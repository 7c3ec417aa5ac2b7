"""Active health checks: ``GET /v2/health/ready`` on every endpoint, each at its pool's interval.

Where it sits: a background task owned by the server runner. Results go through
:mod:`router.health` (pure); together with the proxy's passive failure reports and half-open
trials (the circuit breaker, which alone brings endpoints back when probes are off) they decide
which endpoints the balancer may pick. It re-reads the runtime snapshot on every tick, so
endpoints added or removed by a reload are probed (or forgotten) without restarting it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.adapters.upstream import Upstream
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.pipeline.coldstart import ColdStart
from gateway.pipeline.pools import Endpoint, Pool
from gateway.pipeline.runtime import Runtime

log = logging.getLogger("servegate.prober")


class Prober:
    def __init__(self, runtime: Runtime, upstream: Upstream, tick_s: float = 0.25,
                 clock: Callable[[], float] = time.monotonic,
                 coldstart: ColdStart | None = None) -> None:
        self.runtime = runtime
        self.upstream = upstream
        self.tick_s = tick_s
        self._clock = clock
        self.coldstart = coldstart
        self._last: dict[tuple[str, str], float] = {}
        self._probing: set[tuple[str, str]] = set()
        self._running: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            while True:
                self.probe_due()
                await asyncio.sleep(self.tick_s)
        finally:
            for task in self._running:
                task.cancel()

    def probe_due(self) -> None:
        """Start the probes that are due: each pool at its interval, or at the cold-start
        probe interval while requests are held for it (short, fixed, no backoff)."""
        now = self._clock()
        seen = set()
        for pool in self.runtime.state.pools.values():
            if not pool.config.health.active_probes:
                continue
            interval = pool.config.health.probe_interval_s
            if self.coldstart is not None and self.coldstart.waiting(pool.name):
                interval = min(interval, pool.config.cold_start.probe_interval_s)
            for ep in pool.endpoints:
                key = (pool.name, ep.address)
                seen.add(key)
                if key in self._probing or self._last.get(key, -1e18) + interval > now:
                    continue
                self._last[key] = now
                self._probing.add(key)
                task = asyncio.create_task(self.probe(pool, ep))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
                task.add_done_callback(lambda _, key=key: self._probing.discard(key))
        for key in set(self._last) - seen:
            del self._last[key]

    async def probe(self, pool: Pool, ep: Endpoint) -> None:
        policy = pool.config.health
        try:
            response = await self.upstream.request(
                ep.host, ep.port, b"GET", b"/v2/health/ready", [], b"",
                policy.probe_timeout_s, policy.probe_timeout_s)
        except UpstreamError as exc:
            ok, reason, definite = False, str(exc), not isinstance(exc, UpstreamTimeout)
        except Exception:  # a bug must not kill probing; count it as a failed probe
            log.exception("probe of %s/%s failed unexpectedly", pool.name, ep.address)
            ok, reason, definite = False, "probe error", False
        else:
            ok = response.status == 200
            reason = "" if ok else f"not ready (HTTP {response.status})"
            definite = True
        was = ep.admitted
        ep.probed(ok, self._clock(), policy, reason, definite)
        if ep.admitted and self.coldstart is not None:
            self.coldstart.notify(pool.name)
        if was != ep.admitted:
            log.warning("endpoint %s/%s %s%s", pool.name, ep.address,
                        "re-admitted" if ep.admitted else "ejected",
                        f": {ep.health.reason}" if not ep.admitted else "")
