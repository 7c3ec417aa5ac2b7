"""Endpoint choice inside a pool: power of two choices on least outstanding requests.

Where it sits: after the route table has named the pool, the gateway calls
:func:`pick_endpoint` with the pool's endpoints (any objects exposing ``outstanding`` and
``admitted``); it skips ejected endpoints and any already tried for this request. Randomness
comes in as ``rng`` so tests are deterministic.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from random import Random
from typing import Protocol, TypeVar


class EndpointView(Protocol):
    @property
    def outstanding(self) -> int: ...

    @property
    def admitted(self) -> bool: ...


E = TypeVar("E", bound=EndpointView)


def pick_endpoint(endpoints: Sequence[E], rng: Random, exclude: Collection[E] = ()) -> E | None:
    """Two random admitted candidates; the one with fewer outstanding requests wins.

    Returns ``None`` when no admitted endpoint is left (the caller answers 503 or holds the
    request for a cold start).
    """
    if exclude:
        cands = [e for e in endpoints if e.admitted and e not in exclude]
    else:
        cands = [e for e in endpoints if e.admitted]
    n = len(cands)
    if n <= 1:
        return cands[0] if n else None
    i = int(rng.random() * n)
    j = int(rng.random() * (n - 1))
    if j >= i:
        j += 1
    a, b = cands[i], cands[j]
    return a if a.outstanding <= b.outstanding else b
