"""Traffic management at run time: split weights, pins and drains, progressive rollouts.

Where it sits: beside the data plane, never on a request's critical path. The front door
reads the split from the route table; this manager changes the table's weights (through
:meth:`gateway.runtime.Runtime.set_weights`) when an operator calls the admin API, when a
rollout steps, or when another replica announced a change in the shared store. It also keeps
per-variant counters that rollouts judge on, and (when leading) drives rollouts with the pure
:mod:`router.rollout` state machine.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from random import Random
from typing import Any, Literal

from gateway.errors import BadRequest, NotFound, StateStoreError
from gateway.metrics import LATENCY_BUCKETS
from gateway.outage import Outage
from gateway.runtime import Runtime
from gateway.shadow import ShadowMirror
from gateway.state import Doc, Snapshot, StateStore
from router.quantile import bucket_quantile, delta
from router.rollout import (
    HistoryEntry,
    RolloutSpec,
    RolloutState,
    WindowStats,
    advance,
    operator,
    start,
)
from router.splits import Shadow, Split, choose_variant, should_shadow
from router.table import Route

log = logging.getLogger("servegate.traffic")


@dataclass
class VariantCounters:
    requests: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))


class VariantStats:
    """Cumulative per-(model, variant) counters of this replica, fed by the front doors."""

    def __init__(self) -> None:
        self._counters: dict[str, VariantCounters] = {}

    def record(self, model: str, variant: str, ok: bool, seconds: float) -> None:
        key = f"{model}|{variant}"
        c = self._counters.get(key)
        if c is None:
            c = self._counters[key] = VariantCounters()
        c.requests += 1
        c.errors += 0 if ok else 1
        i = 0
        while i < len(LATENCY_BUCKETS) and seconds > LATENCY_BUCKETS[i]:
            i += 1
        c.buckets[i] += 1

    def doc(self, mirror: ShadowMirror | None = None) -> Doc:
        out: Doc = {k: asdict(c) for k, c in self._counters.items()}
        for (model, variant), a in (mirror.agreement.items() if mirror else ()):
            entry = out.setdefault(f"{model}|{variant}", asdict(VariantCounters()))
            entry["compared"], entry["agreed"] = a.compared, a.agreed
        return out


def sum_docs(docs: list[Doc]) -> Doc:
    total: Doc = {}
    for doc in docs:
        for key, entry in doc.items():
            mine = total.setdefault(key, {"requests": 0, "errors": 0, "compared": 0,
                                          "agreed": 0, "buckets": [0] * len(entry["buckets"])})
            for name in ("requests", "errors", "compared", "agreed"):
                mine[name] += entry.get(name, 0)
            mine["buckets"] = [a + b for a, b in zip(mine["buckets"], entry["buckets"],
                                                       strict=True)]
    return total


def window(now: Doc, base: Doc, model: str, variant: str) -> WindowStats:
    empty = {"requests": 0, "errors": 0, "compared": 0, "agreed": 0,
             "buckets": [0] * (len(LATENCY_BUCKETS) + 1)}
    a, b = now.get(f"{model}|{variant}", empty), base.get(f"{model}|{variant}", empty)
    compared = a.get("compared", 0) - b.get("compared", 0)
    agreed = a.get("agreed", 0) - b.get("agreed", 0)
    return WindowStats(
        requests=a["requests"] - b["requests"], errors=a["errors"] - b["errors"],
        p99_s=bucket_quantile(0.99, LATENCY_BUCKETS, delta(a["buckets"], b["buckets"])),
        agreement=agreed / compared if compared > 0 else None)


def _state_to_doc(state: RolloutState, base: Doc) -> Doc:
    doc = asdict(state)
    doc["base"] = base
    return doc


def _state_from_doc(doc: Doc) -> tuple[RolloutState, Doc]:
    spec = RolloutSpec(**{**doc["spec"], "steps": tuple(doc["spec"]["steps"])})
    history = tuple(HistoryEntry(**h) for h in doc["history"])
    state = RolloutState(doc["model"], doc["canary"], doc["baseline"], spec, doc["step"],
                         doc["step_started_at"], doc["status"], history)
    return state, doc.get("base", {})


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request to a split model goes: the chosen variant's route, maybe a shadow."""

    route: Route
    variant: str
    shadow: tuple[Route, Shadow] | None


