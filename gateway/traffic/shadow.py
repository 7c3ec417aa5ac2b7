"""The shadow mirror: send a copy of a request to a shadow variant off the client's path.

Where it sits: the front door decides (``router.splits.should_shadow``) that a request is
mirrored, calls :meth:`ShadowMirror.start` before sending the primary request (so both leave
at the same time and their latencies compare fairly), and hands the primary's response to the
returned future once it has answered the client. Everything else happens in a background
task: the shadow call, the comparison (:mod:`gateway.traffic.compare`) and the metrics.

The client never waits on the shadow: the mirror holds at most ``max_concurrency`` shadow
calls per (model, variant); beyond that a mirror is dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.adapters.upstream import UpstreamResponse
from gateway.metrics import GatewayMetrics
from gateway.traffic.compare import compare, decode_response

log = logging.getLogger("servegate.shadow")

# Above this many response bytes the comparison runs in a worker thread.
_INLINE_COMPARE_MAX = 64 * 1024
# How long a shadow result waits for its primary before it is discarded.
_PRIMARY_WAIT_S = 120.0

PrimaryResult = tuple[UpstreamResponse, float]  # response, seconds from start to response


@dataclass
class Agreement:
    compared: int = 0
    agreed: int = 0


class ShadowMirror:
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self.in_flight: dict[tuple[str, str], int] = {}
        self.agreement: dict[tuple[str, str], Agreement] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, model: str, variant: str, limit: int,
              send: Callable[[], Awaitable[UpstreamResponse]]
              ) -> asyncio.Future[PrimaryResult] | None:
        """Launch the shadow call; ``None`` (and a counted drop) when the shadow is saturated."""
        key = (model, variant)
        if self.in_flight.get(key, 0) >= limit:
            self.metrics.shadow_requests.labels(model, variant, "dropped").inc()
            return None
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        primary: asyncio.Future[PrimaryResult] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._run(key, send, primary, time.perf_counter()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return primary

    async def _run(self, key: tuple[str, str], send: Callable[[], Awaitable[UpstreamResponse]],
                   primary: asyncio.Future[PrimaryResult], started: float) -> None:
        model, variant = key
        try:
            try:
                shadow = await send()
            except Exception as exc:
                self.metrics.shadow_requests.labels(model, variant, "error").inc()
                log.debug("shadow call to %s/%s failed: %s", model, variant, exc)
                return
            finally:
                self.in_flight[key] -= 1
            shadow_s = time.perf_counter() - started
            try:
                response, primary_s = await asyncio.wait_for(primary, _PRIMARY_WAIT_S)
            except Exception:  # the primary failed or never came: nothing to compare with
                self.metrics.shadow_requests.labels(model, variant, "unpaired").inc()
                return
            self.metrics.shadow_latency_delta.labels(model, variant).observe(shadow_s - primary_s)
            await self._compare(model, variant, response, shadow)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("shadow comparison for %s/%s failed", model, variant)
            self.metrics.shadow_requests.labels(model, variant, "error").inc()

    async def _compare(self, model: str, variant: str, primary: UpstreamResponse,
                       shadow: UpstreamResponse) -> None:
        stats = self.agreement.setdefault((model, variant), Agreement())
        if primary.status != 200 or shadow.status != 200:
            agree = primary.status == shadow.status
            self._count(model, variant, stats, agree, None, "status")
            return

        def run() -> tuple[bool, float]:
            result = compare(decode_response(primary.headers, primary.body),
                             decode_response(shadow.headers, shadow.body))
            return result.agree, result.max_abs_error

        if len(primary.body) + len(shadow.body) > _INLINE_COMPARE_MAX:
            agree, abs_err = await asyncio.to_thread(run)
        else:
            agree, abs_err = run()
        self._count(model, variant, stats, agree, abs_err, "compared")

    def _count(self, model: str, variant: str, stats: Agreement, agree: bool,
               abs_err: float | None, result: str) -> None:
        stats.compared += 1
        stats.agreed += int(agree)
        self.metrics.shadow_requests.labels(model, variant, result).inc()
        self.metrics.shadow_agreement.labels(model, variant, "true" if agree else "false").inc()
        if abs_err is not None:
            self.metrics.shadow_abs_error.labels(model, variant).observe(abs_err)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
