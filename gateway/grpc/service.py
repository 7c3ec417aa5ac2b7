"""The gRPC front door: ``inference.GRPCInferenceService`` as Triton speaks it.

Where it sits: first hop of the gRPC request path (grpc.aio server -> here -> proxy picks an
endpoint -> :mod:`gateway.grpc.upstream` channel -> Triton). Model-scoped calls are registered
as bytes in, bytes out (no deserializer): the model name and version are read from the raw
message (:func:`gateway.grpc.wire.request_head`) and the same bytes are forwarded, so tensors
are never parsed or re-encoded. The rest is answered by the gateway, like the REST control
endpoints.

    ServerLive, ServerReady, ServerMetadata   the gateway (ready: config loaded, not draining)
    ModelInfer, ModelMetadata, ModelConfig    forwarded to one endpoint of the model's pool
    ModelReady                                forwarded; false for a model the gateway does not
                                              route or whose pool has no healthy endpoint
    ModelStreamInfer                          relayed (:mod:`gateway.grpc.stream`)
    ModelStatistics                           summed over the pool's endpoints (every pool's
                                              when no model is named)
    RepositoryIndex                           the routing table, as the REST index
    RepositoryModelLoad / Unload              UNIMPLEMENTED: model control belongs to the pools
    System/CudaSharedMemory*                  UNIMPLEMENTED: client memory cannot cross a gateway
    TraceSetting, LogSettings                 UNIMPLEMENTED: per-server settings; set them on
                                              the Triton servers

Client metadata is forwarded upstream except reserved and connection-level keys; the text
entries are also collected as a header dict for routing. The client's deadline bounds the
upstream call (with the route's ``read_s`` as the ceiling); cancellation propagates.
Statuses are chosen in :mod:`gateway.grpc.errors` only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError
from grpc.aio import ServicerContext as Context
from tritonclient.grpc import service_pb2 as pb

from gateway import __version__
from gateway.errors import (
    Unavailable,
    Unsupported,
    UpstreamError,
    UpstreamStatus,
)
from gateway.grpc.errors import grpc_status, http_status
from gateway.grpc.stats import merge_statistics
from gateway.grpc.stream import StreamRelay, first_error
from gateway.grpc.upstream import SERVICE, GrpcChannels, Metadata
from gateway.grpc.wire import MalformedMessage, request_head, retarget
from gateway.metrics import GatewayMetrics
from gateway.names import EXTENSIONS, VARIANT_HEADER
from gateway.pipeline.coldstart import ColdWait
from gateway.pipeline.pools import Endpoint, Pool
from gateway.pipeline.priority import grpc_with_priority
from gateway.pipeline.service import INFER, LOAD, Pipeline
from gateway.statuses import status_of
from router import NoEndpoint, Route, UnknownModel

log = logging.getLogger("servegate.grpc")

# Metadata that describes the connection or the gateway's own call, never the request.
_NOT_FORWARDED = frozenset({"user-agent", "te", "content-type", "host", "connection"})
_ALL_STATS_TIMEOUT_S = 5.0
_SHARED_MEMORY = ("shared memory cannot cross a gateway: the client's memory regions are not "
                  "visible to the Triton servers behind servegate; send tensors in the request")
_UNIMPLEMENTED = {
    "RepositoryModelLoad": "model load/unload is not available through servegate: "
                           "manage models on the Triton pools",
    "SystemSharedMemoryStatus": _SHARED_MEMORY,
    "SystemSharedMemoryRegister": _SHARED_MEMORY,
    "SystemSharedMemoryUnregister": _SHARED_MEMORY,
    "CudaSharedMemoryStatus": _SHARED_MEMORY,
    "CudaSharedMemoryRegister": _SHARED_MEMORY,
    "CudaSharedMemoryUnregister": _SHARED_MEMORY,
    "TraceSetting": "trace settings are per Triton server: set them on the servers of the "
                    "pool, not through servegate",
    "LogSettings": "log settings are per Triton server: set them on the servers of the pool, "
                   "not through servegate",
}
_UNIMPLEMENTED["RepositoryModelUnload"] = _UNIMPLEMENTED["RepositoryModelLoad"]


def client_metadata(context: Context) -> tuple[Metadata, dict[str, str]]:
    """The metadata to forward upstream, and its text entries as headers for routing."""
    forward = tuple(
        (m.key, m.value) for m in context.invocation_metadata() or ()
        if m.key not in _NOT_FORWARDED and not m.key.startswith(("grpc-", ":")))
    headers = {k: v for k, v in forward if isinstance(v, str)}
    return forward, headers


def deadline(context: Context, ceiling: float) -> tuple[float, bool]:
    """The upstream timeout and whether it is the client's deadline (below ``ceiling``)."""
    remaining = context.time_remaining()
    if remaining is None or remaining >= ceiling:
        return ceiling, False
    return max(remaining, 0.0), True


