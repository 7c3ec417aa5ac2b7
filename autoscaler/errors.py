"""Errors raised by the autoscaler, one tree.

    AutoscalerError
     ├── SignalError          a signal source could not be read
     │    ├── ScrapeError     HTTP scrape / Redis read failed (httpx, redis errors chained)
     │    └── ParseError      the source answered with something we cannot parse
     ├── ActuatorError        scaling a target failed; ``target`` names it (pool, Deployment,
     │                        replica), the cause is chained
     ├── SetupError           ``servegate autoscaler`` cannot start as configured (exit code 2)
     └── SimulationError      ``servegate simulate`` cannot run as asked
          ├── TraceError      unknown trace name, unreadable or malformed CSV
          └── PlotError       ``--plots`` without matplotlib

Where it sits: adapters (the scrapers in :mod:`autoscaler.signals`) translate third-party
errors into :class:`ScrapeError` in one place each and the collectors turn them into typed
"no data" readings; the policy itself never raises for missing data (a missing signal is a
value, :class:`autoscaler.policy.NoData`). The Kubernetes adapter
(:mod:`adapters.kube`, shared with the gateway) is the one place that turns httpx errors and
API status codes into :class:`KubernetesError` (from :mod:`adapters.errors`, re-exported
here); actuators wrap whatever fails in :class:`ActuatorError`
with the target's name. The control loop logs an :class:`ActuatorError` and tries again on the
next tick. The CLI maps :class:`SetupError` and :class:`SimulationError` to exit code 2.
"""

from __future__ import annotations

# The Kubernetes API adapter is shared with the gateway: its errors live with it.
from adapters.errors import (
    KubernetesConflict,
    KubernetesError,
    KubernetesForbidden,
    KubernetesGone,
    KubernetesNotFound,
    KubernetesUnavailable,
)

__all__ = ["ActuatorError", "AutoscalerError", "KubernetesConflict", "KubernetesError",
           "KubernetesForbidden", "KubernetesGone", "KubernetesNotFound",
           "KubernetesUnavailable", "ParseError", "PlotError", "ScrapeError", "SetupError",
           "SignalError", "SimulationError", "TraceError"]


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


class ActuatorError(AutoscalerError):
    """Reading or changing a target's size failed; ``target`` names it."""

    def __init__(self, target: str, message: str) -> None:
        self.target = target
        super().__init__(f"{target}: {message}")


class SetupError(AutoscalerError):
    """The autoscaler cannot start as configured (config, flags, ports)."""


class SimulationError(AutoscalerError):
    """The simulator cannot run as asked."""


class TraceError(SimulationError):
    """Unknown trace name, or a CSV trace that cannot be read."""


class PlotError(SimulationError):
    """Plots were asked for but cannot be drawn (matplotlib missing)."""
