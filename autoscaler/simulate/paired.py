"""Paired seeds: servegate against each named policy over many realizations of a trace.

Where it sits: ``servegate simulate --seeds N``. Realization ``s`` of a built-in trace (its
Poisson draws and event phases, :func:`autoscaler.simulate.traces.builtin`), or of a CSV trace
with ``--scale`` (its jitter), runs every named policy with the pool seeded by ``s`` too, so
the policies of one realization see the same arrivals and the same replica draws: the
differences are paired. Per policy: the mean of each score with a 95% confidence interval
(Student t over the seeds), and per pairing servegate's win rate (the share of seeds where it
has strictly fewer violation-seconds; ties counted apart) and its cost ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autoscaler.simulate.model import RunResult
from autoscaler.simulate.runner import POLICIES

# two-sided 95% Student t quantiles by degrees of freedom (normal beyond 30)
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
        10: 2.23, 12: 2.18, 15: 2.13, 19: 2.09, 20: 2.09, 24: 2.06, 29: 2.05}


def t95(df: int) -> float:
    if df <= 0:
        return math.inf
    keys = [k for k in _T95 if k <= df]
    return _T95[max(keys)] if df <= 29 else 1.96


@dataclass(frozen=True)
class Interval:
    mean: float
    half: float  # the 95% CI is mean +- half

    def text(self, fmt: str = ".0f") -> str:
        return f"{self.mean:{fmt}} ± {self.half:{fmt}}"


def interval(values: Sequence[float]) -> Interval:
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) < 2:
        return Interval(float(arr.mean()) if len(arr) else 0.0, math.inf)
    return Interval(float(arr.mean()), t95(len(arr) - 1) * float(arr.std(ddof=1))
                    / math.sqrt(len(arr)))


@dataclass(frozen=True)
class Pairing:
    """servegate against one policy over the seeds."""

    other: str
    wins: int  # seeds with strictly fewer violation-seconds
    ties: int
    cheaper: int  # seeds with fewer replica-seconds
    seeds: int
    cost_ratio: Interval  # servegate's replica-s / the other's


def summarize(by_seed: Sequence[dict[str, RunResult]]) -> tuple[dict[str, dict[str, Interval]],
                                                                 list[Pairing]]:
    """Per policy the mean and CI of each score; per pairing servegate's wins."""
    stats = {p: {"slo_violation_s": interval([float(r[p].violation.sum()) for r in by_seed]),
                 "replica_s": interval([r[p].replica_s for r in by_seed]),
                 "requests_over_slo_pct": interval([r[p].requests_over_slo_pct
                                                    for r in by_seed])}
             for p in POLICIES}
    pairs = []
    for other in POLICIES[1:]:
        sg = [int(r["servegate"].violation.sum()) for r in by_seed]
        ot = [int(r[other].violation.sum()) for r in by_seed]
        cost = [r["servegate"].replica_s / max(r[other].replica_s, 1e-9) for r in by_seed]
        pairs.append(Pairing(
            other, sum(a < b for a, b in zip(sg, ot, strict=True)),
            sum(a == b for a, b in zip(sg, ot, strict=True)),
            sum(r["servegate"].replica_s < r[other].replica_s for r in by_seed),
            len(by_seed), interval(cost)))
    return stats, pairs


def table(name: str, stats: dict[str, dict[str, Interval]], pairs: Sequence[Pairing]) -> str:
    n = pairs[0].seeds if pairs else 0
    head = f"{'policy':<10} {'SLO-viol s':>14} {'% req >SLO':>16} {'replica-s':>18}"
    rows = [f"== trace {name}: {n} paired seeds (mean ± 95% CI) ==", head, "-" * len(head)]
    for p, s in stats.items():
        rows.append(f"{p:<10} {s['slo_violation_s'].text():>14} "
                    f"{s['requests_over_slo_pct'].text('.3f'):>16} "
                    f"{s['replica_s'].text():>18}")
    for pr in pairs:
        rows.append(f"  servegate vs {pr.other}: fewer violation-s in {pr.wins}/{pr.seeds} "
                    f"(ties {pr.ties}), cheaper in {pr.cheaper}/{pr.seeds}, cost ratio "
                    f"{pr.cost_ratio.text('.2f')}")
    return "\n".join(rows)
