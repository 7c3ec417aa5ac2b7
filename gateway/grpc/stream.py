"""ModelStreamInfer through the gateway: one client stream relayed to backend streams.

Where it sits: behind the gRPC front's ModelStreamInfer handler. Every request on the client's
stream is routed like a ModelInfer (model name and version read from its bytes); the first
request for a pool opens a backend stream on one endpoint of that pool, and every later request
for the same pool goes down that same stream, so Triton sees them in the order the client sent
them (a stream usually names one model, hence one backend stream). Responses, decoupled ones
included, are relayed as bytes in the order each backend stream delivers them.

    client stream ──> StreamRelay ──> backend stream (pool A, endpoint a1) ──┐
                          │      └──> backend stream (pool B, endpoint b2) ──┤ pumps
                          └────────── error replies ─────────────────────────┴──> client

- A request the gateway cannot route (malformed, unknown model, too large, no endpoint) gets
  a ``ModelStreamInferResponse`` with ``error_message`` and its id, as Triton answers a bad
  request on a stream; the stream stays open. Errors of single requests that Triton reports
  arrive the same way, through the pump.
- A backend stream that fails (endpoint killed, connection reset) ends the client's stream with
  that status (UNAVAILABLE) and counts against the endpoint's health; in-flight decoupled
  responses cannot be replayed elsewhere.
- The client half-closing half-closes every backend stream; the call ends once they have
  delivered their last response. Cancellation and the client's deadline reach every backend
  stream (the deadline as the backend call's timeout; streams get no ``read_s`` limit).
- Each backend stream counts as one outstanding request on its endpoint while open, and is
  observed once when it ends (protocol ``grpc_stream``, latency = stream lifetime); its cost
  is charged then too: the lifetime as backend time, its requests as inferences.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from tritonclient.grpc import service_pb2 as pb

from gateway.errors import (
    GatewayError,
    Unavailable,
    Unsupported,
    UpstreamBroken,
    UpstreamError,
)
from gateway.grpc.errors import grpc_status, http_status
from gateway.grpc.upstream import Metadata, translate
from gateway.grpc.wire import MalformedMessage, request_head
from gateway.pipeline.pools import Endpoint
from gateway.pipeline.priority import grpc_with_priority
from router import RouteError, UnknownModel

if TYPE_CHECKING:
    from gateway.grpc.upstream import GrpcChannels
    from gateway.metrics import GatewayMetrics
    from gateway.pipeline.proxy import Lease
    from gateway.pipeline.service import Pipeline
    from router import Route


class StreamFront(Protocol):
    """What the relay needs from the gRPC front (``GrpcFront`` satisfies it; no import)."""

    pipeline: Pipeline
    channels: GrpcChannels
    metrics: GatewayMetrics


class _Backend:
    """One backend stream: the endpoint it holds, the call, and how it ended."""

    __slots__ = ("call", "code", "error", "lease", "sent")

    def __init__(self, lease: Lease, call: Any) -> None:
        self.lease = lease
        self.call = call
        self.code = grpc.StatusCode.CANCELLED  # until the pump sees the end
        self.error: GatewayError | None = None
        self.sent = 0  # requests written to it (charged at the end, see _close)

    @property
    def endpoint(self) -> Endpoint:
        return self.lease.endpoint


class _Message:
    """One request on the client's stream, for the pipeline's per-message steps."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def size(self) -> int:
        return len(self.raw)

    def prioritize(self, level: int) -> bool:
        self.raw = grpc_with_priority(self.raw, level)
        return True


