"""The request pipeline: one path for every call the gateway forwards, whatever the front door.

Where it sits: between the front doors, which only parse and serialize (REST
:mod:`gateway.http.app`, gRPC unary :mod:`gateway.grpc.service`, the gRPC stream relay
:mod:`gateway.grpc.stream`), and the proxy that picks an endpoint and sends
(:mod:`gateway.pipeline.proxy`). One call goes through these steps, one small method each:

    authenticate -> route -> admit -> split -> priority -> send (cold-start wait, pick, send:
    Proxy.call) -> record (metrics, split statistics, shadow comparison, trace spans)

A front describes its call with a :class:`Call` (what the pipeline needs to read from the
request, and how to send it to one endpoint); the result of ``send`` comes back unchanged in a
:class:`Served`, or the step's error is raised after it was recorded, for the front to turn into
its protocol's answer (:mod:`gateway.statuses` is the one table of statuses). A gRPC stream
runs the per-message steps through :meth:`Pipeline.admit_message` and holds its endpoint with
a :class:`gateway.pipeline.proxy.Lease`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from contracts.cost import ANONYMOUS, SHADOW_TENANT
from gateway.adapters.upstream import UpstreamResponse
from gateway.errors import PayloadTooLarge
from gateway.metrics import GatewayMetrics
from gateway.pipeline.admission import Admission, Ticket
from gateway.pipeline.coldstart import ColdWait
from gateway.pipeline.pools import Endpoint, Pool
from gateway.pipeline.proxy import Proxy, all_endpoints
from gateway.pipeline.splits import Decision
from gateway.tracing import RequestTrace, Tracing
from gateway.traffic.manager import TrafficManager
from router import Route, UnknownModel

# What a call is, for the steps that treat calls differently.
INFER = 1  # inference: quotas and classes apply, charged to the tenant, split by a draw
LOAD = 2  # in a model-managed pool, may load its model (readiness checks may not)
SHADOW = 4  # a split model's shadow variant gets a copy (REST infer only)
STREAM = 8  # the answer streams: no shadow copy


class Message(Protocol):
    """What admission and priority read and write: one request (or one message of a
    stream)."""

    def size(self) -> int:
        """The request body's (message's) size in bytes."""

    def prioritize(self, level: int) -> bool:
        """Write Triton's priority ``level`` into the request; False where it cannot."""


class Call(Message, Protocol):
    """One request as a front door presents it to the pipeline."""

    protocol: str  # metrics label: "http", "grpc"
    cold: ColdWait | None  # set by the pipeline before it sends: the cold-start wait


    def credential(self, header: str) -> bytes | None:
        """The raw value of the API key header (REST header, gRPC metadata)."""

    def header(self, name: str) -> str | None:
        """A request header / metadata value by lower-case name (split pins, sticky keys)."""

    def check(self) -> None:
        """The front's own checks of an admitted request (REST: the infer body's framing)."""

    def budget_s(self) -> float | None:
        """How long the request may wait for a cold start; read only when it would wait."""

    def retarget(self, route: Route, variant: str) -> None:
        """A split model's ``variant`` serves the call: address ``route`` from now on."""

    def endpoints(self, pool: Pool) -> Sequence[Endpoint]:
        """The pool's endpoints this protocol can call."""

    def send(self, ep: Endpoint, route: Route) -> Awaitable[Any]:
        """Send the request to ``ep``; raises :class:`gateway.errors.UpstreamError` for
        transport failures."""

    def status(self, result: Any) -> int:
        """The HTTP status of an answer (metrics' status class)."""

    def error_status(self, exc: BaseException) -> int:
        """The HTTP status an error is answered with (metrics' status class)."""

    def shadow(self, route: Route) -> Callable[[], Awaitable[UpstreamResponse]] | None:
        """A sender of this request's copy to ``route`` (a shadow variant), if the front
        mirrors."""


class Served:
    """What the pipeline hands back to the front: the answer and where it came from."""

    __slots__ = ("endpoint", "result", "variant", "waited_s")

    def __init__(self, result: Any, endpoint: Endpoint, variant: str | None,
                 waited_s: float) -> None:
        self.result = result
        self.endpoint = endpoint
        self.variant = variant  # the split variant that answered (None: not a split model)
        self.waited_s = waited_s  # held for a cold start or a model load


