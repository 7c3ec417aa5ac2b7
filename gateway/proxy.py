"""Route, pick, send: the protocol-neutral middle of the request path.

Where it sits: the REST front (and later the gRPC front) has already read the model name and
the body bytes; :meth:`Proxy.forward` looks the route up, picks an endpoint in the route's pool
(power of two choices on outstanding requests), sends the bytes through the upstream client
and returns the response unchanged. It retries on another endpoint only when the request
provably never left (a connect failure); every transport failure is reported to the endpoint's
health state, so repeated failures eject it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from random import Random

from gateway.errors import Unavailable, UpstreamConnectError, UpstreamError
from gateway.metrics import GatewayMetrics
from gateway.pools import Endpoint
from gateway.runtime import Runtime
from gateway.upstream import Headers, Upstream, UpstreamResponse
from router import NoEndpoint, Route, pick_endpoint


class Proxy:
    def __init__(
        self, runtime: Runtime, upstream: Upstream, metrics: GatewayMetrics | None = None,
        rng: Random | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runtime = runtime
        self.upstream = upstream
        self.metrics = metrics
        self._rng = rng or Random()
        self._clock = clock
        self.in_flight: dict[str, int] = {}

    def route(self, model: str, version: str) -> Route:
        """Raises :class:`router.UnknownModel` for a model the config does not route."""
        return self.runtime.state.table.lookup(model, version)

    async def forward(
        self, route: Route, method: bytes, target: bytes, headers: Headers, body: bytes,
    ) -> tuple[UpstreamResponse, Endpoint]:
        pool = self.runtime.state.pools[route.pool]
        model = route.model
        self.in_flight[model] = self.in_flight.get(model, 0) + 1
        tried: list[Endpoint] = []
        try:
            while True:
                ep = pick_endpoint(pool.endpoints, self._rng, tried)
                if ep is None:
                    if tried:
                        raise Unavailable(
                            f"no endpoint of pool '{pool.name}' accepted a connection "
                            f"({len(tried)} tried)")
                    raise NoEndpoint(pool.name)
                ep.outstanding += 1
                try:
                    response = await self.upstream.request(
                        ep.host, ep.port, method, target, headers, body,
                        route.timeouts.connect_s, route.timeouts.read_s)
                except UpstreamError as exc:
                    self._failed(ep, exc)
                    if isinstance(exc, UpstreamConnectError):
                        tried.append(ep)  # never reached the backend: safe to try another
                        continue
                    raise
                finally:
                    ep.outstanding -= 1
                ep.succeeded()
                return response, ep
        finally:
            self.in_flight[model] -= 1

    def _failed(self, ep: Endpoint, exc: UpstreamError) -> None:
        pool = self.runtime.state.pools.get(ep.pool)
        if pool is not None:
            ep.failed(self._clock(), pool.config.health, str(exc))
        if self.metrics is not None:
            self.metrics.upstream_errors.labels(ep.pool, ep.address, exc.kind).inc()