class GrpcFront:
    def __init__(self, pipeline: Pipeline, channels: GrpcChannels, metrics: GatewayMetrics,
                 is_ready: Callable[[], bool]) -> None:
        self.pipeline = pipeline
        self.admission = pipeline.admission
        self.proxy = pipeline.proxy
        self.channels = channels
        self.metrics = metrics
        self.is_ready = is_ready

    # ---------------------------------------------------------------- registration

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        def raw(fn: Callable[[bytes, Context], Awaitable[bytes]]) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(fn)

        def typed(fn: Callable[[Any, Context], Awaitable[Any]],
                  request: Any) -> grpc.RpcMethodHandler:
            async def handler(raw_request: bytes, context: Context) -> bytes:
                try:  # parsed here: a deserializer's failure would reach the client as UNKNOWN
                    message = request.FromString(raw_request)
                except DecodeError:
                    await _abort(context, *grpc_status(MalformedMessage(
                        f"not a valid {request.DESCRIPTOR.full_name}")))
                return (await fn(message, context)).SerializeToString()  # type: ignore[no-any-return]

            return grpc.unary_unary_rpc_method_handler(handler)

        handlers = {
            "ServerLive": typed(self.server_live, pb.ServerLiveRequest),
            "ServerReady": typed(self.server_ready, pb.ServerReadyRequest),
            "ServerMetadata": typed(self.server_metadata, pb.ServerMetadataRequest),
            "RepositoryIndex": typed(self.repository_index, pb.RepositoryIndexRequest),
            "ModelReady": raw(self.model_ready),
            "ModelMetadata": raw(self.model_metadata),
            "ModelConfig": raw(self.model_config),
            "ModelStatistics": raw(self.model_statistics),
            "ModelInfer": raw(self.model_infer),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self.model_stream_infer),
            **{name: raw(_refuse(message)) for name, message in _UNIMPLEMENTED.items()},
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    # ---------------------------------------------------------------- answered here

    async def server_live(self, request: pb.ServerLiveRequest,
                          context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest,
                           context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.is_ready())

    async def server_metadata(self, request: pb.ServerMetadataRequest,
                              context: Context) -> pb.ServerMetadataResponse:
        await self._caller_or_abort(context)
        return pb.ServerMetadataResponse(
            name="servegate", version=__version__, extensions=EXTENSIONS)

    async def repository_index(self, request: pb.RepositoryIndexRequest,
                               context: Context) -> pb.RepositoryIndexResponse:
        _, _, tenant = await self._caller_or_abort(context)
        entries = self.proxy.runtime.model_index(request.ready, tenant)
        return pb.RepositoryIndexResponse(models=[
            pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in entries])

    # ---------------------------------------------------------------- forwarded

    async def model_infer(self, request: bytes, context: Context) -> bytes:
        return await self._forward("ModelInfer", request, context)

    async def model_metadata(self, request: bytes, context: Context) -> bytes:
        return await self._forward("ModelMetadata", request, context)

    async def model_config(self, request: bytes, context: Context) -> bytes:
        return await self._forward("ModelConfig", request, context)

    async def model_ready(self, request: bytes, context: Context) -> bytes:
        return await self._forward("ModelReady", request, context, not_ready=b"")

    async def _forward(self, method: str, request: bytes, context: Context,
                       not_ready: bytes | None = None) -> bytes:
        """Route by the message's model name and version; send its bytes to one endpoint
        through the pipeline (:class:`gateway.pipeline.service.Pipeline`).

        ``not_ready``: the answer when the model is not routed or has no healthy endpoint
        (ModelReady's ``ready=false``, which serializes to no bytes) instead of an error.
        """
        try:
            model, version, _ = request_head(request)
        except Exception as exc:
            code, details = grpc_status(exc)
            self.metrics.refused("", "grpc", http_status(code))
            await _abort(context, code, details)
        call = _GrpcCall(self, method, request, context)
        try:
            served = await self.pipeline.forward(call, model, version, _KINDS[method])
        except Exception as exc:
            if not_ready is not None and isinstance(exc, UnknownModel | NoEndpoint | Unavailable):
                return not_ready
            await _abort(context, *grpc_status(exc))
        return served.result  # type: ignore[no-any-return]

    def caller(self, context: Context) -> tuple[Metadata, dict[str, str], str | None]:
        """The metadata to forward (never the API key), its text entries, and the tenant
        (``None`` with auth off); :class:`Unauthorized` without a valid key."""
        key = _Credential(context)
        tenant = self.admission.caller(key.take)
        return key.metadata, key.headers, tenant

    async def _caller_or_abort(
            self, context: Context) -> tuple[Metadata, dict[str, str], str | None]:
        """:meth:`caller`, or the call ends with UNAUTHENTICATED."""
        try:
            return self.caller(context)
        except Exception as exc:
            await _abort(context, *grpc_status(exc))

    def route(self, model: str, version: str, headers: dict[str, str]) -> Route:
        """The route for a call (a split model's route still has to pick its variant)."""
        return self.proxy.route(model, version)

    async def model_statistics(self, request: bytes, context: Context) -> bytes:
        try:
            model, version, _ = request_head(request)
            metadata, headers, tenant = self.caller(context)
            state = self.proxy.runtime.state
            if model:
                route = self.route(model, version, headers)
                self.admission.admit(tenant, route, infer=False)
                pools: Sequence[Pool] = [state.pools[route.pool]]
                ceiling = route.timeouts.read_s
            else:
                pools, ceiling = list(state.pools.values()), _ALL_STATS_TIMEOUT_S
            unique = {e.grpc: e for p in pools for e in p.grpc_endpoints if e.admitted}
            if not unique:
                raise Unavailable("no healthy endpoint with a gRPC address to read "
                                  "statistics from")
            timeout, clients = deadline(context, ceiling)
            results = await asyncio.gather(
                *(self.channels.get(address).unary(
                    "ModelStatistics", request, metadata, timeout, clients)
                  for address in unique if address is not None),
                return_exceptions=True)
            return _merge_statistics(results).SerializeToString()
        except Exception as exc:
            await _abort(context, *grpc_status(exc))

    # ---------------------------------------------------------------- streaming

    async def model_stream_infer(self, requests: AsyncIterator[bytes], context: Context) -> None:
        metadata, headers, tenant = await self._caller_or_abort(context)
        relay = StreamRelay(self, context, metadata, headers, tenant)
        try:
            await relay.run(requests)
        except Exception as exc:  # ExceptionGroup included; cancellation passes through
            await _abort(context, *grpc_status(first_error(exc)))


