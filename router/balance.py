"""Endpoint choice inside a pool: power of two choices on least outstanding requests.

Where it sits: after the route table has named the pool, the gateway calls
:func:`pick_endpoint` with the pool's endpoints (any objects exposing ``outstanding``,
``admitted`` and ``health``); it skips endpoints whose circuit is open and any already tried for
this request. Given ``now``, a half-open endpoint with no trial in flight is a candidate too (the
caller then starts its trial, :func:`router.health.begin_trial`). Randomness comes in as ``rng``
so tests are deterministic.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from random import Random
from typing import Protocol, TypeVar

from router.health import Health, available


class EndpointView(Protocol):
    @property
    def outstanding(self) -> int: ...

    @property
    def admitted(self) -> bool: ...

    @property
    def health(self) -> Health:
        """Read only for endpoints that are not admitted, and only when ``now`` is given."""
        ...


E = TypeVar("E", bound=EndpointView)


def pick_endpoint(endpoints: Sequence[E], rng: Random, exclude: Collection[E] = (),
                  now: float | None = None) -> E | None:
    """Two random candidates; the one with fewer outstanding requests wins.

    Candidates are the admitted endpoints, plus (when ``now`` is given) those available for a
    half-open trial. Returns ``None`` when no candidate is left (the caller answers 503 or
    holds the request for a cold start).
    """
    if now is None:
        if exclude:
            cands = [e for e in endpoints if e.admitted and e not in exclude]
        else:
            cands = [e for e in endpoints if e.admitted]
    elif exclude:
        cands = [e for e in endpoints
                 if (e.admitted or available(e.health, now)) and e not in exclude]
    else:
        cands = [e for e in endpoints if e.admitted or available(e.health, now)]
    n = len(cands)
    if n <= 1:
        return cands[0] if n else None
    i = int(rng.random() * n)
    j = int(rng.random() * (n - 1))
    if j >= i:
        j += 1
    a, b = cands[i], cands[j]
    return a if a.outstanding <= b.outstanding else b
