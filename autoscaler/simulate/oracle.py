"""The true oracle: the fewest replica-seconds that meet the SLO, planned offline.

Where it sits: :mod:`.runner` runs it beside the policies. It sees the whole trace and the pool
model, and it pays what every policy pays: the same start-up (drawn the same way), the same
balancing, the same latency model, in the same :func:`~autoscaler.simulate.model.simulate`.

The plan: each second needs ``ceil(arrivals / (ORACLE_LOAD x full rate))`` replicas; a replica
is asked for ``lead`` seconds ahead of the second that needs it (the start-up's 97th
percentile) and kept through gaps shorter than that (leaving and coming back would cost more
start-up than the gap). Then repair: simulate the plan, add a replica to every second that
violated the SLO (and the one before), plan again - until a run has no violation second or
``ROUNDS`` are spent. The cheapest violation-free plan found is the oracle (if none is, the
one with the fewest violation seconds). Policies are causal and see metrics late; a plan that
knows the future and packs replicas at ``ORACLE_LOAD`` is a lower bound for them in practice
(tests check it on several traces).
"""

from __future__ import annotations

import math

import numpy as np

from autoscaler.simulate.model import IntArray, LatencyView, RunResult, SecondStats, Trace, simulate
from autoscaler.simulate.profile import PoolProfile

ORACLE_LOAD = 0.85  # of a replica's full-batch rate: the start of the search
ROUNDS = 6


class PlanPolicy:
    """Replays a plan: ``plan[t]`` replicas from second ``t`` on."""

    name = "oracle"
    interval_s = 1.0
    wakes_on_arrival = False
    metrics_delay_s = 0.0

    def __init__(self, plan: IntArray) -> None:
        self.plan = plan

    def observe(self, stats: SecondStats) -> None:
        return None

    def decide(self, now: float, ready: int, current: int, latency: LatencyView) -> int:
        i = int(now)
        return int(self.plan[i]) if i < len(self.plan) else 0


def lead_s(profile: PoolProfile) -> int:
    """How far ahead a replica is asked for: the start-up's 97th percentile."""
    sigma = math.sqrt(math.log(1 + profile.startup_cv**2))
    return math.ceil(profile.startup_s * math.exp(-sigma**2 / 2 + 1.88 * sigma)) + 1


def plan_ahead(need: IntArray, lead: int, max_replicas: int) -> IntArray:
    """``plan[t] = max(need[t .. t + lead])``: started in time, kept through short gaps."""
    padded = np.concatenate([need, np.zeros(lead + 1, dtype=np.int64)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, lead + 1)
    plan: IntArray = np.minimum(windows.max(axis=1)[: len(need) + 1], max_replicas)
    return plan


def need_per_second(per_second: IntArray, profile: PoolProfile) -> IntArray:
    per_replica = ORACLE_LOAD * profile.max_rate
    need: IntArray = np.ceil(per_second / per_replica - 1e-9).astype(np.int64)
    return need


def oracle(trace: Trace, profile: PoolProfile, seed: int = 0) -> RunResult:
    """The cheapest violation-free plan found (see the module docstring)."""
    need = need_per_second(trace.per_second(), profile)
    lead = lead_s(profile)
    best: RunResult | None = None
    for _ in range(ROUNDS):
        plan = plan_ahead(need, lead, profile.max_replicas)
        run = simulate(trace, profile, PlanPolicy(plan), int(plan[0]), seed)
        if best is None or _better(run, best):
            best = run
        bad = np.flatnonzero(run.violation[: len(need)])
        if len(bad) == 0:
            break
        need[bad] += 1
        need[np.maximum(bad - 1, 0)] += 1
    assert best is not None
    return best


def _better(a: RunResult, b: RunResult) -> bool:
    va, vb = int(a.violation.sum()), int(b.violation.sum())
    return va < vb or (va == vb and a.replica_s < b.replica_s)