class StreamRelay:
    def __init__(self, front: StreamFront, context: grpc.aio.ServicerContext,
                 metadata: Metadata, headers: dict[str, str], tenant: str | None = None) -> None:
        self.front = front
        self.tenant = tenant
        self.context = context
        self.metadata = metadata
        self.headers = headers
        self.backends: dict[str, _Backend] = {}
        self._write_lock = asyncio.Lock()

    async def run(self, requests: AsyncIterator[bytes]) -> None:
        """Relay until the client half-closes and every backend stream has finished.

        Raises the first backend failure (an :class:`ExceptionGroup` from the task group).
        """
        try:
            async with asyncio.TaskGroup() as tasks:
                async for raw in requests:
                    await self._dispatch(raw, tasks)
                for backend in self.backends.values():
                    await backend.call.done_writing()
        finally:
            for backend in self.backends.values():
                self._close(backend)

    async def _dispatch(self, raw: bytes, tasks: asyncio.TaskGroup) -> None:
        try:
            model, version, request_id = request_head(raw)
        except MalformedMessage as exc:
            await self._reply_error(exc, "", "")
            return
        try:
            # Per message: the tenant's models, rate quota, shedding and priority. A stream's
            # responses are not matched to requests here, so no concurrency is held.
            message = _Message(raw)
            route = self.front.pipeline.admit_message(self.tenant, message, model, version)
            raw = message.raw
            backend = self.backends.get(route.pool) or self._open(route, tasks)
        except (RouteError, GatewayError) as exc:
            await self._reply_error(exc, model, request_id)
            return
        try:
            await backend.call.write(raw)
            backend.sent += 1
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            raise await self._ended(backend) from None

    def _open(self, route: Route, tasks: asyncio.TaskGroup) -> _Backend:
        proxy = self.front.pipeline.proxy
        pool = proxy.runtime.state.pools[route.pool]
        if pool.managed:  # one backend stream per pool cannot follow models between servers
            raise Unsupported(f"ModelStreamInfer to model '{route.model}' in the model-managed "
                              f"pool '{pool.name}' is not supported yet: use ModelInfer")
        if not pool.grpc_endpoints:
            raise Unavailable(f"no endpoint of pool '{pool.name}' has a gRPC address")

        def open_stream(ep: Endpoint) -> Any:
            assert ep.grpc is not None
            return self.front.channels.get(ep.grpc).open_stream(
                self.metadata, self.context.time_remaining())

        call, lease = proxy.lease(route, pool.grpc_endpoints, open_stream)
        backend = self.backends[route.pool] = _Backend(lease, call)
        tasks.create_task(self._pump(backend))
        return backend

    async def _pump(self, backend: _Backend) -> None:
        try:
            async for response in backend.call:
                async with self._write_lock:
                    await self.context.write(response)
        except grpc.aio.AioRpcError as exc:
            raise await self._ended(backend) from exc
        backend.code = grpc.StatusCode.OK
        backend.endpoint.succeeded()

    async def _ended(self, backend: _Backend) -> GatewayError:
        """The error a failed backend stream ended with, reported to its endpoint's health
        once (the pump and a write may both see the failure)."""
        if backend.error is not None:
            return backend.error
        code = await backend.call.code()
        details = await backend.call.details() or ""
        ep = backend.endpoint
        assert ep.grpc is not None
        if code == grpc.StatusCode.OK:
            error: GatewayError = UpstreamBroken(ep.grpc, "backend stream ended early")
        else:
            error = translate(code, details, ep.grpc, clients_deadline=True)
        if backend.error is not None:  # the other side got here while we awaited
            return backend.error
        backend.error = error
        backend.code = grpc_status(error)[0]
        if isinstance(error, UpstreamError):
            self.front.pipeline.proxy.failed(ep, error)
        return error

    async def _reply_error(self, exc: Exception, model: str, request_id: str) -> None:
        code, details = grpc_status(exc)
        label = "<unknown>" if isinstance(exc, UnknownModel) or not model else model
        self.front.metrics.refused(label, "grpc", http_status(code))
        reply = pb.ModelStreamInferResponse(
            error_message=details, infer_response=pb.ModelInferResponse(id=request_id))
        async with self._write_lock:
            await self.context.write(reply.SerializeToString())

    def _close(self, backend: _Backend) -> None:
        if not backend.call.done():
            backend.call.cancel()
        lifetime = backend.lease.release(backend.sent, self.tenant)
        self.front.metrics.observe(
            backend.lease.model, backend.endpoint.address, "grpc_stream",
            http_status(backend.code), lifetime)


def first_error(exc: BaseException) -> BaseException:
    """The error to end the client's call with: the first one inside an exception group."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
