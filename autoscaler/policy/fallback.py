"""Spot interruptions: replicas a pool lost without being asked to, and the floor that puts on
its fallback pool.

Where it sits: in the control loop, beside the decider. Each tick of a pool that names a
``fallback_pool`` (usually spot capacity backed by on-demand), :func:`track_loss` compares the
ready replicas with the last tick's; a drop the last decision did not ask for is an
interruption (spot reclaim, node drain). Until the pool is back to what it wants, the lost
replicas become an external floor on the fallback pool (:func:`fallback_floor`, applied in the
decider's bounds step), so the fallback is surged at once rather than when its own signals
catch up, and released (after its scale-down stabilization) once the pool has recovered.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LossState:
    ready: int = 0    # ready replicas at the last tick
    desired: int = 0  # the last tick's decision
    lost: int = 0     # replicas lost to interruptions and not yet replaced


def track_loss(state: LossState, ready: int, desired: int) -> LossState:
    """The state after a tick that saw ``ready`` replicas and decided ``desired``.

    A scale-down may remove replicas down to what was decided; anything below that, or any
    drop while the decision wanted at least what was ready, is lost. The loss never exceeds
    the shortfall (``desired - ready``): replicas coming back ready, or demand going away,
    shrink it.
    """
    lost = state.lost + max(0, min(state.ready, state.desired) - ready)
    return LossState(ready, desired, max(0, min(lost, desired - ready)))


def fallback_floor(lost: int, gpus_per_replica: float, fallback_gpus_per_replica: float) -> int:
    """Fallback replicas that hold what ``lost`` replicas held (in GPUs: a lost whole-GPU
    replica is replaced by seven 1/7 MIG replicas, and the other way round by one)."""
    if lost <= 0:
        return 0
    return max(1, math.ceil(lost * gpus_per_replica / fallback_gpus_per_replica - 1e-9))
