"""Run policies on traces: servegate, the baselines' named defaults, their grids, the oracle.

Where it sits: between the CLI (which picks traces, the profile, seeds) and the report. A
:class:`Job` is one simulation (a policy family with its parameters, on a trace, with a seed
for the pool's random draws); jobs run in worker processes when there are several and more
than one core, and the results do not depend on it. Every policy starts from the same ready
replicas (enough for the first start-up's arrivals at the oracle's load, at least one).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from autoscaler.simulate.baselines import (
    HpaLike,
    HpaParams,
    KedaHpa,
    KedaParams,
    KpaLike,
    KpaParams,
)
from autoscaler.simulate.model import RunResult, SimPolicy, Trace, simulate
from autoscaler.simulate.oracle import ORACLE_LOAD, lead_s, oracle
from autoscaler.simulate.profile import PoolProfile
from autoscaler.simulate.servegate import ServegatePolicy, sim_spec

# The named policies of every report: servegate, the upstream defaults, the oracle.
POLICIES = ("servegate", "hpa", "keda", "kpa", "oracle")


@dataclass(frozen=True)
class Job:
    """One simulation: ``family`` (a policy name) with ``params`` on ``trace``."""

    trace: Trace
    profile: PoolProfile
    family: str
    params: Any = None
    seed: int = 0
    keep_series: bool = True  # False: drop the per-second series (fronts need totals only)


@dataclass(frozen=True)
class TraceRun:
    trace: Trace
    profile: PoolProfile
    results: dict[str, RunResult]


def build(family: str, params: Any, profile: PoolProfile) -> SimPolicy:
    """The policy of a family (``hpa``, ``hpa+queue``, ``keda``, ``kpa-*``, ``servegate``)."""
    if family == "servegate":
        return ServegatePolicy(sim_spec(profile))
    if family.startswith("hpa"):
        return HpaLike(profile, params if params is not None else HpaParams())
    if family == "keda":
        return KedaHpa(profile, params if params is not None else KedaParams())
    if family.startswith("kpa"):
        return KpaLike(profile, params if params is not None else KpaParams())
    raise ValueError(f"unknown policy family {family!r}")


def initial_replicas(trace: Trace, profile: PoolProfile) -> int:
    head = trace.per_second()[: lead_s(profile)]
    peak = float(head.max()) if len(head) else 0.0
    return max(1, math.ceil(peak / (ORACLE_LOAD * profile.max_rate) - 1e-9))


def run_job(job: Job) -> RunResult:
    if job.family == "oracle":
        result = oracle(job.trace, job.profile, job.seed)
    else:
        policy = build(job.family, job.params, job.profile)
        result = simulate(job.trace, job.profile, policy,
                          initial_replicas(job.trace, job.profile), job.seed)
    return result if job.keep_series else _totals_only(result)


def _totals_only(r: RunResult) -> RunResult:
    """The result with its per-second series cut to what the scores need."""
    return RunResult(r.policy, r.trace, r.arrivals, r.replicas[:0], r.ready[:0], r.p99[:0],
                     r.violation, r.over_slo, r.timed_out, r.replica_s, r.scale_events,
                     r.max_replicas)


def run_jobs(jobs: Sequence[Job], workers: int | None = None) -> list[RunResult]:
    """Every job's result, in order; in ``workers`` processes (default: the cores)."""
    workers = workers if workers is not None else os.cpu_count() or 1
    if workers <= 1 or len(jobs) <= 1:
        return [run_job(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as ex:
        return list(ex.map(run_job, jobs, chunksize=1))


def named_jobs(trace: Trace, profile: PoolProfile, seed: int = 0) -> list[Job]:
    """servegate, HPA, KEDA and KPA at their defaults, and the oracle."""
    return [Job(trace, profile, name, None, seed) for name in POLICIES]


def run_all(jobs: Sequence[tuple[Trace, PoolProfile]], workers: int | None = None,
            seed: int = 0) -> list[TraceRun]:
    """The named policies on every trace."""
    flat = [j for t, p in jobs for j in named_jobs(t, p, seed)]
    results = run_jobs(flat, workers)
    out = []
    for i, (t, p) in enumerate(jobs):
        chunk = results[i * len(POLICIES):(i + 1) * len(POLICIES)]
        out.append(TraceRun(t, p, dict(zip(POLICIES, chunk, strict=True))))
    return out
