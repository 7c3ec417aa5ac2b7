"""Split-aware planning: replicas for each variant's pool of a model with a traffic split.

Where it sits: before the per-pool decisions. For a model whose traffic is split between
variants (stable and canaries, each served by a pool), the planner takes the replicas the
model needs as a whole and turns them into a :class:`~autoscaler.policy.spec.Floor` per pool,
which :func:`autoscaler.policy.decide` applies with the other minimums. Planning from the
model's total lets a canary pool start *before* traffic shifts to it, instead of waiting for
its own signals to show the load.

Shares are the variants' weights over the serving variants' sum; variants on the same pool add
up; a shadow variant's weight is already its fraction (mirrored traffic comes on top). The
stable pool is never planned below what its share needs, and while a canary pool is not ready
(fewer ready replicas than its share needs) the stable pool is not reduced below what its
share plus that canary's share need: that traffic stays on stable until the canary can take it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from autoscaler.policy.spec import Floor


@dataclass(frozen=True, slots=True)
class Variant:
    pool: str
    weight: float
    stable: bool = False
    shadow: bool = False  # weight is the mirrored fraction of the model's traffic


def replicas_for(total: int, share: float) -> int:
    """Replicas for ``share`` (0..1) of a model that needs ``total``: at least 1 if any."""
    if total <= 0 or share <= 0:
        return 0
    return max(1, math.ceil(total * share - 1e-9))


def shares(variants: Sequence[Variant]) -> tuple[dict[str, float], dict[str, float]]:
    """Per pool: the share of the model's traffic it serves, and the part diverted to it."""
    serving = sum(max(v.weight, 0.0) for v in variants if not v.shadow)
    total: dict[str, float] = {}
    diverted: dict[str, float] = {}
    for v in variants:
        if v.shadow:
            frac = max(v.weight, 0.0)
        else:
            frac = max(v.weight, 0.0) / serving if serving > 0 else 0.0
            diverted[v.pool] = diverted.get(v.pool, 0.0) + frac
        total[v.pool] = total.get(v.pool, 0.0) + frac
    return total, diverted


def plan_split(model: str, total: int, variants: Sequence[Variant],
               ready: Mapping[str, int], current: Mapping[str, int]) -> dict[str, Floor]:
    """A floor per variant pool for a model that needs ``total`` replicas in all.

    ``ready`` / ``current`` give each pool's ready and current replica counts.
    """
    share, diverted = shares(variants)
    plan = {pool: Floor(replicas_for(total, frac),
                        f"split {model}: {frac:.0%} of {total} replicas")
            for pool, frac in share.items()}
    stable = {v.pool for v in variants if v.stable}
    unready = [pool for pool, frac in diverted.items()
               if pool not in stable and frac > 0 and ready.get(pool, 0) < plan[pool].replicas]
    if not unready:
        return plan
    covered = sum(diverted[p] for p in unready)
    waiting = ", ".join(sorted(unready))
    for pool in stable:
        own = plan[pool].replicas
        keep = max(own, min(current.get(pool, 0), replicas_for(total, share[pool] + covered)))
        if keep > own:
            plan[pool] = Floor(keep, f"split {model}: stable pool keeps {keep} until "
                                     f"{waiting} ready")
    return plan


def merge_floors(plans: Iterable[Mapping[str, Floor]]) -> dict[str, Floor]:
    """Per pool, the highest floor any model's plan asks for (pools are shared by models)."""
    merged: dict[str, Floor] = {}
    for plan in plans:
        for pool, floor in plan.items():
            if pool not in merged or floor.replicas > merged[pool].replicas:
                merged[pool] = floor
    return merged
