"""The routing state the data plane reads: one immutable snapshot, swapped atomically.

Where it sits: every request reads ``runtime.state`` once and uses that snapshot to the end,
so a reload (SIGHUP, ``--watch``, or an API call) never changes routing under a request in
flight. A config that fails validation raises before anything is swapped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from contracts import Config, EndpointConfig, PoolConfig
from gateway.pipeline.pools import Pool, build_pools
from router import RouteTable

log = logging.getLogger("servegate.runtime")

# (pool, model) -> (state, reason) of a model in a model-managed pool
ModelState = Callable[[str, str], tuple[str, str]]


@dataclass(frozen=True)
class RoutingState:
    config: Config
    table: RouteTable
    pools: dict[str, Pool]
    generation: int

    def model_index(self, ready_only: bool = False, tenant: str | None = None,
                    managed: ModelState | None = None) -> list[dict[str, str]]:
        """The repository index as the gateway sees it: every routed (model, version), READY
        when its pool has an admitted endpoint, else UNAVAILABLE with a reason; with a
        ``tenant``, only the models that tenant may call. In a model-managed pool,
        ``managed(pool, model)`` says whether an endpoint holds the model."""
        models = []
        allowed = self.config.tenants.get(tenant) if tenant is not None else None
        for route in self.table.routes():
            if tenant is not None and (allowed is None or not allowed.allows(route.model)):
                continue
            pool = self.pools[route.pool]
            entry = {"name": route.model}
            if route.version:
                entry["version"] = route.version
            state, reason = "READY", ""
            if not pool.admitted_count():
                state, reason = "UNAVAILABLE", f"no healthy endpoint in pool '{pool.name}'"
            elif pool.managed and managed is not None:
                state, reason = managed(pool.name, route.model)
            if state != "READY" and ready_only:
                continue
            entry["state"] = state
            if reason:
                entry["reason"] = reason
            models.append(entry)
        return models


class Runtime:
    def __init__(self, config: Config) -> None:
        # Split weights set at run time (admin API, rollouts, other replicas) override the
        # config's, and survive config reloads for variants that still exist.
        self.weights: dict[str, dict[str, float]] = {}
        # Endpoints found by discovery (pools whose discovery is not static), by pool.
        self.discovered: dict[str, list[EndpointConfig]] = {}
        # What the endpoints of model-managed pools hold (set by the wiring).
        self.model_state: ModelState | None = None
        self.state = RoutingState(config, RouteTable(config), build_pools(config.pools), 1)

    def model_index(self, ready_only: bool = False,
                    tenant: str | None = None) -> list[dict[str, str]]:
        """:meth:`RoutingState.model_index` of the current state, managed pools included."""
        return self.state.model_index(ready_only, tenant, self.model_state)

    def apply(self, config: Config) -> RoutingState:
        """Swap in a new (already validated) config; in-flight requests keep the old snapshot."""
        old = self.state
        new = RoutingState(
            config, RouteTable(config, self.weights),
            build_pools(self._with_discovered(config), old.pools.values()), old.generation + 1,
        )
        self.state = new
        log.info("config generation %d applied: %d pools, %d models", new.generation,
                 len(config.pools), len(config.models))
        return new

    def _with_discovered(self, config: Config) -> dict[str, PoolConfig]:
        pools = dict(config.pools)
        for name, endpoints in self.discovered.items():
            pool = pools.get(name)
            if pool is not None and pool.discovery.type != "static":
                pools[name] = pool.model_copy(update={"endpoints": endpoints})
        return pools

    def set_endpoints(self, pool: str, endpoints: list[EndpointConfig]) -> RoutingState:
        """Swap in the endpoints discovery found for ``pool`` (others and health carry over)."""
        self.discovered[pool] = endpoints
        old = self.state
        new = RoutingState(old.config, old.table,
                           build_pools(self._with_discovered(old.config), old.pools.values()),
                           old.generation + 1)
        self.state = new
        log.info("pool %s: %d endpoint(s) discovered", pool, len(endpoints))
        return new

    def set_weights(self, weights: dict[str, dict[str, float]]) -> RoutingState:
        """Swap in new split weights (model -> variant -> weight) over the same config."""
        self.weights = weights
        old = self.state
        new = RoutingState(old.config, RouteTable(old.config, weights), old.pools,
                           old.generation + 1)
        self.state = new
        return new
