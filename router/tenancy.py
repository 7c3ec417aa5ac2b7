"""Tenancy and admission decisions: who may call what, and when to say no.

Where it sits: the gateway's admission step (``gateway.pipeline.admission``) calls the functions
below with counts it keeps, before a request is read or sent upstream; the knobs they read are the
config's tenancy schema (:mod:`contracts.tenancy`). Nothing here reads a clock or talks to
Redis: windows, counts and queue depths come in as arguments.

Rate quotas use a sliding window over fixed windows (the estimate is the previous window's
count weighted by how much of it still overlaps, plus the current one's), which needs only two
counters per tenant and sums exactly across replicas.
"""

from __future__ import annotations

import math

from contracts.tenancy import DEFAULT_PRIORITY, PRIORITIES, Priority, SheddingConfig

__all__ = ["DEFAULT_PRIORITY", "PRIORITIES", "Priority", "SheddingConfig", "concurrency_allows",
           "local_share", "queue_per_endpoint", "rate_allows", "resolve_priority",
           "retry_after_s", "should_shed", "window_estimate", "window_of"]


def resolve_priority(tenant: Priority | None, route: Priority | None) -> Priority:
    """The class of a request: the tenant's if it sets one, else the route's, else standard."""
    return tenant or route or DEFAULT_PRIORITY


def queue_per_endpoint(outstanding: int, queued: int, ready: int) -> float:
    """A pool's queue depth per ready endpoint (a pool with none counts as one)."""
    return (outstanding + queued) / max(ready, 1)


def should_shed(priority: Priority, queue: float, cfg: SheddingConfig) -> bool:
    """Sheddable goes first (at ``sheddable_at``), standard later; critical never."""
    if priority == "sheddable":
        threshold = cfg.sheddable_at if cfg.sheddable_at is not None else cfg.standard_at
    elif priority == "standard":
        threshold = cfg.standard_at
    else:
        return False
    return threshold is not None and queue >= threshold


def window_of(now: float, window_s: float) -> tuple[int, float]:
    """The index of the fixed window holding ``now`` and how far into it ``now`` is (0..1)."""
    position = now / window_s
    index = math.floor(position)
    return index, position - index


def window_estimate(previous: float, current: float, elapsed: float) -> float:
    """Requests counted in the sliding window ending now (``elapsed``: 0..1 into the current
    window): the part of the previous window still inside it, plus the current window."""
    return previous * (1.0 - elapsed) + current


def rate_allows(limit: float, previous: float, current: float, elapsed: float) -> bool:
    """Whether one more request fits a quota of ``limit`` requests per window."""
    return window_estimate(previous, current, elapsed) + 1 <= limit


def retry_after_s(limit: float, previous: float, current: float, elapsed: float,
                  window_s: float) -> int:
    """Whole seconds until a request over the rate quota would fit again (at least 1)."""
    if current + 1 > limit or previous <= 0:  # the current window alone is full
        wait = 1.0 - elapsed
    else:  # the previous window's share must slide out far enough
        wait = max(1.0 - (limit - current - 1) / previous - elapsed, 0.0)
    return max(1, math.ceil(wait * window_s))


def concurrency_allows(limit: int, local: int, others: int) -> bool:
    """Whether one more in-flight request fits ``limit`` given this replica's and the
    others' last reported counts."""
    return local + others + 1 <= limit


def local_share(limit: float, replicas: int) -> float:
    """A replica's share of a fleet-wide quota when the shared counts are unavailable."""
    return limit / max(replicas, 1)
