"""Schedule-based minimums: cron-like weekly windows in a time zone.

Where it sits: the bounds step of :func:`autoscaler.policy.decide` asks
:func:`schedule_floor` for the largest ``min_replicas`` of the windows active at ``now``
(epoch seconds, passed in; the clock is never read here). Windows are local wall-clock times
resolved with :mod:`zoneinfo`, so "08:00-18:00 Europe/Berlin" follows daylight saving time.

A window ``start``-``end`` on the listed ``days`` is active for ``start <= t < end``; when
``end <= start`` it runs past midnight and belongs to the day it starts on
(``fri 22:00-06:00`` is Friday night into Saturday morning).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time

from contracts.schedule import format_days, parse_clock, parse_days, zone


@dataclass(frozen=True, slots=True)
class ScheduleWindow:
    days: frozenset[int]  # 0 = Monday .. 6 = Sunday
    start: time
    end: time
    timezone: str
    min_replicas: int
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or (f"{format_days(self.days)} {self.start:%H:%M}-{self.end:%H:%M} "
                             f"{self.timezone}")


def make_window(days: str, start: str, end: str, timezone: str, min_replicas: int,
                name: str = "") -> ScheduleWindow:
    """Build a validated window from its config strings (raises ValueError)."""
    zone(timezone)
    if min_replicas < 0:
        raise ValueError("min_replicas must be >= 0")
    return ScheduleWindow(parse_days(days), parse_clock(start), parse_clock(end), timezone,
                          min_replicas, name)


def is_active(window: ScheduleWindow, now: float) -> bool:
    local = datetime.fromtimestamp(now, zone(window.timezone))
    t, day = local.time().replace(tzinfo=None), local.weekday()
    if window.start < window.end:
        return day in window.days and window.start <= t < window.end
    # past midnight (or the whole day when start == end)
    return (day in window.days and t >= window.start) or (
        (day - 1) % 7 in window.days and t < window.end)


def schedule_floor(windows: Iterable[ScheduleWindow], now: float) -> tuple[int, str]:
    """The largest minimum among the windows active at ``now`` and its label (0, "" if none)."""
    best, label = 0, ""
    for w in windows:
        if w.min_replicas > best and is_active(w, now):
            best, label = w.min_replicas, w.label
    return best, label
