"""Arrival traces for the simulator: four built-in shapes and CSV files of timestamps.

Where it sits: the first input of ``servegate simulate``. A trace is arrival counts per tick
(:class:`~autoscaler.simulate.model.Trace`); the built-in ones draw Poisson counts from a rate
curve with a fixed seed, so every run sees the same arrivals. Rates are sized for the default
:class:`~autoscaler.simulate.model.PoolProfile` (one replica serves 160 req/s with full
batches):

- ``step``     20 min: 240 req/s, a 10x step to 2,400 req/s at 5 min for 5 min, then back.
- ``diurnal``  60 min: one day compressed into an hour, 150 -> 1,600 req/s at the peak,
               with +-15% slow random wander (AR(1), 60 s correlation) on top.
- ``bursty``   30 min: on/off Poisson (MMPP): 150 req/s off, 1,200 req/s on; on periods
               last 45 s and off periods 120 s on average (exponential).
- ``sporadic`` 60 min: idle, with sessions every ~8 min (exponential gaps, at least 3 min)
               of 40-160 s at 100-400 req/s that ramp up over their first 10 s.

``seed`` 0 gives the traces above, exactly; another seed draws another realization of the same
process with its event phases moved (where the step starts, the day's phase, the MMPP and
session draws), for paired comparisons over seeds.

A CSV trace has one arrival timestamp per line, in seconds or as an ISO date-time such as the
Azure LLM trace's ``2023-11-16 18:15:46.6805900`` (a header line, blank lines and ``#``
comments are skipped; extra columns are ignored); times are shifted to start at 0.
``scale`` K > 1 superposes K copies, each request moved by a uniform jitter of +-0.5 s (drawn
from ``seed``): every second keeps its shape at K times the rate.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np

from autoscaler.errors import TraceError
from autoscaler.simulate.model import FloatArray, Trace

DT = 0.05
SEED = 20240601
JITTER_S = 0.5


def _rng(seed: int, k: int) -> np.random.Generator:
    """The generator of stream ``k`` for realization ``seed`` (0: the canonical traces)."""
    return np.random.default_rng(SEED + k if seed == 0 else (SEED, seed, k))


def _phase(seed: int, k: int, spread: float) -> float:
    """An event phase: 0 for the canonical trace, else uniform in +-``spread``."""
    return 0.0 if seed == 0 else float(_rng(seed, 100 + k).uniform(-spread, spread))


def from_rate(name: str, rate: FloatArray, dt: float = DT, seed: int = 0) -> Trace:
    """Poisson counts per tick for a rate curve given per tick (req/s)."""
    rng = _rng(seed, 0)
    return Trace(name, dt, rng.poisson(np.maximum(rate, 0.0) * dt).astype(np.int64))


def _ticks(seconds: float, dt: float) -> FloatArray:
    return np.arange(round(seconds / dt), dtype=np.float64) * dt


def step(dt: float = DT, seed: int = 0) -> Trace:
    t = _ticks(1200, dt)
    start = 300 + _phase(seed, 0, 120)
    rate = np.where((t >= start) & (t < start + 300), 2400.0, 240.0)
    return from_rate("step", rate, dt, seed)


def _ar1(n_seconds: int, sigma: float, tau_s: float, rng: np.random.Generator) -> FloatArray:
    a = math.exp(-1.0 / tau_s)
    noise = rng.normal(0.0, sigma * math.sqrt(1 - a * a), n_seconds)
    out = np.empty(n_seconds)
    x = 0.0
    for i, e in enumerate(noise):
        x = a * x + e
        out[i] = x
    return out


def diurnal(dt: float = DT, seed: int = 0) -> Trace:
    seconds = 3600
    t = _ticks(seconds, dt)
    # trough at "3am" (t=0.125 day), peak at "3pm"; a smooth day curve
    phase = 2 * math.pi * (t / seconds - 0.125 + _phase(seed, 0, 0.1))
    day = 0.5 - 0.5 * np.cos(phase)
    rate = 150.0 + (1600.0 - 150.0) * day**1.5
    wander = _ar1(seconds, 0.075, 60.0, _rng(seed, 1))
    rate *= np.exp(np.clip(wander, -0.15, 0.15))[np.minimum(t.astype(int), seconds - 1)]
    return from_rate("diurnal", rate, dt, seed)


def bursty(dt: float = DT, seed: int = 0) -> Trace:
    seconds = 1800
    rng = _rng(seed, 2)
    rate_s = np.empty(seconds)
    t, on = 0, False
    while t < seconds:
        length = max(5, round(rng.exponential(45.0 if on else 120.0)))
        rate_s[t:t + length] = 1200.0 if on else 150.0
        t, on = t + length, not on
    return from_rate("bursty", np.repeat(rate_s, round(1 / dt)), dt, seed)


def sporadic(dt: float = DT, seed: int = 0) -> Trace:
    seconds = 3600
    rng = _rng(seed, 3)
    rate_s = np.zeros(seconds)
    t = 60 + round(rng.exponential(120.0))
    while t < seconds:
        length = round(rng.uniform(40, 160))
        peak = rng.uniform(100, 400)
        ramp = np.minimum(1.0, (np.arange(length) + 1) / 10.0)
        rate_s[t:t + length] = (peak * ramp)[: max(0, seconds - t)]
        t += length + max(180, round(rng.exponential(480.0)))
    return from_rate("sporadic", np.repeat(rate_s, round(1 / dt)), dt, seed)


BUILTIN: dict[str, Callable[..., Trace]] = {
    "step": step, "diurnal": diurnal, "bursty": bursty, "sporadic": sporadic,
}


def builtin(name: str, seed: int = 0) -> Trace:
    try:
        make = BUILTIN[name]
    except KeyError:
        raise TraceError(f"unknown trace {name!r}; built in: {', '.join(BUILTIN)}") from None
    return make(seed=seed)


def _timestamp(text: str) -> float:
    """Seconds from a number or an ISO date-time; ValueError if neither."""
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text.strip()).timestamp()


def parse_timestamps(lines: list[str], source: str) -> FloatArray:
    """Arrival times from CSV lines (first column), shifted to start at 0 and sorted."""
    times: list[float] = []
    for lineno, row in enumerate(csv.reader(lines), start=1):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        try:
            value = _timestamp(row[0])
        except ValueError:
            if not times and lineno == 1:
                continue  # a header line
            raise TraceError(f"{source}:{lineno}: not a timestamp: {row[0]!r}") from None
        if not math.isfinite(value):
            raise TraceError(f"{source}:{lineno}: not a finite timestamp: {row[0]!r}")
        times.append(value)
    if not times:
        raise TraceError(f"{source}: no timestamps")
    arr: FloatArray = np.sort(np.asarray(times, dtype=np.float64))
    out: FloatArray = arr - arr[0]
    return out


def from_timestamps(name: str, times: FloatArray, dt: float = DT) -> Trace:
    ticks = int(times[-1] // dt) + 1
    counts = np.bincount((times // dt).astype(np.int64), minlength=ticks)
    return Trace(name, dt, counts.astype(np.int64))


def superpose(times: FloatArray, scale: int, seed: int = 0) -> FloatArray:
    """``scale`` copies of ``times``, each request jittered by +-``JITTER_S``, from 0."""
    if scale <= 1:
        return times
    rng = _rng(seed, 4)
    copies = [times] + [times + rng.uniform(-JITTER_S, JITTER_S, len(times))
                        for _ in range(scale - 1)]
    out = np.sort(np.concatenate(copies))
    shifted: FloatArray = np.maximum(out - times[0], 0.0)
    return shifted


def from_csv(path: Path, dt: float = DT, scale: int = 1, seed: int = 0) -> Trace:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read: {exc}") from exc
    times = superpose(parse_timestamps(lines, str(path)), scale, seed)
    return from_timestamps(path.stem, times, dt)