class _Credential:
    """A call's client metadata (to forward) and its text entries (for routing), from which
    :meth:`take` removes the API key: it is read, never forwarded."""

    __slots__ = ("headers", "metadata")

    def __init__(self, context: Context) -> None:
        self.metadata, self.headers = client_metadata(context)

    def take(self, name: str) -> bytes | None:
        value = self.headers.pop(name, None)
        self.metadata = tuple(m for m in self.metadata if m[0] != name)
        return value.encode() if value is not None else None


# method -> what kind of call it is for the pipeline (no shadow copies over gRPC: comparing
# outputs decodes REST answers)
_KINDS = {"ModelInfer": INFER | LOAD, "ModelMetadata": LOAD, "ModelConfig": LOAD,
          "ModelReady": 0}


class _GrpcCall(_Credential):
    """One forwarded unary call as the pipeline sees it
    (:class:`gateway.pipeline.service.Call`): the message's bytes, the client's metadata."""

    __slots__ = ("channels", "cold", "context", "method", "request")
    protocol = "grpc"

    def __init__(self, front: GrpcFront, method: str, request: bytes, context: Context) -> None:
        self.channels = front.channels
        self.method = method
        self.request = request
        self.context = context
        super().__init__(context)
        self.cold: ColdWait | None = None

    def credential(self, header: str) -> bytes | None:
        return self.take(header)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def size(self) -> int:
        return len(self.request)

    def check(self) -> None:
        pass

    def budget_s(self) -> float | None:
        return self.context.time_remaining()  # type: ignore[no-any-return]

    def prioritize(self, level: int) -> bool:
        self.request = grpc_with_priority(self.request, level)
        return True

    def retarget(self, route: Route, variant: str) -> None:
        self.request = retarget(self.request, route.model, route.version)
        self.context.set_trailing_metadata(((VARIANT_HEADER.decode(), variant),))

    def endpoints(self, pool: Pool) -> Sequence[Endpoint]:
        return _grpc_endpoints(pool)

    def send(self, ep: Endpoint, route: Route) -> Awaitable[bytes]:
        assert ep.grpc is not None
        timeout, clients = deadline(self.context, route.timeouts.read_s)  # after a cold wait
        return self.channels.get(ep.grpc).unary(self.method, self.request, self.metadata,
                                                timeout, clients)

    def status(self, result: bytes) -> int:
        return 200

    def error_status(self, exc: BaseException) -> int:
        if isinstance(exc, UpstreamStatus) or status_of(exc) is not None:
            return http_status(grpc_status(exc)[0])
        return 500  # a bug: logged once, where the call is aborted

    def shadow(self, route: Route) -> None:
        return None


