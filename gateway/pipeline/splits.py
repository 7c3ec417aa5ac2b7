"""The split step of the request path: which variant serves a request, and its shadow.

Where it sits: the front doors call :meth:`SplitChooser.decide` for a route that has a traffic
split, after routing and before admission; the weights it reads are the route table's, which
the traffic manager changes off the request path (admin API, rollouts, other replicas).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from random import Random

from gateway.pipeline.runtime import Runtime
from router.splits import Shadow, choose_variant, should_shadow
from router.table import Route


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request to a split model goes: the chosen variant's route, maybe a shadow."""

    route: Route
    variant: str
    shadow: tuple[Route, Shadow] | None


class SplitChooser:
    """Variant and shadow for one request: a pin, a sticky key or a weighted draw."""

    def __init__(self, runtime: Runtime, rng: Random | None = None) -> None:
        self.runtime = runtime
        self._rng = rng or Random()

    def decide(self, route: Route, header: Callable[[str], str | None]) -> Decision:
        """``header`` reads a request header / gRPC metadata value by lower-case name. Raises
        :class:`router.splits.UnknownVariant` for a pin naming no variant."""
        split = route.split
        assert split is not None
        sticky = header(split.sticky_header) if split.sticky_header else None
        variant = choose_variant(split, header(split.pin_header), sticky, self._rng.random())
        table = self.runtime.state.table
        shadow = None
        if split.shadow is not None and should_shadow(split, self._rng.random()) is not None:
            shadow = (table.target(route, split.shadow.variant), split.shadow)
        return Decision(table.target(route, variant), variant.name, shadow)
