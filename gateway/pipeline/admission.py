"""Admission: the gate every data-plane request passes before it is read or sent upstream.

Where it sits: in the REST and gRPC fronts, right after the model's route is found (and, for
authentication alone, before any gateway-answered call). In order:

1. **who** (:meth:`Admission.authenticate`): with ``auth`` in the config, the API key from the
   configured header (``Authorization: Bearer`` by default, the same key in gRPC metadata)
   names a tenant; none or an unknown key is 401;
2. **may it** : the tenant's ``models`` must allow the model, else 403;
3. **how urgent**: the class (critical, standard, sheddable) is the tenant's, else the
   route's, else standard; its Triton level goes into the request
   (:mod:`gateway.pipeline.priority`);
4. **is there room**, each a 429 + Retry-After that names the reason: the model's
   ``max_in_flight`` on this replica; shedding when the pool's queue per ready endpoint has
   reached the class's threshold (sheddable first, then standard, never critical); the
   tenant's concurrency and rate quotas, counted across replicas (:mod:`gateway.pipeline.quota`).

A :class:`Ticket` holds what was counted in; the front releases it when the response is sent.
With none of this configured, :meth:`Admission.admit` returns ``None`` after a few attribute
reads, so an open gateway pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from contracts.tenancy import TenantConfig
from gateway.errors import Forbidden, Overloaded
from gateway.metrics import GatewayMetrics
from gateway.pipeline.auth import KeyRing, credential
from gateway.pipeline.quota import Quotas
from gateway.pipeline.runtime import Runtime
from router import Route
from router.tenancy import Priority, queue_per_endpoint, resolve_priority, should_shed


@dataclass(slots=True)
class Ticket:
    tenant: str | None
    model: str
    priority: Priority
    level: int  # Triton priority level to write into the request; 0: leave it
    counted_model: bool  # counted against the model's max_in_flight
    counted_tenant: bool  # counted against the tenant's quotas


class Admission:
    def __init__(self, runtime: Runtime, quotas: Quotas, metrics: GatewayMetrics,
                 queued: Callable[[str], int] = lambda pool: 0) -> None:
        self.runtime = runtime
        self.quotas = quotas
        self.metrics = metrics
        self._queued = queued
        self.keys = KeyRing()
        self.model_in_flight: dict[str, int] = {}

    # -------------------------------------------------------------- who

    def auth_header(self) -> str | None:
        """The header (lower case) that carries API keys, or ``None`` when auth is off."""
        auth = self.runtime.state.config.auth
        return auth.header if auth is not None and auth.enabled else None

    def caller(self, read: Callable[[str], bytes | None]) -> str | None:
        """The calling tenant, its API key read by ``read(header name)`` only when auth is on
        (``None`` with auth off); 401 without a valid key."""
        name = self.auth_header()
        return None if name is None else self.authenticate(read(name))

    def authenticate(self, value: bytes | None) -> str | None:
        """The tenant behind a header value (``None`` when auth is off); 401 if nobody."""
        auth = self.runtime.state.config.auth
        if auth is None or not auth.enabled:
            return None
        try:
            return self.keys.tenant(credential(value, auth.bearer))
        except Exception:
            self.metrics.refused_by_admission("", "", "unauthenticated")
            raise

    # -------------------------------------------------------------- may it, is there room

    def admit(self, tenant: str | None, route: Route, infer: bool = True) -> Ticket | None:
        """Count a request in, or raise :class:`Forbidden` / :class:`Overloaded`.

        Calls that are not inference (metadata, readiness, config, statistics) are only
        checked against the tenant's models: no quota, class or shedding applies to them.
        """
        cfg = self.runtime.state.config
        if not infer:
            if tenant is not None:
                self._check_allowed(tenant, route.model)
            return None
        model_cfg = cfg.models.get(route.model)
        pool = self.runtime.state.pools.get(route.pool)
        shedding = pool.config.shedding if pool is not None else None
        sheds = shedding is not None and (shedding.sheddable_at is not None
                                          or shedding.standard_at is not None)
        if (tenant is None and not sheds and model_cfg is not None
                and model_cfg.priority is None and model_cfg.max_in_flight is None):
            return None
        tenant_cfg = self._check_allowed(tenant, route.model) if tenant is not None else None
        priority = resolve_priority(tenant_cfg.priority if tenant_cfg else None,
                                    model_cfg.priority if model_cfg else None)
        limit = model_cfg.max_in_flight if model_cfg is not None else None
        if limit is not None and self.model_in_flight.get(route.model, 0) >= limit:
            self._rejected(tenant, route.model, "max_in_flight")
            raise Overloaded(f"model '{route.model}' has {limit} requests in flight "
                             "(max_in_flight)", "max_in_flight")
        if sheds and pool is not None and shedding is not None:
            queue = queue_per_endpoint(sum(e.outstanding for e in pool.endpoints),
                                       self._queued(pool.name), pool.admitted_count())
            if should_shed(priority, queue, shedding):
                self._rejected(tenant, route.model, "shed")
                raise Overloaded(f"pool '{pool.name}' is overloaded: {priority} requests are "
                                 f"shed (queue {queue:.1f} per ready endpoint)", "shed",
                                 shedding.retry_after_s)
        counted_tenant = False
        if tenant is not None and tenant_cfg is not None and (
                tenant_cfg.requests_per_s is not None or tenant_cfg.max_concurrency is not None):
            try:
                self.quotas.acquire(tenant, tenant_cfg)
            except Overloaded as exc:
                self._rejected(tenant, route.model, exc.reason)
                raise
            counted_tenant = True
        if limit is not None:
            self.model_in_flight[route.model] = self.model_in_flight.get(route.model, 0) + 1
        return Ticket(tenant, route.model, priority, cfg.priorities.level(priority),
                      limit is not None, counted_tenant)

    def _check_allowed(self, tenant: str, model: str) -> TenantConfig:
        tenant_cfg = self.runtime.state.config.tenants.get(tenant)
        if tenant_cfg is None or not tenant_cfg.allows(model):
            self._rejected(tenant, model, "forbidden")
            raise Forbidden(f"the API key of tenant '{tenant}' may not call model '{model}'")
        return tenant_cfg

    def release(self, ticket: Ticket | None) -> None:
        if ticket is None:
            return
        if ticket.counted_model:
            self.model_in_flight[ticket.model] -= 1
        if ticket.counted_tenant and ticket.tenant is not None:
            self.quotas.release(ticket.tenant)

    def _rejected(self, tenant: str | None, model: str, reason: str) -> None:
        self.metrics.refused_by_admission(tenant or "", model, reason)