def _grpc_endpoints(pool: Pool) -> list[Endpoint]:
    endpoints = pool.grpc_endpoints
    if not endpoints and pool.endpoints:  # none at all: a pool at zero, which may cold-start
        raise Unavailable(f"no endpoint of pool '{pool.name}' has a gRPC address "
                          "(endpoints[].grpc in the config)")
    return endpoints


def _merge_statistics(results: Sequence[bytes | BaseException]) -> pb.ModelStatisticsResponse:
    """Merge the answers; if none succeeded, raise the first status an endpoint answered."""
    docs = []
    first_status: UpstreamStatus | None = None
    for result in results:
        if isinstance(result, UpstreamStatus):
            first_status = first_status or result
        elif isinstance(result, UpstreamError):
            continue
        elif isinstance(result, BaseException):
            raise result
        else:
            docs.append(pb.ModelStatisticsResponse.FromString(result))
    if not docs:
        raise first_status or Unavailable("no endpoint answered the statistics call")
    return merge_statistics(docs)


async def _abort(context: Context, code: grpc.StatusCode, details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("context.abort returned")  # it raises


def _refuse(message: str) -> Callable[[bytes, Context], Awaitable[bytes]]:
    async def handler(request: bytes, context: Context) -> bytes:
        await _abort(context, *grpc_status(Unsupported(message)))

    return handler


def build_server(front: GrpcFront, max_message_bytes: int,
                 reuse_port: bool = False) -> grpc.aio.Server:
    """A grpc.aio server carrying ``front``; the caller binds a port, starts and stops it.

    ``max_message_bytes`` caps what grpc accepts before a handler sees it (the routes' own
    ``max_body_bytes`` are checked per call, with a clearer message). ``so_reuseport`` is off
    so that a port already in use is an error, not a silently shared listener, except for the
    workers of ``--workers N`` (``reuse_port``), which share the port on purpose.
    """
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ])
    server.add_generic_rpc_handlers((front.rpc_handler(),))
    return server
