"""The routing state the data plane reads: one immutable snapshot, swapped atomically.

Where it sits: every request reads ``runtime.state`` once and uses that snapshot to the end,
so a reload (SIGHUP, ``--watch``, or an API call) never changes routing under a request in
flight. A config that fails validation raises before anything is swapped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.pools import Pool, build_pools
from router import Config, RouteTable

log = logging.getLogger("servegate.runtime")


@dataclass(frozen=True)
class RoutingState:
    config: Config
    table: RouteTable
    pools: dict[str, Pool]
    generation: int


class Runtime:
    def __init__(self, config: Config) -> None:
        self.state = RoutingState(config, RouteTable(config), build_pools(config.pools), 1)

    def apply(self, config: Config) -> RoutingState:
        """Swap in a new (already validated) config; in-flight requests keep the old snapshot."""
        old = self.state
        new = RoutingState(
            config, RouteTable(config), build_pools(config.pools, old.pools.values()),
            old.generation + 1,
        )
        self.state = new
        log.info("config generation %d applied: %d pools, %d models", new.generation,
                 len(config.pools), len(config.models))
        return new
