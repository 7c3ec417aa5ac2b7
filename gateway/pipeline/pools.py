"""Runtime state of pools and endpoints: outstanding requests and health, per endpoint.

Where it sits: built from the config by :class:`gateway.pipeline.runtime.Runtime`; the proxy picks
an endpoint (``router.pick_endpoint`` reads ``outstanding``, ``admitted`` and ``health``), starts a
half-open trial when it picked one whose circuit is not closed, counts the request in and out,
and reports the outcome; the prober reports probe results. Every change goes through the pure
state machine in :mod:`router.health`. A reload reuses the :class:`Endpoint` objects of
addresses that stay, so health and counters carry over.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from contracts import EndpointConfig, HealthConfig, PoolConfig, split_hostport
from router import ADMITTED, Health, record_failure, record_probe, record_success
from router.health import begin_trial, end_trial

log = logging.getLogger("servegate.health")


class Endpoint:
    """One Triton server as the data plane sees it (mutable, event-loop confined)."""

    __slots__ = ("address", "busy_s", "busy_since", "config", "grpc", "health", "host",
                 "outstanding", "pool", "port")

    def __init__(self, pool: str, config: EndpointConfig) -> None:
        self.pool = pool
        self.config = config
        self.address = config.http
        self.host, self.port = split_hostport(config.http)
        self.grpc = config.grpc
        self.outstanding = 0
        self.health: Health = ADMITTED
        # Cost accounting: seconds with at least one request outstanding, not yet collected.
        self.busy_s = 0.0
        self.busy_since = 0.0

    def begin(self, now: float) -> None:
        """A request (or a gRPC stream) starts on this endpoint."""
        if self.outstanding == 0:
            self.busy_since = now
        self.outstanding += 1

    def end(self, now: float) -> None:
        self.outstanding -= 1
        if self.outstanding == 0:
            self.busy_s += now - self.busy_since

    def take_busy(self, now: float) -> float:
        """Busy seconds since the last call (the accounting tick), including a busy spell
        still running."""
        if self.outstanding > 0:
            self.busy_s += now - self.busy_since
            self.busy_since = now
        busy, self.busy_s = self.busy_s, 0.0
        return busy

    @property
    def admitted(self) -> bool:
        return self.health.admitted

    def succeeded(self) -> None:
        h = self.health
        if h.consecutive_failures or h.trial_at is not None:
            self.health = record_success(h)
            if not h.admitted and self.health.admitted:
                log.warning("endpoint %s/%s re-admitted: trial request succeeded",
                            self.pool, self.address)

    def failed(self, now: float, policy: HealthConfig, reason: str) -> None:
        h = self.health
        after = self.health = record_failure(h, now, policy, reason)
        if not after.admitted and (h.admitted or h.trial_at is not None):
            log.warning("endpoint %s/%s %s for %gs: %s", self.pool, self.address,
                        "ejected" if h.admitted else "trial failed, ejected again",
                        after.open_s, reason)

    def start_trial(self, now: float, policy: HealthConfig) -> None:
        """This endpoint was picked while its circuit is not closed: the request is its trial."""
        self.health = begin_trial(self.health, now, policy)

    def trial_unsettled(self) -> None:
        """The request ended with no verdict on the endpoint (e.g. cancelled): if it was the
        trial, let the next request be one."""
        if self.health.trial_at is not None:
            self.health = end_trial(self.health)

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
    # model_control: explicit: endpoints hold different models (gateway.pipeline.residency)
    managed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.managed = self.config.managed

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
