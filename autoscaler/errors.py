"""Errors raised by the autoscaler, one tree.

    AutoscalerError
     ├── SignalError          a signal source could not be read
     │    ├── ScrapeError     HTTP scrape / Redis read failed (httpx, redis errors chained)
     │    └── ParseError      the source answered with something we cannot parse
     └── SimulationError      ``servegate simulate`` cannot run as asked
          ├── TraceError      unknown trace name, unreadable or malformed CSV
          └── PlotError       ``--plots`` without matplotlib

Where it sits: adapters (the scrapers in :mod:`autoscaler.signals`) translate third-party
errors into :class:`ScrapeError` in one place each and the collectors turn them into typed
"no data" readings; the policy itself never raises for missing data (a missing signal is a
value, :class:`autoscaler.policy.NoData`). The CLI maps :class:`SimulationError` to exit code 2.
"""

from __future__ import annotations


class AutoscalerError(Exception):
    """Base of every error raised by :mod:`autoscaler`."""


class SignalError(AutoscalerError):
    """A signal source could not be read; ``source`` names it (URL, Redis key)."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


class ScrapeError(SignalError):
    """The transport failed (connect, timeout, HTTP status, Redis error)."""


class ParseError(SignalError):
    """The source answered, but not in a format we understand."""


class SimulationError(AutoscalerError):
    """The simulator cannot run as asked."""


class TraceError(SimulationError):
    """Unknown trace name, or a CSV trace that cannot be read."""


class PlotError(SimulationError):
    """Plots were asked for but cannot be drawn (matplotlib missing)."""
