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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError
from grpc.aio import ServicerContext as Context
from tritonclient.grpc import service_pb2 as pb

from contracts.cost import ANONYMOUS
from gateway import __version__
from gateway.errors import (
    PayloadTooLarge,
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
from gateway.pipeline.admission import Admission
from gateway.pipeline.coldstart import ColdWait
from gateway.pipeline.pools import Endpoint, Pool
from gateway.pipeline.priority import grpc_with_priority
from gateway.pipeline.proxy import Proxy
from gateway.traffic.manager import TrafficManager
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
    def __init__(self, proxy: Proxy, channels: GrpcChannels, metrics: GatewayMetrics,
                 is_ready: Callable[[], bool], traffic: TrafficManager | None,
                 admission: Admission) -> None:
        self.admission = admission
        self.proxy = proxy
        self.channels = channels
        self.metrics = metrics
        self.is_ready = is_ready
        self.traffic = traffic  # split decisions; None: splits are not applied

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
        """Route by the message's model name and version; send its bytes to one endpoint.

        ``not_ready``: the answer when the model is not routed or has no healthy endpoint
        (ModelReady's ``ready=false``, which serializes to no bytes) instead of an error.
        """
        start = time.perf_counter()
        model = ""
        variant = ""
        picked: Endpoint | None = None
        ticket = None
        try:
            model, version, _ = request_head(request)
            metadata, headers, tenant = self.caller(context)
            route = self.route(model, version, headers)
            if len(request) > route.max_body_bytes:
                raise PayloadTooLarge(route.max_body_bytes)
            infer = method == "ModelInfer"
            ticket = self.admission.admit(tenant, route, infer)
            if ticket is not None and ticket.level and infer:
                request = grpc_with_priority(request, ticket.level)
            if route.split is not None:
                route, variant = self._variant(route, method, headers)
                request = retarget(request, route.model, route.version)
                context.set_trailing_metadata(((VARIANT_HEADER.decode(), variant),))
            read_s = route.timeouts.read_s

            def send(ep: Endpoint) -> Awaitable[bytes]:
                nonlocal picked
                picked = ep
                assert ep.grpc is not None
                timeout, clients = deadline(context, read_s)  # after any cold-start wait
                return self.channels.get(ep.grpc).unary(
                    method, request, metadata, timeout, clients)

            response, ep = await self.proxy.call(route, _grpc_endpoints, send,
                                                 ColdWait(context.time_remaining,
                                                          load=method != "ModelReady"),
                                                 charge=(tenant or ANONYMOUS) if infer else None)
        except Exception as exc:
            if not_ready is not None and isinstance(exc, UnknownModel | NoEndpoint | Unavailable):
                return not_ready
            code, details = grpc_status(exc)
            label = "<unknown>" if isinstance(exc, UnknownModel) else model
            elapsed = time.perf_counter() - start
            self.metrics.observe(label, picked.address if picked else "", "grpc",
                                 http_status(code), elapsed)
            if variant and self.traffic is not None:
                self.traffic.stats.record(model, variant, False, elapsed)
                self.metrics.observe_variant(model, variant, http_status(code), elapsed)
            await _abort(context, code, details)
        finally:
            self.admission.release(ticket)
        elapsed = time.perf_counter() - start
        self.metrics.observe(model, ep.address, "grpc", 200, elapsed)
        if variant and self.traffic is not None:
            self.traffic.stats.record(model, variant, True, elapsed)
            self.metrics.observe_variant(model, variant, 200, elapsed)
        return response

    def _variant(self, route: Route, method: str, headers: dict[str, str]) -> tuple[Route, str]:
        """The split variant serving this call: chosen for ModelInfer (pin, sticky key or
        weighted draw, as on REST), the baseline for metadata, config and readiness. Shadow
        mirroring is applied on REST only (its output diffing decodes REST responses)."""
        split = route.split
        assert split is not None
        if method == "ModelInfer" and self.traffic is not None:
            decision = self.traffic.decide(route, headers.get)
            return decision.route, decision.variant
        baseline = split.by_name[split.baseline]
        return self.proxy.runtime.state.table.target(route, baseline), baseline.name

    def caller(self, context: Context) -> tuple[Metadata, dict[str, str], str | None]:
        """The metadata to forward (never the API key), its text entries, and the tenant
        (``None`` with auth off); :class:`Unauthorized` without a valid key."""
        metadata, headers = client_metadata(context)
        name = self.admission.auth_header()
        if name is None:
            return metadata, headers, None
        value = headers.pop(name, None)
        tenant = self.admission.authenticate(value.encode() if value is not None else None)
        return tuple(m for m in metadata if m[0] != name), headers, tenant

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
