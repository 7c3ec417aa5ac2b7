"""Runtime state of pools and endpoints: outstanding requests and health, per endpoint.

Where it sits: built from the config by :class:`gateway.runtime.Runtime`; the proxy picks an
endpoint (``router.pick_endpoint`` reads ``outstanding`` and ``admitted``), counts the request
in and out, and reports transport failures; the prober reports probe results. A reload reuses
the :class:`Endpoint` objects of addresses that stay, so health and counters carry over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from router import (
    ADMITTED,
    EndpointConfig,
    Health,
    HealthConfig,
    PoolConfig,
    record_failure,
    record_probe,
    record_success,
    split_hostport,
)


class Endpoint:
    """One Triton server as the data plane sees it (mutable, event-loop confined)."""

    __slots__ = ("address", "config", "grpc", "health", "host", "outstanding", "pool", "port")

    def __init__(self, pool: str, config: EndpointConfig) -> None:
        self.pool = pool
        self.config = config
        self.address = config.http
        self.host, self.port = split_hostport(config.http)
        self.grpc = config.grpc
        self.outstanding = 0
        self.health: Health = ADMITTED

    @property
    def admitted(self) -> bool:
        return self.health.admitted

    def succeeded(self) -> None:
        if self.health.consecutive_failures:
            self.health = record_success(self.health)

    def failed(self, now: float, policy: HealthConfig, reason: str) -> None:
        self.health = record_failure(self.health, now, policy, reason)

    def probed(self, ok: bool, now: float, policy: HealthConfig, reason: str,
               definite: bool) -> None:
        self.health = record_probe(self.health, ok, now, policy, reason, definite)

    def __repr__(self) -> str:
        return f"Endpoint({self.pool}/{self.address}, admitted={self.admitted})"


@dataclass
class Pool:
    name: str
    config: PoolConfig
    endpoints: list[Endpoint] = field(default_factory=list)

    @cached_property
    def grpc_endpoints(self) -> list[Endpoint]:
        """The endpoints with a gRPC address: the only ones the gRPC front can use."""
        return [e for e in self.endpoints if e.grpc]

    def admitted_count(self) -> int:
        return sum(1 for e in self.endpoints if e.admitted)


def build_pools(
    configs: Mapping[str, PoolConfig], previous: Iterable[Pool] = ()
) -> dict[str, Pool]:
    """Pools for a new config, reusing endpoint objects whose (pool, address) is unchanged."""
    old = {(e.pool, e.address): e for p in previous for e in p.endpoints}
    pools: dict[str, Pool] = {}
    for name, cfg in configs.items():
        endpoints = []
        for ecfg in cfg.endpoints:
            ep = old.get((name, ecfg.http))
            if ep is None or ep.config != ecfg:
                ep = Endpoint(name, ecfg) if ep is None else _carry(ep, ecfg)
            endpoints.append(ep)
        pools[name] = Pool(name, cfg, endpoints)
    return pools


def _carry(old: Endpoint, cfg: EndpointConfig) -> Endpoint:
    ep = Endpoint(old.pool, cfg)
    ep.health = old.health
    return ep
