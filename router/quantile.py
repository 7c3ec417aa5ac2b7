"""Quantiles from histogram bucket counts (Prometheus ``histogram_quantile`` semantics).

Where it sits: fleet-wide latency percentiles are computed from *deltas* of cumulative bucket
counters (summed over replicas), never by averaging per-replica quantiles. Used by the
rollout gates (canary vs baseline p99) and shared with the autoscaler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def bucket_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The ``q`` quantile (0..1) from per-bucket (non-cumulative) counts.

    ``bounds`` are the buckets' upper bounds in increasing order; ``counts`` has one more
    entry than ``bounds`` for the +Inf bucket. Linear interpolation inside the bucket, the lower
    bound of the first bucket taken as 0; a quantile in the +Inf bucket returns the highest
    finite bound. ``None`` when there are no observations.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, c in enumerate(counts):
        if c > 0 and seen + c >= rank:
            if i >= len(bounds):
                return float(bounds[-1]) if bounds else math.inf
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * ((rank - seen) / c)
        seen += c
    return float(bounds[-1]) if bounds else None


def delta(now: Sequence[float], before: Sequence[float]) -> list[float]:
    """Per-bucket increase between two snapshots of the same counters (resets clamp to 0)."""
    return [max(a - b, 0.0) for a, b in zip(now, before, strict=True)]