class Pipeline:
    def __init__(self, proxy: Proxy, admission: Admission, metrics: GatewayMetrics,
                 traffic: TrafficManager | None, tracing: Tracing | None = None) -> None:
        self.proxy = proxy
        self.admission = admission
        self.metrics = metrics
        self.traffic = traffic  # split decisions and statistics; None: splits not applied
        self.tracing = tracing if tracing is not None and tracing.enabled else None

    # -------------------------------------------------------------- steps

    def authenticate(self, call: Call) -> str | None:
        """The calling tenant (``None`` with auth off); :class:`Unauthorized` without a key."""
        return self.admission.caller(call.credential)

    def route(self, model: str, version: str) -> Route:
        """Raises :class:`router.UnknownModel` for a model the config does not route."""
        return self.proxy.runtime.state.table.lookup(model, version)

    def admit(self, tenant: str | None, route: Route, call: Message,
              kind: int) -> Ticket | None:
        """Admission: the route's size limit, the tenant's models, quotas, shedding, the
        model's max in flight."""
        if call.size() > route.max_body_bytes:
            raise PayloadTooLarge(route.max_body_bytes)
        return self.admission.admit(tenant, route, bool(kind & INFER))

    def prioritize(self, ticket: Ticket | None, route: Route, call: Message,
                   kind: int) -> None:
        """The request's class, as Triton's priority level, written into an inference."""
        if ticket is not None and ticket.level and kind & INFER and not call.prioritize(
                ticket.level):
            self.metrics.priority_skipped.labels(route.model).inc()

    def split(self, route: Route, call: Call, kind: int) -> Decision:
        """Which variant serves a split model: a pin, sticky key or draw for inference, the
        baseline for metadata, readiness and configuration."""
        split = route.split
        assert split is not None
        if kind & INFER and self.traffic is not None:
            return self.traffic.decide(route, call.header)
        baseline = split.by_name[split.baseline]
        return Decision(self.proxy.runtime.state.table.target(route, baseline),
                        baseline.name, None)

    # -------------------------------------------------------------- the whole call

    async def forward(self, call: Call, model: str, version: str, kind: int) -> Served:
        """Every step for one call; raises the first step's error once it is recorded."""
        start = time.perf_counter()
        ticket = None
        route: Route | None = None
        variant = None
        mirror = None
        cold = call.cold = ColdWait(call.budget_s, load=bool(kind & LOAD))
        trace = None if self.tracing is None else self._trace(call, model)
        try:
            tenant = self.authenticate(call)
            if trace is not None:
                trace.mark("route")
            route = self.route(model, version)
            if trace is not None:
                trace.mark("admit")
            ticket = self.admit(tenant, route, call, kind)
            call.check()
            self.prioritize(ticket, route, call, kind)
            target = route
            if route.split is not None:
                decision = self.split(route, call, kind)
                target, variant = decision.route, decision.variant
                call.retarget(target, variant)
                if decision.shadow is not None and kind & SHADOW:
                    mirror = self._mirror(route, decision, call)
            if trace is not None:
                trace.mark("upstream")  # the cold-start wait, if any, is part of it
            result, ep = await self.proxy.call(
                target, call.endpoints, lambda ep: call.send(ep, target), cold,
                self.proxy.unhealthy_rule(target, call.status),
                (tenant or ANONYMOUS) if kind & INFER else None)
        except Exception as exc:
            elapsed = time.perf_counter() - start
            if mirror is not None:
                mirror.set_exception(exc)
            status = call.error_status(exc)
            label = model if route is not None or not isinstance(exc, UnknownModel) \
                else "<unknown>"  # bounded labels
            self.metrics.observe(label, getattr(exc, "endpoint", ""), call.protocol, status,
                                 elapsed)
            if variant is not None:
                self._record_variant(model, variant, status, elapsed)
            if trace is not None:
                trace.end(status, getattr(exc, "endpoint", ""), variant, type(exc).__name__)
            raise
        finally:
            self.admission.release(ticket)
        elapsed = time.perf_counter() - start
        status = call.status(result)
        if mirror is not None:
            mirror.set_result((result, elapsed))
        self.metrics.observe(model, ep.address, call.protocol, status, elapsed)
        if variant is not None:
            self._record_variant(model, variant, status, elapsed)
        if trace is not None:
            trace.end(status, ep.address, variant)
        return Served(result, ep, variant, cold.waited_s)

    def _trace(self, call: Call, model: str) -> RequestTrace | None:
        """Spans of this call's phases, when tracing is on and the call is sampled; the
        caller's ``traceparent`` makes them part of its trace."""
        assert self.tracing is not None
        parent, state = call.header("traceparent"), call.header("tracestate")
        trace = self.tracing.begin(model, call.protocol,
                                   parent.encode("latin-1") if parent else None,
                                   state.encode("latin-1") if state else None)
        if trace is not None:
            trace.mark("auth")
        return trace

    def _mirror(self, route: Route, decision: Decision, call: Call) -> Any:
        """Start the shadow copy of a call to a split model (charged to the shadow variant's
        pool as tenant ``_shadow``, never to the caller); ``None`` if the front mirrors
        nothing."""
        assert decision.shadow is not None and self.traffic is not None
        shadow_route, shadow = decision.shadow
        send = call.shadow(shadow_route)
        if send is None:
            return None
        return self.traffic.mirror.start(route.model, shadow.variant.name,
                                         shadow.max_concurrency, send)

    def _record_variant(self, model: str, variant: str, status: int, elapsed: float) -> None:
        if self.traffic is not None:
            self.traffic.stats.record(model, variant, status < 500, elapsed)
        self.metrics.observe_variant(model, variant, status, elapsed)

    def shadow_sender(self, route: Route, send: Callable[[Endpoint], Awaitable[UpstreamResponse]]
                      ) -> Callable[[], Awaitable[UpstreamResponse]]:
        """A front's shadow copy: ``send`` to an endpoint of ``route``'s pool, charged to
        ``_shadow``."""
        async def mirror() -> UpstreamResponse:
            response, _ = await self.proxy.call(
                route, all_endpoints, send,
                unhealthy=self.proxy.unhealthy_rule(route, _http_status),
                charge=SHADOW_TENANT)
            return response

        return mirror

    # -------------------------------------------------------------- streams

    def admit_message(self, tenant: str | None, call: Message, model: str,
                      version: str) -> Route:
        """One message of a gRPC stream: route, admission (counted in and straight out: a
        stream's responses are not matched to its requests) and priority."""
        route = self.route(model, version)
        ticket = self.admit(tenant, route, call, INFER)
        self.admission.release(ticket)
        self.prioritize(ticket, route, call, INFER)
        return route


def _http_status(response: UpstreamResponse) -> int:
    return response.status
