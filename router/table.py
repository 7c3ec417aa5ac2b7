"""The route table: (model, version) -> pool, timeouts and body limit.

Where it sits: the first routing step of every request. The gateway builds one table per
loaded config and swaps it atomically on reload; a lookup is two dict probes.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.config import Config, TimeoutConfig
from router.errors import UnknownModel


@dataclass(frozen=True, slots=True)
class Route:
    model: str
    version: str  # "" when the client named no version
    pool: str
    timeouts: TimeoutConfig
    max_body_bytes: int


class RouteTable:
    def __init__(self, cfg: Config) -> None:
        self._default: dict[str, Route] = {}
        self._versioned: dict[tuple[str, str], Route] = {}
        for name, m in cfg.models.items():
            limit = m.max_body_bytes or cfg.limits.max_body_bytes
            base = cfg.pools[m.pool].timeouts
            self._default[name] = Route(name, "", m.pool, m.timeouts.apply(base), limit)
            for ver, vr in m.versions.items():
                vbase = cfg.pools[vr.pool].timeouts
                self._versioned[(name, ver)] = Route(
                    name, ver, vr.pool, m.timeouts.apply(vbase), limit
                )

    def lookup(self, model: str, version: str = "") -> Route:
        """The route for a model (and optional version); raises :class:`UnknownModel`."""
        if version:
            route = self._versioned.get((model, version))
            if route is not None:
                return route
        route = self._default.get(model)
        if route is None:
            raise UnknownModel(model, version)
        return route

    def routes(self) -> list[Route]:
        """Every model's default route followed by its version overrides, sorted by name."""
        return sorted(
            [*self._default.values(), *self._versioned.values()],
            key=lambda r: (r.model, r.version),
        )
