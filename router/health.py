"""Endpoint health as a pure state machine: passive ejection and active-probe re-admission.

Where it sits: the gateway records the outcome of every upstream call (passive) and of every
``/v2/health/ready`` probe (active) by replacing an endpoint's :class:`Health` with the value
these functions return. The balancer only sends traffic to endpoints whose ``admitted`` is true.

    admitted ──(N consecutive failures, or a definite probe failure)──> ejected
    ejected  ──(probe succeeds, at least ``min_eject_s`` after ejection)──> admitted

Time comes in as ``now`` (seconds on any monotonic clock); nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from router.config import HealthConfig


@dataclass(frozen=True, slots=True)
class Health:
    admitted: bool = True
    consecutive_failures: int = 0
    ejected_at: float | None = None
    reason: str = ""


ADMITTED = Health()


def record_success(h: Health) -> Health:
    """A request succeeded: clear the failure streak (an ejected endpoint stays ejected)."""
    if h.consecutive_failures == 0:
        return h
    return replace(h, consecutive_failures=0)


def record_failure(h: Health, now: float, policy: HealthConfig, reason: str) -> Health:
    """A request failed at the transport level; eject after ``eject_after_failures`` in a row."""
    failures = h.consecutive_failures + 1
    if h.admitted and failures >= policy.eject_after_failures:
        return Health(admitted=False, consecutive_failures=failures, ejected_at=now, reason=reason)
    return replace(h, consecutive_failures=failures, reason=reason)


def record_probe(
    h: Health, ok: bool, now: float, policy: HealthConfig, reason: str = "", definite: bool = True
) -> Health:
    """Apply an active probe result.

    A definite failure (refused connection, not-ready status) ejects at once; an indefinite one
    (probe timeout) counts like a passive failure. Success re-admits an ejected endpoint once it
    has been out for ``min_eject_s``.
    """
    if not ok:
        if definite and h.admitted:
            return Health(admitted=False, consecutive_failures=h.consecutive_failures + 1,
                          ejected_at=now, reason=reason)
        return record_failure(h, now, policy, reason)
    if h.admitted:
        return record_success(h)
    if h.ejected_at is not None and now - h.ejected_at < policy.min_eject_s:
        return h
    return ADMITTED
