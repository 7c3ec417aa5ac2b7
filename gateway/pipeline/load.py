"""The request counts every part of the gateway reads: one load-accounting object.

Where it sits: made first by the composition root (``gateway.server.Gateway``) and handed to
the parts that count or read load. The proxy (and the gRPC stream relay) count requests in
flight per model; the cold-start buffer keeps its held requests per pool here (its queues are
these deques); admission's shedding reads a pool's held count, the metrics' gauges and model
residency read both. Each endpoint's outstanding count, which balancing reads, stays on the
endpoint (:class:`gateway.pipeline.pools.Endpoint`), one per endpoint.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Load:
    __slots__ = ("held", "in_flight")

    def __init__(self) -> None:
        self.in_flight: dict[str, int] = {}  # model -> requests sent or being sent
        self.held: dict[str, deque[asyncio.Future[None]]] = {}  # pool -> held for a cold start

    def in_flight_now(self) -> dict[str, int]:
        return self.in_flight

    def queued(self) -> dict[str, int]:
        """Requests held per pool (every pool that ever held one, 0 once released)."""
        return {pool: len(q) for pool, q in self.held.items()}

    def queued_in(self, pool: str) -> int:
        q = self.held.get(pool)
        return len(q) if q else 0
