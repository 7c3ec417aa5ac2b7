"""Short-horizon forecast of a pool's arrival rate: trend plus a detected season. Pure.

Where it sits: inside :func:`autoscaler.policy.decide`, which feeds it the panic-window
arrival rate on every call and turns the forecast over the next start-up into a minimum
(a replica asked for now is ready when that load arrives). Its memory travels in
:class:`Forecast`, part of the decider's state: arrivals averaged per ``bucket_s`` bucket
over the last ``history_s``.

- **trend**: Holt's linear smoothing of the bucket means (level ``alpha``, trend ``beta``),
  damped, counted only while rising and never projecting more than the level itself: it
  anticipates ramps (a day's rise) without holding replicas after a burst has passed;
- **season**: every ``period_check_s`` each lag between ``min_period_s`` and a quarter of the
  history is tried: do the last three cycles repeat the three before (a correlation of the
  changes of the rate's logarithm, so that neither a ramp nor one flash crowd passes for a
  season, of at least ``min_correlation``)? The best such period makes the forecast also
  take what arrived one period ago over the coming horizon - periodic batches and sessions
  are there before their replicas are asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import pairwise


@dataclass(frozen=True, slots=True)
class ForecastSpec:
    horizon_s: float  # how far ahead: the replicas' start-up plus the metrics' delay
    bucket_s: float = 10.0
    history_s: float = 3600.0
    alpha: float = 0.3
    beta: float = 0.1
    damping: float = 0.9
    min_period_s: float = 60.0
    min_correlation: float = 0.6
    period_check_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Forecast:
    """What the forecaster remembers (returned, never mutated)."""

    bucket_start: float | None = None
    bucket_sum: float = 0.0
    bucket_n: int = 0
    history: tuple[float, ...] = ()
    level: float | None = None
    trend: float = 0.0  # per bucket
    period: int | None = None  # in buckets
    period_checked: float | None = None


def update(spec: ForecastSpec, fc: Forecast, now: float, rate: float) -> Forecast:
    """Add one rate sample at ``now``; close the bucket (and maybe look for a season)."""
    if fc.bucket_start is None:
        return replace(fc, bucket_start=now, bucket_sum=rate, bucket_n=1)
    if now - fc.bucket_start < spec.bucket_s:
        return replace(fc, bucket_sum=fc.bucket_sum + rate, bucket_n=fc.bucket_n + 1)
    mean = fc.bucket_sum / max(fc.bucket_n, 1)
    keep = max(1, round(spec.history_s / spec.bucket_s))
    fc = _holt(spec, replace(fc, history=(*fc.history, mean)[-keep:]), mean)
    fc = replace(fc, bucket_start=now, bucket_sum=rate, bucket_n=1)
    if fc.period_checked is None or now - fc.period_checked >= spec.period_check_s:
        fc = replace(fc, period=detect_period(spec, fc.history), period_checked=now)
    return fc


def _holt(spec: ForecastSpec, fc: Forecast, x: float) -> Forecast:
    if fc.level is None:
        return replace(fc, level=x, trend=0.0)
    level = spec.alpha * x + (1 - spec.alpha) * (fc.level + spec.damping * fc.trend)
    trend = spec.beta * (level - fc.level) + (1 - spec.beta) * spec.damping * fc.trend
    return replace(fc, level=level, trend=trend)


def detect_period(spec: ForecastSpec, history: tuple[float, ...]) -> int | None:
    """The lag (in buckets) whose last three cycles best repeat the three before, if enough.

    Per lag ``L``: the Pearson correlation of the last ``3L`` buckets with the ``3L`` one lag
    earlier, on the bucket-to-bucket changes of the rate's logarithm (a ramp correlates with
    itself at any lag; its changes hardly), among the lags over whose last three cycles the
    rate swings by at least its mean; the best at or above ``min_correlation`` wins.
    Recent cycles only, so a pattern that starts mid-history is found.
    """
    n = len(history)
    lo = max(2, math.ceil(spec.min_period_s / spec.bucket_s))
    logs = [math.log1p(max(x, 0.0)) for x in history]  # one huge event does not drown it
    steps = [b - a for a, b in pairwise(logs)]  # a trend is no season
    n = len(steps)
    best, best_r = None, spec.min_correlation
    for lag in range(lo, n // 4 + 1):
        if not _swings(history[-3 * lag:]):
            continue
        seg = steps[n - 4 * lag:]
        r = _pearson(seg[lag:], seg[:-lag])
        if r is not None and r >= best_r:
            best, best_r = lag, r
    return best


def _swings(values: tuple[float, ...]) -> bool:
    """The load moves by at least its own mean: a pattern worth forecasting."""
    mean = sum(values) / len(values)
    return mean > 0 and max(values) - min(values) >= mean


def _pearson(a: list[float], b: list[float]) -> float | None:
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    da, db = [x - ma for x in a], [y - mb for y in b]
    va, vb = sum(x * x for x in da), sum(y * y for y in db)
    if va <= 1e-9 or vb <= 1e-9:
        return None
    return sum(x * y for x, y in zip(da, db, strict=True)) / math.sqrt(va * vb)


def trend_forecast(spec: ForecastSpec, fc: Forecast) -> float | None:
    """Holt's damped projection ``horizon_s`` ahead while rising (at most 2 x the level).

    None unless the trend is up: a falling or flat load is the signals' business (the
    smoothed level would only hold replicas after a burst has passed).
    """
    if fc.level is None or fc.trend <= 0:
        return None
    steps = spec.horizon_s / spec.bucket_s
    d = spec.damping
    gain = steps if d >= 1 else d * (1 - d**steps) / (1 - d)
    return fc.level + min(fc.level, fc.trend * gain)


def seasonal_forecast(spec: ForecastSpec, fc: Forecast) -> float | None:
    """The most that arrived one period ago over the coming horizon (None: no season)."""
    if fc.period is None or len(fc.history) < fc.period:
        return None
    ahead = math.ceil(spec.horizon_s / spec.bucket_s) + 1
    start = len(fc.history) - fc.period
    window = fc.history[start:start + ahead]
    return max(window) if window else None


def forecast(spec: ForecastSpec, fc: Forecast) -> float | None:
    """The rate to be ready for over the next ``horizon_s``: trend and season, the larger."""
    parts = [v for v in (trend_forecast(spec, fc), seasonal_forecast(spec, fc))
             if v is not None]
    return max(parts) if parts else None
