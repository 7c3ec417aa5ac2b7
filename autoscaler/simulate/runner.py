"""Run every policy on every trace: servegate, HPA-like, KPA-like and the oracle.

Where it sits: between the CLI (which picks traces and the profile) and the report. Every
policy starts with the same ready replicas (what the oracle wants at t=0, at least one) and
sees the same arrivals. Traces run in worker processes when there are several and more than
one core; the results do not depend on it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from autoscaler.simulate.baselines import HpaLike, KpaLike, Oracle
from autoscaler.simulate.model import RunResult, SimPolicy, Trace, simulate
from autoscaler.simulate.profile import PoolProfile
from autoscaler.simulate.servegate import ServegatePolicy, sim_spec

POLICIES = ("servegate", "hpa", "kpa", "oracle")


@dataclass(frozen=True)
class TraceRun:
    trace: Trace
    profile: PoolProfile
    results: dict[str, RunResult]


def policies_for(trace: Trace, profile: PoolProfile) -> tuple[list[SimPolicy], int]:
    spec = sim_spec(profile)
    rate_target = spec.targets.rate_per_replica
    assert rate_target is not None
    oracle = Oracle(profile, trace.per_second(), rate_target)
    policies: list[SimPolicy] = [ServegatePolicy(spec), HpaLike(profile), KpaLike(profile),
                                 oracle]
    return policies, max(1, oracle.initial())


def run_trace(trace: Trace, profile: PoolProfile) -> TraceRun:
    policies, initial = policies_for(trace, profile)
    results = {p.name: simulate(trace, profile, p, initial) for p in policies}
    return TraceRun(trace, profile, results)


def run_all(jobs: Sequence[tuple[Trace, PoolProfile]], workers: int | None = None) -> list[
        TraceRun]:
    workers = workers if workers is not None else min(len(jobs), os.cpu_count() or 1)
    if workers <= 1 or len(jobs) <= 1:
        return [run_trace(t, p) for t, p in jobs]
    with ProcessPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(run_trace, [t for t, _ in jobs], [p for _, p in jobs]))
