"""The control loop: collect -> decide -> act, per pool, with the clock and ticker injected.

Where it sits: the middle of the autoscaler process (knative's ``scaling/multiscaler.go``).
:class:`Controller` owns one collector loop (every ``scrape_s``) and one decide-and-act loop
per pool (every ``tick_s``, or at once when the pool is woken), all tasks of one
:class:`asyncio.TaskGroup` in :meth:`Controller.run`: cancelling ``run`` cancels them all,
and an unexpected error in one ends the whole group (no orphaned loop keeps running).

- :meth:`Controller.step` is one tick of one pool: read the size from the actuator, ask the
  collector for an :class:`~autoscaler.policy.Observation`, :func:`~autoscaler.policy.decide`,
  and - if this replica may act (leader) and the decision differs from the size - scale.
  An :class:`~autoscaler.errors.ActuatorError` is recorded and logged; the next tick retries.
- :meth:`Controller.activate` is the gateway's activation (HTTP or Redis): it marks the pool
  active in the collector and wakes its loop, so the decision and the actuator call follow
  within milliseconds, not at the next tick, and without waiting for a scrape.
- :meth:`Controller.floors` is the planning step over all pools: for every model with a
  traffic split, the replicas it needs in all (the sum of its variant pools' own signal
  proposals at their last decisions) go through :func:`~autoscaler.policy.plan_split`, and
  the highest floor per pool (:func:`~autoscaler.policy.merge_floors`) joins that pool's
  :class:`~autoscaler.policy.Observation` as ``floors``: a canary's pool starts before
  traffic shifts to it, and the stable pool is not reduced until the canary's is ready.
- Each pool keeps its last ``history`` decisions for ``GET /status``.

Time: ``clock()`` gives epoch seconds (what the policy's schedules need); ``ticker.wait``
returns after the interval or as soon as the given event is set. Tests pass a manual ticker
and step synthetic time; nothing here sleeps on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from autoscaler.actuators.base import Actuator, ReadyCounter
from autoscaler.collector import Collector
from autoscaler.errors import ActuatorError, SignalError
from autoscaler.metrics import AutoscalerMetrics
from autoscaler.policy import (
    Decision,
    Floor,
    ScalerSpec,
    ScalerState,
    Variant,
    decide,
    merge_floors,
    plan_split,
)
from autoscaler.policy.fallback import LossState, fallback_floor, track_loss

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Ticker(Protocol):
    async def wait(self, seconds: float, wake: asyncio.Event) -> None:
        """Return after ``seconds``, or as soon as ``wake`` is set."""
        ...


class RealTicker:
    async def wait(self, seconds: float, wake: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await wake.wait()


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One tick of one pool, as ``GET /status`` shows it."""

    at: float
    current: int
    ready: int
    desired: int
    valid: bool
    dominant: str
    clipped_by: tuple[str, ...]
    signals: dict[str, int]
    reason: str
    activated: bool
    acted: bool
    leader: bool
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["clipped_by"] = list(self.clipped_by)
        return d


@dataclass
class PoolStatus:
    history: deque[DecisionRecord]
    state: ScalerState = field(default_factory=ScalerState)
    last: DecisionRecord | None = None
    activations: int = 0
    errors: int = 0