class TrafficManager:
    def __init__(self, runtime: Runtime, store: StateStore, mirror: ShadowMirror,
                 tick_s: float = 2.0, resync_s: float = 1.0,
                 clock: Callable[[], float] = time.time, rng: Random | None = None) -> None:
        self._rng = rng or Random()
        self.runtime = runtime
        self.store = store
        self.mirror = mirror
        self.stats = VariantStats()
        self.tick_s = tick_s
        self.resync_s = resync_s
        self._clock = clock
        self.rollouts: dict[str, tuple[RolloutState, Doc]] = {}
        self.outage = Outage(log, "shared state store")  # logs an outage once, not every tick

    # -- the request path -------------------------------------------------------------------
    def decide(self, route: Route, header: Callable[[str], str | None]) -> Decision:
        """Variant (pin, sticky key or weighted draw) and shadow for one request.

        ``header`` reads a request header / gRPC metadata value by lower-case name. Raises
        :class:`router.splits.UnknownVariant` for a pin naming no variant.
        """
        split = route.split
        assert split is not None
        sticky = header(split.sticky_header) if split.sticky_header else None
        variant = choose_variant(split, header(split.pin_header), sticky, self._rng.random())
        table = self.runtime.state.table
        shadow = None
        if split.shadow is not None and should_shadow(split, self._rng.random()) is not None:
            shadow = (table.target(route, split.shadow.variant), split.shadow)
        return Decision(table.target(route, variant), variant.name, shadow)

    # -- reading --------------------------------------------------------------------------
    def split(self, model: str) -> Split:
        route = self.runtime.state.table.lookup(model)
        if route.split is None:
            raise NotFound(f"model '{model}' has no traffic split")
        return route.split

    def routes(self) -> list[Doc]:
        out = []
        state = self.runtime.state
        for route in state.table.routes():
            entry: Doc = {"model": route.model, "version": route.version, "pool": route.pool}
            if route.split is not None:
                s = route.split
                entry["split"] = {
                    "baseline": s.baseline, "sticky_header": s.sticky_header,
                    "pin_header": s.pin_header,
                    "variants": [{"name": v.name, "weight": v.weight, "model": v.model,
                                  "version": v.version, "pool": v.pool} for v in s.variants],
                    "shadow": ({"variant": s.shadow.variant.name, "percent": s.shadow.percent}
                               if s.shadow else None),
                }
                if route.model in self.rollouts:
                    entry["rollout"] = self.rollout_doc(route.model)
            out.append(entry)
        return out

    def rollout_doc(self, model: str) -> Doc:
        if model not in self.rollouts:
            raise NotFound(f"no rollout for model '{model}'")
        state, _ = self.rollouts[model]
        doc = asdict(state)
        doc["weights"] = state.weights()
        return doc

    # -- changing -------------------------------------------------------------------------
    def _known(self, model: str, names: set[str]) -> Split:
        split = self.split(model)
        known = {v.name for v in split.variants}
        unknown = sorted(names - known)
        if unknown:
            raise BadRequest(f"unknown variant(s) {unknown} for model '{model}'; "
                             f"variants: {sorted(known)}")
        return split

    def _checked(self, model: str, weights: Mapping[str, float]) -> dict[str, float]:
        split = self._known(model, set(weights))
        clean: dict[str, float] = {}
        for name, w in weights.items():
            if not isinstance(w, int | float) or isinstance(w, bool) or not math.isfinite(w) \
                    or w < 0:
                raise BadRequest(f"weight of '{name}' must be a number >= 0, got {w!r}")
            clean[name] = float(w)
        merged = {**split.weights(), **clean}
        if not any(merged.values()):
            raise BadRequest("at least one variant needs a weight above 0")
        return merged

    def _apply_weights(self, model: str, weights: dict[str, float] | None) -> None:
        all_weights = dict(self.runtime.weights)
        if weights is None:
            all_weights.pop(model, None)
        else:
            all_weights[model] = weights
        self.runtime.set_weights(all_weights)

    async def set_weights(self, model: str, weights: Mapping[str, float]) -> dict[str, float]:
        merged = self._checked(model, weights)
        self._apply_weights(model, merged)
        await self.store.save_weights(model, merged)
        log.info("weights of %s set to %s", model, merged)
        return merged

    async def pin(self, model: str, variant: str) -> dict[str, float]:
        split = self._known(model, {variant})
        return await self.set_weights(model, {v.name: (100.0 if v.name == variant else 0.0)
                                              for v in split.variants})

    async def drain(self, model: str, variant: str) -> dict[str, float]:
        return await self.set_weights(model, {variant: 0.0})

    async def start_rollout(self, model: str, canary: str, baseline: str | None,
                            spec: RolloutSpec) -> Doc:
        baseline = baseline or self.split(model).baseline
        self._known(model, {canary, baseline})
        if canary == baseline:
            raise BadRequest("canary and baseline must be different variants")
        current = self.rollouts.get(model)
        if current is not None and current[0].status == "running":
            raise BadRequest(f"a rollout of '{model}' is already running")
        state = start(model, canary, baseline, spec, self._clock())
        base = sum_docs(await self._fleet())
        await self._save_rollout(state, base)
        return self.rollout_doc(model)

    async def stop_rollout(self, model: str, action: Literal["abort", "promote"]) -> Doc:
        if model not in self.rollouts:
            raise NotFound(f"no rollout for model '{model}'")
        state, base = self.rollouts[model]
        if state.status != "running":
            raise BadRequest(f"the rollout of '{model}' is already {state.status}")
        await self._save_rollout(operator(state, action, self._clock()), base)
        return self.rollout_doc(model)

    async def _save_rollout(self, state: RolloutState, base: Doc) -> None:
        self.rollouts[state.model] = (state, base)
        await self.set_weights(state.model, state.weights())
        await self.store.save_rollout(state.model, _state_to_doc(state, base))

    # -- background -----------------------------------------------------------------------
    async def resync(self) -> None:
        self._apply(await self.store.load())

    def _apply(self, snap: Snapshot) -> None:
        table = self.runtime.state.table
        valid: dict[str, dict[str, float]] = {}
        for model, weights in snap.weights.items():
            split = table.splits().get(model)
            if split is not None and set(weights) <= {v.name for v in split.variants}:
                valid[model] = weights
        if valid != self.runtime.weights:
            self.runtime.set_weights(valid)
        self.rollouts = {m: _state_from_doc(d) for m, d in snap.rollouts.items()}

    async def _fleet(self) -> list[Doc]:
        await self.store.publish_stats(self.stats.doc(self.mirror), ttl_s=self.tick_s * 5)
        return await self.store.fleet_stats()

    async def drive_once(self) -> None:
        """One rollout tick (the leader's job): judge each running rollout's current window."""
        running = {m: sb for m, sb in self.rollouts.items() if sb[0].status == "running"}
        await self.store.publish_stats(self.stats.doc(self.mirror), ttl_s=self.tick_s * 5)
        if not running or not await self.store.try_lead("rollouts", self.tick_s * 3):
            return
        fleet = sum_docs(await self.store.fleet_stats())
        for model, (state, base) in running.items():
            new = advance(state, window(fleet, base, model, state.canary),
                          window(fleet, base, model, state.baseline), self._clock())
            if new is state:
                continue
            if new.step != state.step:
                base = fleet  # a new step judges a new window
            log.info("rollout of %s: %s (%s)", model, new.history[-1].action,
                     new.history[-1].reason)
            await self._save_rollout(new, base)

    async def run(self) -> None:
        """Keep state in sync (announcements + periodic resync) and drive rollouts."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow())
            tg.create_task(self._every(self.resync_s, self.resync))
            tg.create_task(self._every(self.tick_s, self.drive_once))

    async def _follow(self) -> None:
        while True:
            try:
                async for _ in self.store.changes():
                    await self.resync()
            except StateStoreError as exc:
                self.outage.failed(exc, "serving with the last known weights")
                await asyncio.sleep(self.resync_s)

    async def _every(self, period: float, job: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await job()
            except StateStoreError as exc:
                self.outage.failed(exc, "serving with the last known weights")
            else:
                self.outage.ok()


def rollout_spec(doc: Mapping[str, Any]) -> RolloutSpec:
    """A spec from the admin API body (any field omitted keeps its default)."""
    fields = set(RolloutSpec.__dataclass_fields__)
    unknown = sorted(set(doc) - fields - {"canary", "baseline"})
    if unknown:
        raise BadRequest(f"unknown rollout field(s) {unknown}; allowed: {sorted(fields)}")
    spec = RolloutSpec()
    try:
        values = {k: doc[k] for k in fields if k in doc}
        if "steps" in values:
            steps = tuple(float(s) for s in values["steps"])
            if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(steps):
                raise ValueError("steps must be increasing percentages in (0, 100]")
            values["steps"] = steps
        spec = replace(spec, **values)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"invalid rollout spec: {exc}") from None
    return spec
