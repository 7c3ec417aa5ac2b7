"""Each baseline family at its best: a parameter grid per family and its Pareto front.

Where it sits: ``servegate simulate --fronts``. For every trace each family's grid runs (as
:class:`~autoscaler.simulate.runner.Job` s, in parallel), and the points no other point of the
family beats on both SLO-violation seconds and replica-seconds form its front. The upstream
defaults are points of the grids (``hpa``: rps at 70%, 300 s stabilization, +4 pods/+100%;
``keda``: the same HPA, polling 30 s, cooldown 300 s; ``kpa-concurrency``: 70%, 60 s window,
200% panic), so each family's front is at least as good as its default.

The grids sweep what an operator tuning the system would: the target utilization (55, 70,
85%), and per family the knobs that trade reaction for cost - HPA's scale-down
stabilization (60, 300 s) and scale-up policy (+100% or +900% per 15 s), KEDA's polling
(15, 30 s) and cooldown (60, 300 s), KPA's stable window (30, 60 s) and panic threshold
(150, 200%). 12 points per family, 60 in all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

from autoscaler.simulate.baselines import HpaParams, KedaParams, KpaParams
from autoscaler.simulate.model import RunResult, Trace
from autoscaler.simulate.profile import PoolProfile
from autoscaler.simulate.runner import Job

FAMILIES = ("hpa", "hpa+queue", "keda", "kpa-rps", "kpa-concurrency")
UTILIZATIONS = (0.55, 0.70, 0.85)


@dataclass(frozen=True)
class Point:
    """One configuration's totals on one trace."""

    family: str
    params: dict[str, Any]
    slo_violation_s: int
    replica_s: int
    requests_over_slo_pct: float

    def doc(self) -> dict[str, Any]:
        return {"params": self.params, "slo_violation_s": self.slo_violation_s,
                "replica_s": self.replica_s,
                "requests_over_slo_pct": round(self.requests_over_slo_pct, 4)}


def grid(family: str) -> list[Any]:
    """The parameter sets of a family (their ``label()`` is what the report shows)."""
    if family in ("hpa", "hpa+queue"):
        metric = "rps" if family == "hpa" else "rps+queue"
        return [HpaParams(metric=metric, utilization=u, stabilization_down_s=s,
                          up_percent=up)
                for u, s, up in product(UTILIZATIONS, (60.0, 300.0), (100.0, 900.0))]
    if family == "keda":
        return [KedaParams(hpa=HpaParams(utilization=u), polling_s=poll, cooldown_s=cool)
                for u, poll, cool in product(UTILIZATIONS, (15.0, 30.0), (60.0, 300.0))]
    if family in ("kpa-rps", "kpa-concurrency"):
        metric = family.removeprefix("kpa-")
        return [KpaParams(metric=metric, utilization=u, stable_window_s=w, panic_threshold=pt)
                for u, w, pt in product(UTILIZATIONS, (30.0, 60.0), (1.5, 2.0))]
    raise ValueError(f"unknown family {family!r}")


def family_jobs(trace: Trace, profile: PoolProfile, seed: int = 0) -> list[Job]:
    return [Job(trace, profile, fam, params, seed, keep_series=False)
            for fam in FAMILIES for params in grid(fam)]


def point(job: Job, result: RunResult) -> Point:
    return Point(job.family, job.params.label(), int(result.violation.sum()),
                 round(result.replica_s), result.requests_over_slo_pct)


def pareto(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on both violations and cost (ties kept once)."""
    out: list[Point] = []
    for p in sorted(points, key=lambda p: (p.slo_violation_s, p.replica_s)):
        if not out or p.replica_s < out[-1].replica_s:
            out.append(p)
    return out


def dominates(p: Point, violation_s: int, replica_s: int) -> bool:
    """``p`` is at least as good on both and better on one (Pareto dominance)."""
    no_worse = p.slo_violation_s <= violation_s and p.replica_s <= replica_s
    return no_worse and (p.slo_violation_s < violation_s or p.replica_s < replica_s)


def fronts(points: Sequence[Point]) -> dict[str, list[Point]]:
    """Each family's Pareto front."""
    return {fam: pareto([p for p in points if p.family == fam]) for fam in FAMILIES}