class Controller:
    def __init__(self, specs: Mapping[str, ScalerSpec], collector: Collector,
                 actuator: Actuator, *, clock: Clock, ticker: Ticker | None = None,
                 tick_s: float = 1.0, scrape_s: float = 1.0, history: int = 50,
                 leader: Callable[[], bool] | None = None,
                 metrics: AutoscalerMetrics | None = None,
                 splits: Mapping[str, Sequence[Variant]] | None = None) -> None:
        self.specs = dict(specs)
        self.splits = {m: [v for v in vs if v.pool in specs] for m, vs in (splits or {}).items()}
        self.collector = collector
        self.actuator = actuator
        self.clock = clock
        self.ticker = ticker or RealTicker()
        self.tick_s = tick_s
        self.scrape_s = scrape_s
        self.leader = leader or (lambda: True)
        self.metrics = metrics or AutoscalerMetrics()
        self.pools = {pool: PoolStatus(deque(maxlen=history)) for pool in specs}
        self._wake = {pool: asyncio.Event() for pool in specs}
        self.signal_errors: list[SignalError] = []
        # Replicas each pool with a fallback pool lost to interruptions (spot reclaims).
        self.losses: dict[str, LossState] = {}

    # ---------------------------------------------------------------- the loops

    async def run(self) -> None:
        """Run the collector and every pool's loop until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._collect_loop(), name="collect")
            for pool in self.pools:
                tg.create_task(self._pool_loop(pool), name=f"decide-{pool}")

    async def _collect_loop(self) -> None:
        never = asyncio.Event()
        while True:
            await self.collect()
            await self.ticker.wait(self.scrape_s, never)

    async def _pool_loop(self, pool: str) -> None:
        wake = self._wake[pool]
        while True:
            await self.ticker.wait(self.tick_s, wake)
            wake.clear()
            await self.step(pool)

    # ---------------------------------------------------------------- one tick

    async def collect(self) -> list[SignalError]:
        errors = await self.collector.collect(self.clock())
        for exc in errors:
            log.debug("signal: %s", exc)
        self.signal_errors = errors
        return errors

    def activate(self, pool: str, source: str = "http") -> bool:
        """The gateway holds a request for ``pool``: decide and act now. False: no such pool."""
        if pool not in self.pools or not self.collector.activate(pool, self.clock()):
            return False
        self.pools[pool].activations += 1
        self.metrics.activations.labels(pool, source).inc()
        self._wake[pool].set()
        return True

    async def _size(self, pool: str) -> tuple[int, int]:
        current = await self.actuator.current(pool)
        if isinstance(self.actuator, ReadyCounter):
            return current, await self.actuator.ready(pool)
        return current, current

    async def step(self, pool: str) -> DecisionRecord:
        """One collect-free decide-and-act tick for ``pool`` at ``clock()``."""
        status, now = self.pools[pool], self.clock()
        leader = self.leader()
        self.metrics.leader.set(1 if leader else 0)
        try:
            current, ready = await self._size(pool)
        except ActuatorError as exc:
            return self._failed(pool, now, exc, leader)
        obs = self.collector.observe(pool, now, current, ready)
        floors = self._fallback_floors(pool)
        floor = self.floors().get(pool)
        if floor is not None:
            floors = (*floors, floor)
        if floors:
            obs = replace(obs, floors=(*obs.floors, *floors))
        decision, status.state = decide(self.specs[pool], obs, status.state, now)
        self._track_loss(pool, ready, decision.desired)
        acted, error = False, None
        if leader and decision.desired != current:
            try:
                await self.actuator.scale(pool, decision.desired)
                acted = True
            except ActuatorError as exc:
                error = str(exc)
                self._count_error(pool, exc)
        record = self._record(pool, now, current, ready, decision, obs.activated, acted,
                              leader, error)
        if acted:
            log.info("%s: %d -> %d (%s)", pool, current, decision.desired, decision.reason)
        return record

    def _track_loss(self, pool: str, ready: int, desired: int) -> None:
        """For a pool with a fallback: count replicas lost without a decision; a new loss
        wakes the fallback's loop at once."""
        fallback = self.specs[pool].fallback_pool
        if fallback is None or fallback not in self.pools:
            return
        before = self.losses.get(pool, LossState(ready, desired))
        after = self.losses[pool] = track_loss(before, ready, desired)
        if after.lost > before.lost:
            log.warning("%s: %d replica(s) lost without a decision (interruption); surging "
                        "fallback pool %s", pool, after.lost - before.lost, fallback)
            self._wake[fallback].set()

    def _fallback_floors(self, pool: str) -> tuple[Floor, ...]:
        """Floors on ``pool`` for the replicas the pools it backs have lost."""
        floors = []
        for spot, loss in self.losses.items():
            spec = self.specs[spot]
            if spec.fallback_pool == pool and loss.lost > 0:
                n = fallback_floor(loss.lost, spec.gpus_per_replica,
                                   self.specs[pool].gpus_per_replica)
                floors.append(Floor(n, f"{spot} lost {loss.lost} replica(s)"))
        return tuple(floors)

    def _record(self, pool: str, now: float, current: int, ready: int, d: Decision,
                activated: bool, acted: bool, leader: bool,
                error: str | None) -> DecisionRecord:
        record = DecisionRecord(now, current, ready, d.desired, d.valid, d.dominant,
                                d.clipped_by, dict(d.signals), d.reason, activated, acted,
                                leader, error)
        status = self.pools[pool]
        status.history.append(record)
        status.last = record
        self.metrics.decision(pool, desired=d.desired, current=current, ready=ready,
                              demand=self.collector.demand(pool, now), dominant=d.dominant,
                              clipped_by=d.clipped_by, valid=d.valid,
                              gpus_per_replica=self.specs[pool].gpus_per_replica)
        return record

    def _count_error(self, pool: str, exc: ActuatorError) -> None:
        self.pools[pool].errors += 1
        self.metrics.scale_errors.labels(pool).inc()
        log.warning("%s: %s", pool, exc)

    def _failed(self, pool: str, now: float, exc: ActuatorError,
                leader: bool) -> DecisionRecord:
        self._count_error(pool, exc)
        last = self.pools[pool].last
        record = DecisionRecord(now, last.current if last else 0, last.ready if last else 0,
                                last.desired if last else 0, False, "none", (), {},
                                "cannot read the pool's size", False, False, leader, str(exc))
        self.pools[pool].history.append(record)
        return record

    # ---------------------------------------------------------------- split planning
    def floors(self) -> dict[str, Floor]:
        """Per pool, the highest floor the split plans ask for (from the last decisions)."""
        plans = []
        for model, variants in self.splits.items():
            pools = {v.pool for v in variants}
            lasts = {p: self.pools[p].last for p in pools}
            known = {p: r for p, r in lasts.items() if r is not None}
            if not known:
                continue
            total = sum(max(r.signals.values(), default=r.desired) for r in known.values())
            plans.append(plan_split(model, total, variants,
                                    ready={p: r.ready for p, r in known.items()},
                                    current={p: r.current for p, r in known.items()}))
        return merge_floors(plans)

    # ---------------------------------------------------------------- status

    def status(self, history: int | None = None) -> dict[str, Any]:
        """Per pool: current, ready, desired, reason and the last decisions (newest last)."""
        pools: dict[str, Any] = {}
        for pool, s in self.pools.items():
            last = s.last
            items = list(s.history)[-history:] if history else list(s.history)
            pools[pool] = {
                "current": last.current if last else None,
                "ready": last.ready if last else None,
                "desired": last.desired if last else None,
                "gpus_per_replica": self.specs[pool].gpus_per_replica,
                "reason": last.reason if last else "no decision yet",
                "dominant": last.dominant if last else None,
                "activations": s.activations, "errors": s.errors,
                "decisions": [r.as_dict() for r in items],
            }
        return {"leader": self.leader(), "pools": pools}
