"""Time-bucketed averages (Knative's ``TimedFloat64Buckets``): ``record(t, v)``, ``average``.

Where it sits: owned by the collector (and by the simulator, which plays the collector). Each
scrape records one value per signal; the decider is handed ``average(now, stable_window)``
and ``average(now, panic_window)`` as a :class:`~autoscaler.policy.spec.Windowed` reading.

Values recorded within one bucket (``granularity_s``) are averaged; a window average is the
mean of the buckets that hold data inside the span. Buckets without data (a failed scrape)
are left out rather than counted as zero, and a window whose newest sample is older than
``stale_after_s`` (or that holds no sample at all) reads as :class:`NoData`. Time always
comes in as an argument.
"""

from __future__ import annotations

import bisect
import math

from autoscaler.policy.spec import NoData, Reading, Windowed


class Window:
    """Buckets of one signal over ``horizon_s``; averages over any span up to the horizon."""

    def __init__(self, horizon_s: float, granularity_s: float = 1.0,
                 stale_after_s: float | None = None) -> None:
        if horizon_s <= 0 or granularity_s <= 0:
            raise ValueError("horizon_s and granularity_s must be > 0")
        self.granularity_s = granularity_s
        self.stale_after_s = stale_after_s
        self._keep = max(1, math.ceil(horizon_s / granularity_s))
        self._index: list[int] = []  # bucket numbers, increasing
        self._sum: list[float] = []  # per bucket: sum and count of the values recorded in it
        self._count: list[int] = []
        self._cum: list[float] = []  # running total of bucket means up to and including i
        self._base = 0.0  # the running total before the first bucket kept
        self._last_t: float | None = None

    def record(self, t: float, value: float) -> None:
        idx = math.floor(t / self.granularity_s)
        if self._index and self._index[-1] == idx:
            old_mean = self._sum[-1] / self._count[-1]
            self._sum[-1] += value
            self._count[-1] += 1
            self._cum[-1] += self._sum[-1] / self._count[-1] - old_mean
        elif self._index and idx < self._index[-1]:
            raise ValueError("samples must be recorded in time order")
        else:
            self._index.append(idx)
            self._sum.append(value)
            self._count.append(1)
            self._cum.append((self._cum[-1] if self._cum else self._base) + value)
        self._last_t = t if self._last_t is None else max(self._last_t, t)
        self._trim(idx)

    def _trim(self, newest: int) -> None:
        cut = bisect.bisect_right(self._index, newest - self._keep)
        if cut > 256 or (cut and cut * 2 > len(self._index)):
            self._base = self._cum[cut - 1]
            del self._index[:cut], self._sum[:cut], self._count[:cut], self._cum[:cut]

    def average(self, now: float, span_s: float) -> Reading:
        """Mean of the bucket means within ``(now - span_s, now]``, or :class:`NoData`."""
        if self._last_t is None:
            return NoData("no samples yet")
        if self.stale_after_s is not None and now - self._last_t > self.stale_after_s:
            return NoData(f"stale: last sample {now - self._last_t:.0f}s old")
        hi = math.floor(now / self.granularity_s)
        lo = hi - max(1, round(span_s / self.granularity_s)) + 1
        i = bisect.bisect_left(self._index, lo)
        j = bisect.bisect_right(self._index, hi)
        if i >= j:
            return NoData(f"no samples in the last {span_s:g}s")
        before = self._cum[i - 1] if i > 0 else self._base
        return (self._cum[j - 1] - before) / (j - i)

    def windowed(self, now: float, stable_s: float, panic_s: float) -> Windowed:
        return Windowed(self.average(now, stable_s), self.average(now, panic_s))
