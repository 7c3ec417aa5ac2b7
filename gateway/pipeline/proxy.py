"""Route, pick, send: the protocol-neutral middle of the request path.

Where it sits: the send step of the pipeline (:mod:`gateway.pipeline.service`), once the call
is routed and admitted; :meth:`Proxy.call` looks up the route's pool, picks an endpoint (power
of two choices on outstanding requests), runs the front's ``send`` on it and returns its result
unchanged. It retries on another
endpoint only when the request provably never left (a connect failure), and goes to the pool's
fallback pool (``fallback_pool``, e.g. on-demand behind spot) when its own pool has no endpoint
to offer, before waiting for a cold start; every transport failure is reported to the
endpoint's health state, so repeated failures eject it. An answered inference adds its backend
time to the charged tenant's cost accumulator (:mod:`gateway.pipeline.cost`). A gRPC stream
holds one endpoint for its lifetime through :meth:`Proxy.lease` (a :class:`Lease` counts it in
and out like any request). In a model-managed pool the candidates are the endpoints holding
the model, and a call for a model none holds waits for one load
(:mod:`gateway.pipeline.residency`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from random import Random
from typing import TypeVar

from gateway.adapters.upstream import Upstream
from gateway.errors import Unavailable, UpstreamConnectError, UpstreamError
from gateway.metrics import GatewayMetrics
from gateway.pipeline.coldstart import ColdStart, ColdWait
from gateway.pipeline.cost import CostMeter, CostSlot
from gateway.pipeline.load import Load
from gateway.pipeline.pools import Endpoint, Pool
from gateway.pipeline.residency import Residency
from gateway.pipeline.runtime import Runtime
from router import NoEndpoint, Route, pick_endpoint
from router.health import UNHEALTHY_STATUSES

T = TypeVar("T")


class Proxy:
    def __init__(
        self, runtime: Runtime, upstream: Upstream, metrics: GatewayMetrics | None = None,
        rng: Random | None = None, clock: Callable[[], float] = time.monotonic, *,
        load: Load | None = None, coldstart: ColdStart | None = None,
        cost: CostMeter | None = None, residency: Residency | None = None,
    ) -> None:
        self.runtime = runtime
        self.upstream = upstream
        self.metrics = metrics
        self._rng = rng or Random()
        self._clock = clock
        self.load = load or Load()
        self.in_flight = self.load.in_flight  # model -> requests in flight (shared accounting)
        self.coldstart = coldstart  # pools at zero hold requests here
        self.cost = cost  # per-request charges
        self.residency = residency  # model-managed pools

    def route(self, model: str, version: str) -> Route:
        """Raises :class:`router.UnknownModel` for a model the config does not route."""
        return self.runtime.state.table.lookup(model, version)

    async def call(
        self, route: Route, endpoints_of: Callable[[Pool], Sequence[Endpoint]],
        send: Callable[[Endpoint], Awaitable[T]], cold: ColdWait | None = None,
        unhealthy: Callable[[T], str] | None = None, charge: str | None = None,
    ) -> tuple[T, Endpoint]:
        """``send`` on an endpoint picked from ``endpoints_of(pool)`` of the route's pool.

        ``send`` raises :class:`UpstreamError` for transport failures; a connect failure is
        retried on another endpoint, any other error is raised as it came. When the pool has
        no admitted endpoint and buffers cold starts, the call waits for one (``cold`` carries
        the request's budget in and the time waited out). ``unhealthy(result)``, when given,
        names a reason when an answer counts as an endpoint failure (it is still returned).
        ``charge`` names the tenant charged with the answered request's backend time (``None``:
        not an inference, nobody is charged).
        """
        model = route.model
        clock = self._clock
        cost = self._slot(route.pool, model, charge)
        self.in_flight[model] = self.in_flight.get(model, 0) + 1
        tried: list[Endpoint] = []
        pool = self.runtime.state.pools[route.pool]
        resent = False  # a model-managed pool's endpoint said it lacks the model: sent again
        try:
            while True:
                endpoints = endpoints_of(pool)
                if pool.managed and self.residency is not None:  # only those holding the model
                    endpoints = self.residency.holding(pool, model, endpoints, cold)
                try:
                    ep = self.pick(pool, endpoints, tried)
                except (NoEndpoint, Unavailable):
                    if (pool.managed and self.residency is not None and not endpoints
                            and not tried and pool.admitted_count()):
                        # No endpoint holds the model: one load, the call waits for it.
                        cold = cold or ColdWait()
                        if not cold.load:
                            raise Unavailable(f"model '{model}' is not loaded in pool "
                                              f"'{pool.name}'") from None
                        cold.waited_s += await self.residency.wait_loaded(pool, model, cold)
                        pool = self.runtime.state.pools[route.pool]
                        continue
                    fallback = self._fallback(pool) if pool.name == route.pool else None
                    if fallback is not None:  # e.g. spot capacity reclaimed: on-demand serves
                        pool = fallback
                        tried.clear()
                        cost = self._slot(pool.name, model, charge)  # the serving pool pays
                        continue
                    # Nothing ready (or everything refused, e.g. replicas going away): a pool
                    # that buffers cold starts holds the request until an endpoint is ready.
                    home = self.runtime.state.pools[route.pool]
                    if self.coldstart is None or not home.config.cold_start.enabled:
                        raise
                    cold = cold or ColdWait()
                    budget = cold.budget_s()
                    if budget is not None:
                        budget -= cold.waited_s
                    cold.waited_s += await self.coldstart.wait(route.pool, budget)
                    pool = self.runtime.state.pools[route.pool]  # discovery may have swapped it
                    tried.clear()
                    cost = self._slot(pool.name, model, charge)  # the serving pool pays
                    continue
                spill = pool.config.fallback_spill_at
                if spill is not None and ep.outstanding >= spill and pool.name == route.pool:
                    ep, pool = self._spill(ep, pool, endpoints_of)
                    cost = self._slot(pool.name, model, charge)  # the serving pool pays
                sent = clock()
                ep.begin(sent)
                try:
                    result = await send(ep)
                except UpstreamError as exc:
                    self.failed(ep, exc)
                    if isinstance(exc, UpstreamConnectError):
                        tried.append(ep)  # never reached the backend: safe to try another
                        continue
                    raise
                except BaseException as exc:
                    ep.trial_unsettled()  # cancelled, or an answer that is no transport verdict
                    if pool.managed and not resent and self._model_gone(pool, ep, model, exc):
                        resent = True
                        continue
                    raise
                finally:
                    done = clock()
                    ep.end(done)
                if cost is not None:  # what this request is charged for (gateway.pipeline.cost)
                    cost.busy_s += done - sent
                    cost.requests += 1
                if unhealthy is not None and (why := unhealthy(result)):
                    self.answered_unhealthy(ep, why)
                else:
                    ep.succeeded()
                if pool.managed and not resent and self._model_gone(pool, ep, model, result):
                    resent = True
                    continue
                return result, ep
        finally:
            self.in_flight[model] -= 1

    def lease(self, route: Route, endpoints: Sequence[Endpoint],
              open_call: Callable[[Endpoint], T]) -> tuple[T, Lease]:
        """Hold an endpoint for a long call (a gRPC stream): ``open_call`` on an endpoint
        picked from ``endpoints`` of the route's pool, retried on another one when it raises
        :class:`UpstreamConnectError` (nothing was sent). The endpoint counts the call as
        outstanding, and the model as in flight, until :meth:`Lease.release`."""
        pool = self.runtime.state.pools[route.pool]
        tried: list[Endpoint] = []
        while True:
            ep = self.pick(pool, endpoints, tried)
            try:
                opened = open_call(ep)
            except UpstreamConnectError as exc:
                self.failed(ep, exc)
                tried.append(ep)
                continue
            break
        ep.begin(self._clock())
        self.in_flight[route.model] = self.in_flight.get(route.model, 0) + 1
        return opened, Lease(self, ep, route.model)

    def unhealthy_rule(self, route: Route, status_of: Callable[[T], int]
                       ) -> Callable[[T], str] | None:
        """With ``health.eject_on_5xx`` on the route's pool: the ``unhealthy`` of :meth:`call`,
        naming an answer whose HTTP status (``status_of``) says the endpoint is unwell;
        ``None`` otherwise."""
        if not self.runtime.state.pools[route.pool].config.health.eject_on_5xx:
            return None

        def unhealthy(result: T) -> str:
            status = status_of(result)
            return f"HTTP {status}" if status in UNHEALTHY_STATUSES else ""

        return unhealthy

    def _slot(self, pool: str, model: str, charge: str | None) -> CostSlot | None:
        """The accumulator charged for this call in ``pool`` (``None``: nobody is charged)."""
        return self.cost.slot(pool, model, charge) if charge and self.cost else None

    def _fallback(self, pool: Pool) -> Pool | None:
        """The pool that takes ``pool``'s requests while it has nothing to offer, if any."""
        name = pool.config.fallback_pool
        if name is None:
            return None
        return self.runtime.state.pools.get(name)

    def _spill(self, ep: Endpoint, pool: Pool, endpoints_of: Callable[[Pool], Sequence[Endpoint]]
               ) -> tuple[Endpoint, Pool]:
        """``ep`` is busy past the pool's ``fallback_spill_at``: an admitted, less loaded
        endpoint of the fallback pool instead, if there is one."""
        fallback = self._fallback(pool)
        if fallback is None:
            return ep, pool
        alt = pick_endpoint(endpoints_of(fallback), self._rng, (), self._clock())
        if alt is None or not alt.admitted or alt.outstanding >= ep.outstanding:
            return ep, pool
        if not ep.admitted:
            ep.trial_unsettled()  # it was picked as a half-open trial: let another one be
        return alt, fallback

    def _model_gone(self, pool: Pool, ep: Endpoint, model: str, outcome: object) -> bool:
        return self.residency is not None and self.residency.gone(pool, ep, model, outcome)

    def pick(self, pool: Pool, endpoints: Sequence[Endpoint],
             tried: Collection[Endpoint] = ()) -> Endpoint:
        """An available endpoint not in ``tried``; :class:`NoEndpoint` or :class:`Unavailable`.

        Available: admitted, or half-open with no trial in flight; picking one of those makes
        this request its trial (the caller reports the outcome as for any request).
        """
        now = self._clock()
        ep = pick_endpoint(endpoints, self._rng, tried, now)
        if ep is None:
            if tried:
                raise Unavailable(
                    f"no endpoint of pool '{pool.name}' accepted a connection "
                    f"({len(tried)} tried)")
            raise NoEndpoint(pool.name)
        if not ep.admitted:
            ep.start_trial(now, pool.config.health)
        return ep

    def failed(self, ep: Endpoint, exc: UpstreamError) -> None:
        """Report a transport failure to the endpoint's health and the error counter."""
        self._count_failure(ep, str(exc), exc.kind)

    def answered_unhealthy(self, ep: Endpoint, reason: str) -> None:
        """An answer that says the endpoint is unwell (``health.eject_on_5xx``): a failure."""
        self._count_failure(ep, reason, "status")

    def _count_failure(self, ep: Endpoint, reason: str, kind: str) -> None:
        pool = self.runtime.state.pools.get(ep.pool)
        if pool is not None:
            ep.failed(self._clock(), pool.config.health, reason)
        if self.metrics is not None:
            self.metrics.upstream_error(ep.pool, ep.address, kind)


class Lease:
    """An endpoint held by one long call (:meth:`Proxy.lease`)."""

    __slots__ = ("_proxy", "endpoint", "model", "released", "started")

    def __init__(self, proxy: Proxy, endpoint: Endpoint, model: str) -> None:
        self._proxy = proxy
        self.endpoint = endpoint
        self.model = model
        self.started = time.perf_counter()
        self.released = False

    def release(self, requests: int, charge: str | None) -> float:
        """The call ended: the endpoint and the model count it out, and ``charge`` (a tenant)
        pays for the whole time it held the endpoint when it sent ``requests`` (> 0). Returns
        that time in seconds; a second release does nothing (and returns 0)."""
        if self.released:
            return 0.0
        self.released = True
        proxy = self._proxy
        self.endpoint.end(proxy._clock())
        proxy.in_flight[self.model] -= 1
        held = time.perf_counter() - self.started
        if requests and charge is not None:
            slot = proxy._slot(self.endpoint.pool, self.model, charge)
            if slot is not None:
                slot.busy_s += held
                slot.requests += requests
        return held


def all_endpoints(pool: Pool) -> Sequence[Endpoint]:
    """Every endpoint of the pool (an HTTP call can go to any)."""
    return pool.endpoints
