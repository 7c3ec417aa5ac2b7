"""``/metrics`` for the whole pod when ``--workers N`` runs N gateway processes on one port.

Where it sits: built by :func:`gateway.server.serve` in a worker process (settings.worker set).
Each worker serves its own registry's exposition on a private Unix socket,
``<sockets_dir>/worker-<i>.sock`` (plain HTTP/1.0, one answer per connection; the directory is
the parent's, mode 0700). A scrape of ``/metrics`` on any worker (the port's connections land
on any of them) reads its own registry and asks every sibling concurrently, with a short
timeout, then answers the merge (:mod:`gateway.workers.merge`). A sibling that does not answer
in time (starting, restarting, stuck) is left out of that scrape, never failing it, and counted
in ``servegate_metrics_workers_missing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily

from gateway.metrics import GatewayMetrics
from gateway.settings import WorkerSlot
from gateway.workers.merge import merge, render

log = logging.getLogger("servegate.workers")

_REQUEST = b"GET /metrics HTTP/1.0\r\n\r\n"
_HEAD_LIMIT = 8 * 1024


def socket_path(slot: WorkerSlot, index: int) -> Path:
    return slot.sockets_dir / f"worker-{index}.sock"


class PodMetrics:
    def __init__(self, metrics: GatewayMetrics, slot: WorkerSlot, timeout_s: float = 1.0) -> None:
        self.metrics = metrics
        self.slot = slot
        self.timeout_s = timeout_s
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Serve this worker's own exposition on its socket (a stale one is replaced)."""
        path = socket_path(self.slot, self.slot.index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._server = await asyncio.start_unix_server(self._answer, path)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(FileNotFoundError):
                socket_path(self.slot, self.slot.index).unlink()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await reader.readuntil(b"\r\n\r\n")
            body = self.metrics.render()
            writer.write(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n"
                         b"content-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the asking sibling gave up or went away: it counts this worker as missing
        finally:
            writer.close()

    async def fetch(self, index: int) -> str | None:
        """Worker ``index``'s own exposition, or None when it does not answer in time."""
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_unix_connection(
                    socket_path(self.slot, index), limit=_HEAD_LIMIT)
                try:
                    writer.write(_REQUEST)
                    head = await reader.readuntil(b"\r\n\r\n")
                    body = await reader.read()  # to EOF: one answer per connection
                finally:
                    writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            log.debug("worker %d left out of this scrape: %r", index, exc)
            return None
        if not head.startswith(b"HTTP/1.0 200 "):
            return None
        return body.decode("utf-8", errors="replace")

    async def render(self) -> bytes:
        """The pod's exposition: this worker's registry plus every sibling that answers."""
        others = [i for i in range(self.slot.count) if i != self.slot.index]
        fetched = await asyncio.gather(*(self.fetch(i) for i in others))
        texts = [self.metrics.render().decode(), *(t for t in fetched if t is not None)]
        try:
            families = merge(texts)
        except ValueError:  # a garbled sibling answer: this worker's own view, all else missing
            log.exception("a worker's metrics did not parse; answering this worker's alone")
            families, texts = merge(texts[:1]), texts[:1]
        answered = GaugeMetricFamily(
            "servegate_metrics_workers", "Gateway workers whose metrics this scrape sums")
        answered.add_metric([], len(texts))
        missing = GaugeMetricFamily(
            "servegate_metrics_workers_missing",
            "Gateway workers that did not answer in time, left out of this scrape")
        missing.add_metric([], self.slot.count - len(texts))
        return render([*families, answered, missing])
