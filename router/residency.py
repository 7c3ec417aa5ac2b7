"""Placement and eviction of models in a model-managed pool: pure decisions, no I/O, no clock.

Where it sits: the gateway's :mod:`gateway.pipeline.residency` builds a :class:`FleetView` (what
each endpoint holds or is loading, when each model was last called, its request rate, which models
have calls in flight) and asks:

- :func:`place_load` on a call for a model no endpoint holds: which endpoint loads it, and
  which model (if any) that endpoint unloads first to make room;
- :func:`plan` on the leader's tick: unload models idle past the grace, give hot models more
  endpoints, take extra endpoints back from models that cooled down.

Rules, in the order they apply:

1. a model fits on an endpoint when the endpoint then holds (or is loading) at most
   ``capacity`` models and, with a ``memory`` limit, their estimated sizes add up to at most
   ``memory``;
2. a model may be evicted only when it has no call in flight and has been resident at least
   ``min_residency_s`` (so two hot models cannot take one slot from each other in turns);
   among those, a spare replica of a model held elsewhere goes first, then the least
   recently used; as many are evicted as it takes to fit (several small for one large);
3. a model unused for ``idle_grace_s`` is unloaded everywhere;
4. a model wants ``ceil(rate / rate_per_replica)`` endpoints (at least one, at most all); an
   extra replica is loaded only into a free slot (never by evicting), and one replica is taken
   back when the rate has fallen below what one fewer would carry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from contracts.config import ResidencyConfig


@dataclass(frozen=True)
class FleetView:
    """What the pool holds and how its models are used, at ``now`` (seconds, one clock)."""

    endpoints: tuple[str, ...]  # admitted endpoints, in a stable order
    capacity: int | None  # models per endpoint (None: no count limit)
    held: Mapping[str, Mapping[str, float]]  # endpoint -> {model: resident since}
    loading: Mapping[str, frozenset[str]] = field(default_factory=dict)  # endpoint -> models
    last_used: Mapping[str, float] = field(default_factory=dict)  # model -> last call
    rate: Mapping[str, float] = field(default_factory=dict)  # model -> requests/s
    busy: frozenset[str] = frozenset()  # models with calls in flight (or waiting for a load)
    memory: float | None = None  # bytes per endpoint (None: no size limit)
    sizes: Mapping[str, float] = field(default_factory=dict)  # model -> estimated bytes
    default_size: float = 0.0  # estimate of a model not in ``sizes``

    def models_on(self, endpoint: str) -> set[str]:
        return set(self.held.get(endpoint, {})) | set(self.loading.get(endpoint, ()))

    def holders(self, model: str) -> list[str]:
        return [e for e in self.endpoints if model in self.models_on(e)]

    def size(self, model: str) -> float:
        return self.sizes.get(model, self.default_size)

    def fits(self, endpoint: str, model: str, without: frozenset[str] = frozenset()) -> bool:
        """``model`` fits on ``endpoint`` once the models in ``without`` are gone."""
        on = self.models_on(endpoint) - without
        if self.capacity is not None and len(on) + 1 > self.capacity:
            return False
        return (self.memory is None
                or sum(self.size(m) for m in on) + self.size(model) <= self.memory)


@dataclass(frozen=True)
class Load:
    endpoint: str
    model: str
    evict: tuple[str, ...] = ()  # unloaded from ``endpoint`` first, to make room


@dataclass(frozen=True)
class Unload:
    endpoint: str
    model: str
    reason: str  # "idle" | "spare" | "evicted"


@dataclass(frozen=True)
class NoRoom:
    """No endpoint can take the model now; ``reason`` says why (for the caller's 503)."""

    reason: str


def evictable(view: FleetView, endpoint: str, model: str, spec: ResidencyConfig,
              now: float) -> bool:
    since = view.held.get(endpoint, {}).get(model)
    return (since is not None and model not in view.busy
            and now - since >= spec.min_residency_s)


def _victim_key(view: FleetView, model: str) -> tuple[bool, float, str]:
    """Eviction order: a spare replica before an only copy, then least recently used."""
    return (len(view.holders(model)) <= 1, view.last_used.get(model, 0.0), model)


def _victims(view: FleetView, endpoint: str, model: str, spec: ResidencyConfig,
             now: float) -> tuple[str, ...] | None:
    """The models ``endpoint`` unloads so that ``model`` fits, in eviction order; None when
    evicting everything it may evict is not enough."""
    candidates = sorted((m for m in view.held.get(endpoint, {})
                         if evictable(view, endpoint, m, spec, now)),
                        key=lambda m: _victim_key(view, m))
    chosen: list[str] = []
    for victim in candidates:
        chosen.append(victim)
        if view.fits(endpoint, model, frozenset(chosen)):
            return tuple(chosen)
    return None


def place_load(model: str, view: FleetView, spec: ResidencyConfig,
               now: float) -> Load | NoRoom:
    """Where to load ``model`` (held nowhere): where it fits on the emptiest endpoint, else
    the endpoint whose eviction costs least (no only copies, least recently used, fewest)."""
    if not view.endpoints:
        return NoRoom("no admitted endpoint")
    targets = [e for e in view.endpoints if model not in view.models_on(e)]
    free = [e for e in targets if view.fits(e, model)]
    if free:
        return Load(min(free, key=lambda e: (len(view.models_on(e)),
                                             sum(view.size(m) for m in view.models_on(e)),
                                             view.endpoints.index(e))), model)
    plans = [(e, v) for e in targets if (v := _victims(view, e, model, spec, now))]
    if not plans:
        return NoRoom("no endpoint has room for it, counting only models not in use and "
                      f"loaded at least {spec.min_residency_s:g}s ago")

    def cost(plan: tuple[str, tuple[str, ...]]) -> tuple[int, float, int]:
        victims = plan[1]
        return (sum(_victim_key(view, v)[0] for v in victims),
                max(view.last_used.get(v, 0.0) for v in victims), len(victims))

    endpoint, victims = min(plans, key=cost)
    return Load(endpoint, model, evict=victims)


def wanted_replicas(model: str, view: FleetView, spec: ResidencyConfig) -> int:
    """How many endpoints ``model`` should be on for its request rate (at least one)."""
    if spec.rate_per_replica is None or not view.endpoints:
        return 1
    want = math.ceil(view.rate.get(model, 0.0) / spec.rate_per_replica)
    return max(1, min(want, len(view.endpoints)))


def plan(view: FleetView, spec: ResidencyConfig, now: float) -> list[Load | Unload]:
    """The leader's periodic decisions: idle unloads, then replica changes for hot models."""
    actions: list[Load | Unload] = []
    models = sorted({m for e in view.endpoints for m in view.held.get(e, {})})
    for model in models:
        idle_for = now - view.last_used.get(model, -math.inf)
        holders = [e for e in view.endpoints if model in view.held.get(e, {})]
        if idle_for >= spec.idle_grace_s:
            actions += [Unload(e, model, "idle") for e in holders
                        if evictable(view, e, model, spec, now)]
            continue
        want = wanted_replicas(model, view, spec)
        have = len(view.holders(model))
        if want > have:
            actions += _grow(model, view, want - have)
        elif have > 1 and want < have and holders:
            spare = [e for e in holders if evictable(view, e, model, spec, now)]
            if spare and len(holders) > 1:
                actions.append(Unload(spare[-1], model, "spare"))
    return actions


def _grow(model: str, view: FleetView, more: int) -> list[Load | Unload]:
    """Extra replicas of ``model`` in free slots only (a hot model never evicts for a spare)."""
    free = sorted((e for e in view.endpoints
                   if model not in view.models_on(e) and view.fits(e, model)),
                  key=lambda e: (len(view.models_on(e)), view.endpoints.index(e)))
    return [Load(e, model) for e in free[:more]]
