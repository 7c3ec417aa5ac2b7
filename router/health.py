"""Endpoint health as a pure state machine: a circuit breaker per endpoint.

Where it sits: the gateway records the outcome of every upstream call (passive) and of every
``/v2/health/ready`` probe (active) by replacing an endpoint's :class:`Health` with the value
these functions return. The balancer sends traffic to endpoints that are ``admitted`` (closed)
and, one request at a time, to those that are :func:`available` for a half-open trial.

    closed    ──(N consecutive failures, or a definite probe failure)──────────> open
    open      ──(the open interval has passed: ``now >= retry_at``)─────────────> half-open
    half-open ──(the balancer picks it: :func:`begin_trial`, one request)───────> trial in flight
    trial     ──(the trial succeeds)────────────────────────────────────────────> closed
    trial     ──(the trial fails: open again, interval doubled, capped)─────────> open
    trial     ──(no verdict, e.g. cancelled: :func:`end_trial`)─────────────────> half-open
    open/half ──(probe succeeds, at least ``min_eject_s`` after it opened)──────> closed

The first open interval is ``min_eject_s``; each failed trial doubles it up to ``max_eject_s``
(Envoy's outlier detection backs off the same way; the single trial request is the classic
half-open circuit breaker). While a trial is in flight no other one starts, for at most
``max_eject_s``: a trial whose outcome never arrives does not keep the endpoint out for good.

Time comes in as ``now`` (seconds on any monotonic clock); nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from contracts.config import HealthConfig

# Circuit states as exported by the gateway's gauge.
CLOSED, OPEN, HALF_OPEN = 0, 1, 2

# HTTP answers that say the server (or a proxy in front of it), not the request, is unwell.
# 500 is left out: Triton answers it for a model's execution error.
UNHEALTHY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class Health:
    admitted: bool = True  # the circuit is closed
    consecutive_failures: int = 0
    ejected_at: float | None = None  # when the circuit last opened (ejection or failed trial)
    reason: str = ""
    open_s: float = 0.0  # the current open interval, from ejected_at
    # When not admitted: the earliest time the balancer may start a trial (the end of the open
    # interval; while a trial is in flight, when that trial is presumed lost).
    retry_at: float = 0.0
    trial_at: float | None = None  # a half-open trial in flight since then


ADMITTED = Health()


def available(h: Health, now: float) -> bool:
    """May the balancer send this endpoint a request now (closed, or half-open, no trial)?"""
    return h.admitted or now >= h.retry_at


def circuit_state(h: Health, now: float) -> int:
    """:data:`CLOSED`, :data:`OPEN` or :data:`HALF_OPEN` (a trial is due or in flight)."""
    if h.admitted:
        return CLOSED
    return HALF_OPEN if h.trial_at is not None or now >= h.retry_at else OPEN


def begin_trial(h: Health, now: float, policy: HealthConfig) -> Health:
    """The balancer picked a half-open endpoint: this request is its one trial."""
    if h.admitted:
        return h
    return replace(h, trial_at=now, retry_at=now + _cap(policy))


def end_trial(h: Health) -> Health:
    """The trial ended without a verdict (cancelled, or an answer that says nothing about the
    transport): the next request may be the trial at once."""
    if h.admitted or h.trial_at is None:
        return h
    return replace(h, trial_at=None, retry_at=min(h.retry_at, h.trial_at))


def record_success(h: Health) -> Health:
    """A request succeeded: clear the failure streak; a successful trial closes the circuit.

    A success that is not the trial (a request sent before the ejection) leaves it open.
    """
    if not h.admitted and h.trial_at is not None:
        return ADMITTED
    if h.consecutive_failures == 0:
        return h
    return replace(h, consecutive_failures=0)


def record_failure(h: Health, now: float, policy: HealthConfig, reason: str) -> Health:
    """A request failed at the transport level (or, by policy, with an unhealthy status).

    Closed: eject after ``eject_after_failures`` in a row. Trial in flight: the trial failed,
    open again for twice as long (capped). Open without a trial: only the count and reason.
    """
    failures = h.consecutive_failures + 1
    if h.admitted:
        if failures >= policy.eject_after_failures:
            return _open(failures, now, policy.min_eject_s, reason)
        return replace(h, consecutive_failures=failures, reason=reason)
    if h.trial_at is not None:
        backoff = min(max(2.0 * h.open_s, policy.min_eject_s), _cap(policy))
        return _open(failures, now, backoff, reason)
    return replace(h, consecutive_failures=failures, reason=reason)


def record_probe(
    h: Health, ok: bool, now: float, policy: HealthConfig, reason: str = "", definite: bool = True
) -> Health:
    """Apply an active probe result.

    A definite failure (refused connection, not-ready status) ejects a closed endpoint at once;
    an indefinite one (probe timeout) counts like a passive failure. On an open endpoint a
    failure only counts (it is no trial verdict). Success closes an open circuit once it has
    been open for ``min_eject_s``, whatever its current open interval.
    """
    if not ok:
        if not h.admitted:
            return replace(h, consecutive_failures=h.consecutive_failures + 1, reason=reason)
        if definite:
            return _open(h.consecutive_failures + 1, now, policy.min_eject_s, reason)
        return record_failure(h, now, policy, reason)
    if h.admitted:
        return record_success(h)
    if h.ejected_at is not None and now - h.ejected_at < policy.min_eject_s:
        return h
    return ADMITTED


def _open(failures: int, now: float, open_s: float, reason: str) -> Health:
    return Health(admitted=False, consecutive_failures=failures, ejected_at=now, reason=reason,
                  open_s=open_s, retry_at=now + open_s)


def _cap(policy: HealthConfig) -> float:
    return max(policy.max_eject_s, policy.min_eject_s)
