"""Traffic management at run time: split weights, pins and drains, progressive rollouts.

Where it sits: beside the data plane, never on a request's critical path. The front doors
read the split from the route table (the request path's step is
:class:`gateway.pipeline.splits.SplitChooser`, reachable here as :attr:`TrafficManager.decide`);
this manager changes the table's weights (through
:meth:`gateway.pipeline.runtime.Runtime.set_weights`) when an operator calls the admin API, when
a rollout steps, or when another replica announced a change in the shared store
(:mod:`gateway.traffic.sync` runs that loop). It keeps the per-variant counters rollouts judge
on (:mod:`gateway.traffic.fleetstats`) and, when leading, drives rollouts with the pure
:mod:`router.rollout` state machine.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from random import Random
from typing import Literal

from adapters.outage import Outage
from gateway.adapters.state import Doc, Snapshot, StateStore
from gateway.errors import BadRequest, NotFound
from gateway.pipeline.runtime import Runtime
from gateway.pipeline.splits import SplitChooser
from gateway.traffic.fleetstats import VariantStats, sum_docs, window
from gateway.traffic.rollouts import state_from_doc, state_to_doc
from gateway.traffic.shadow import ShadowMirror
from router.rollout import (
    RolloutSpec,
    RolloutState,
    advance,
    operator,
    start,
)
from router.splits import Split

log = logging.getLogger("servegate.traffic")


class TrafficManager:
    def __init__(self, runtime: Runtime, store: StateStore, mirror: ShadowMirror,
                 tick_s: float = 2.0, resync_s: float = 1.0,
                 clock: Callable[[], float] = time.time, rng: Random | None = None) -> None:
        self.runtime = runtime
        self.store = store
        self.mirror = mirror
        self.stats = VariantStats()
        self.tick_s = tick_s
        self.resync_s = resync_s
        self._clock = clock
        self.rollouts: dict[str, tuple[RolloutState, Doc]] = {}
        self.outage = Outage(log, "shared state store")  # logs an outage once, not every tick
        self.decide = SplitChooser(runtime, rng).decide  # the request path's split step

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
        await self.store.save_rollout(state.model, state_to_doc(state, base))

    # -- following the shared store ------------------------------------------------------
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
        self.rollouts = {m: state_from_doc(d) for m, d in snap.rollouts.items()}

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
