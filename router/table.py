"""The route table: (model, version) -> pool, timeouts, body limit and traffic split.

Where it sits: the first routing step of every request. The gateway builds one table per
loaded config (and per change of split weights) and swaps it atomically; a lookup is one or
two dict probes. A request that names a version explicitly is never split: it goes to that
version's route. A split variant resolves to a target :class:`Route` via :meth:`target`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from contracts.config import Config, SplitConfig, TimeoutConfig, variant_pool
from router.errors import UnknownModel
from router.splits import Shadow, Split, Variant

Weights = Mapping[str, Mapping[str, float]]  # model -> variant -> weight


@dataclass(frozen=True, slots=True)
class Route:
    model: str
    version: str  # "" when the client named no version
    pool: str
    timeouts: TimeoutConfig
    max_body_bytes: int
    split: Split | None = None


def build_split(cfg: Config, model: str, sc: SplitConfig,
                weights: Mapping[str, float] | None = None) -> Split:
    weights = weights or {}
    variants = {}
    for name, vc in sc.variants.items():
        pool = variant_pool(cfg, model, vc)
        assert pool is not None, "checked by parse_config"
        variants[name] = Variant(name, float(weights.get(name, vc.weight)),
                                 vc.model or model, vc.version or "", pool)
    shadow = None
    if sc.shadow is not None:
        shadow = Shadow(variants[sc.shadow.variant], sc.shadow.percent,
                        sc.shadow.max_concurrency)
    serving = tuple(v for v in variants.values() if shadow is None or v is not shadow.variant)
    return Split(model, serving, sc.baseline_name, sc.sticky_header, sc.pin_header, shadow,
                 variants)


class RouteTable:
    def __init__(self, cfg: Config, weights: Weights | None = None) -> None:
        self._cfg = cfg
        self._default: dict[str, Route] = {}
        self._unsplit: dict[str, Route] = {}
        self._versioned: dict[tuple[str, str], Route] = {}
        self._targets: dict[tuple[str, str], Route] = {}
        for name, m in cfg.models.items():
            limit = m.max_body_bytes or cfg.limits.max_body_bytes
            base = cfg.pools[m.pool].timeouts
            plain = Route(name, "", m.pool, m.timeouts.apply(base), limit)
            self._unsplit[name] = plain
            split = None
            if m.split is not None:
                split = build_split(cfg, name, m.split, (weights or {}).get(name))
            self._default[name] = replace(plain, split=split)
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
            plain = self._unsplit.get(model)
            if plain is None:
                raise UnknownModel(model, version)
            return replace(plain, version=version)
        route = self._default.get(model)
        if route is None:
            raise UnknownModel(model, version)
        return route

    def target(self, route: Route, variant: Variant) -> Route:
        """The route a split variant resolves to (its pool's timeouts, the split's body limit)."""
        key = (route.model, variant.name)
        cached = self._targets.get(key)
        if cached is None or cached.pool != variant.pool:
            model_cfg = self._cfg.models.get(variant.model) or self._cfg.models[route.model]
            timeouts = model_cfg.timeouts.apply(self._cfg.pools[variant.pool].timeouts)
            cached = Route(variant.model, variant.version, variant.pool, timeouts,
                           route.max_body_bytes)
            self._targets[key] = cached
        return cached

    def routes(self) -> list[Route]:
        """Every model's default route followed by its version overrides, sorted by name."""
        return sorted(
            [*self._default.values(), *self._versioned.values()],
            key=lambda r: (r.model, r.version),
        )

    def splits(self) -> dict[str, Split]:
        return {name: r.split for name, r in self._default.items() if r.split is not None}
