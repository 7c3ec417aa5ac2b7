"""Syntax of weekly schedule windows: days, ``HH:MM`` times and time-zone names.

Where it sits: shared by the config schema (:mod:`contracts.config` validates ``autoscaling``
schedules with it) and the autoscaler (``autoscaler.policy.schedule`` evaluates them), so
both read a window the same way. Pure: no clock, no I/O beyond :mod:`zoneinfo`'s tz data.
"""

from __future__ import annotations

from datetime import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_days(text: str) -> frozenset[int]:
    """``"mon-fri,sun"`` / ``"*"`` -> weekday numbers (0 = Monday); ranges may wrap."""
    text = text.strip().lower()
    if text in ("*", "daily", "all"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        a = _day(lo)
        b = _day(hi) if hi else a
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _day(name: str) -> int:
    key = name.strip()[:3]
    if len(name.strip()) < 3 or key not in DAY_NAMES:
        raise ValueError(f"unknown day {name!r} (use mon..sun, ranges like mon-fri, or '*')")
    return DAY_NAMES.index(key)


def format_days(days: frozenset[int]) -> str:
    return "*" if len(days) == 7 else ",".join(DAY_NAMES[d] for d in sorted(days))


def parse_clock(text: str) -> time:
    """``"08:00"`` -> ``time(8, 0)``; ``"24:00"`` means the end of the day (midnight)."""
    hh, sep, mm = text.strip().partition(":")
    if not sep or not hh.isdigit() or not mm.isdigit() or len(mm) != 2:
        raise ValueError(f"expected HH:MM, got {text!r}")
    h, m = int(hh), int(mm)
    if (h, m) == (24, 0):
        return time(0, 0)
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError(f"expected HH:MM, got {text!r}")
    return time(h, m)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (e.g. ``Europe/Berlin``); ValueError if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc
