"""The REST front door: the KServe V2 protocol as Triton speaks it, parse and serialize only.

Where it sits: first hop of the request path (the gateway's HTTP/1.1 protocol or any ASGI
server -> here -> the pipeline, :mod:`gateway.pipeline.service` -> proxy -> upstream). Calls
under ``/v2/models/{m}[/versions/{v}]/...`` (infer, metadata, ready, config, generate,
generate_stream) become a ``_RestCall`` for the pipeline (:meth:`GatewayApp.model_call`) and
are forwarded as bytes to the model's pool; statistics are merged over the pool; health,
server metadata, ``/v2/repository/index`` and ``/metrics`` are answered by the gateway itself
(:mod:`gateway.http.control`). No framework and no JSON parsing on the infer path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from contracts import is_version
from gateway.adapters.upstream import (
    HOP_BY_HOP,
    Headers,
    Upstream,
    UpstreamResponse,
    UpstreamStream,
)
from gateway.errors import BadRequest, MethodNotAllowed, NotFound
from gateway.http.asgi import ClientGone, Scope, header, read_body, respond
from gateway.http.control import Control
from gateway.http.errors import error_response
from gateway.http.request import HttpRequest, Responder
from gateway.http.validate import check_infer_body
from gateway.metrics import GatewayMetrics
from gateway.names import VARIANT_HEADER
from gateway.pipeline.coldstart import ColdWait
from gateway.pipeline.pools import Endpoint, Pool
from gateway.pipeline.priority import rest_with_priority
from gateway.pipeline.service import INFER, LOAD, SHADOW, STREAM, Pipeline
from gateway.statuses import status_of
from router import Route, RouteError

log = logging.getLogger("servegate.http")

_PREFIX = "/v2/models/"
# Names the variant that served a call to a split model (REST header, gRPC trailing metadata).
# On a response that waited for a cold start: how long, in milliseconds.
COLD_START_HEADER = b"x-servegate-cold-start-ms"
# A request's own deadline for waiting on a cold start, in milliseconds.
TIMEOUT_HEADER = b"x-servegate-timeout-ms"
_PREFIX_LEN = len(_PREFIX)
# A refused request's body is read and dropped up to this size, to keep the connection.
_DRAIN_LIMIT = 64 * 1024
_DRAIN_TIMEOUT_S = 1.0
# Answered without an API key: probes, scraping, the admin API (its own token), the schema.
_OPEN_PATHS = ("/v2/health/", "/metrics", "/admin", "/openapi.json")
# action -> the one method Triton accepts for it
_MODEL_ACTIONS = {
    "infer": "POST", "": "GET", "ready": "GET", "config": "GET", "stats": "GET",
    "generate": "POST", "generate_stream": "POST",
}
_INFER_ACTIONS = ("infer", "generate", "generate_stream")
_LIMITS_KEPT = 4096  # request targets whose body limit is remembered


def parse_model_path(rest: str) -> tuple[str, str, str] | None:
    """``"m/versions/2/infer"`` -> ``("m", "2", "infer")``; ``None`` if not a model route."""
    parts = rest.split("/")
    if not parts[0]:
        return None
    if len(parts) >= 2 and parts[1] == "versions":
        if len(parts) < 3 or not parts[2]:
            return None
        version, action = parts[2], "/".join(parts[3:])
    else:
        version, action = "", "/".join(parts[1:])
    if action not in _MODEL_ACTIONS:
        return None
    return parts[0], version, action


def model_path(model: str, version: str, action: str) -> bytes:
    path = _PREFIX + model
    if version:
        path += "/versions/" + version
    if action:
        path += "/" + action
    return path.encode()


class GatewayApp:
    """The REST front. Model calls (:meth:`model_call`) come from the gateway's own HTTP/1.1
    protocol or, through :meth:`__call__`, from any ASGI server; the rest is ASGI
    (:mod:`gateway.http.control`)."""

    def __init__(self, pipeline: Pipeline, upstream: Upstream, metrics: GatewayMetrics,
                 control: Control) -> None:
        self.pipeline = pipeline
        self.admission = pipeline.admission
        self.proxy = pipeline.proxy
        self.upstream = upstream
        self.metrics = metrics
        self.control = control
        self._limit_for: object = None  # the runtime state the body limits were read from
        self._limit = 0
        self._limits: dict[bytes, int] = {}

    # -------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        path: str = scope["path"]
        receive = _Tracked(receive)
        try:
            if is_model_call(path):
                body = await read_body(scope, receive, self.body_limit())
                request = HttpRequest(scope["method"], path, scope["query_string"],
                                      scope["headers"], body)
                await self.model_call(request, _AsgiResponder(send, receive))
                return
            if path.startswith(_PREFIX) and path != "/v2/models/stats":
                await self._model_stats(scope, send, path)
            else:
                if not path.startswith(_OPEN_PATHS):
                    scope["servegate.tenant"] = self._authenticate(scope)
                await self.control(scope, receive, send)
        except ClientGone:
            pass
        except Exception as exc:
            status, headers, body = error_response(exc)
            self.metrics.refused("", "http", status)
            await receive.drain(scope)
            await respond(send, status, headers, body)

    def body_limit(self) -> int:
        """The largest body any route accepts (each route's own limit is checked per call)."""
        state = self.proxy.runtime.state
        if state is not self._limit_for:
            self._refresh_limits(state)
        return self._limit

    def body_limit_for(self, url: bytes) -> int:
        """The body limit for a request to ``url`` (the raw request target): its route's, where
        it names a routed model, else :meth:`body_limit`. Remembered per URL (bounded), so a
        server can refuse a body as soon as it passes the limit."""
        state = self.proxy.runtime.state
        if state is not self._limit_for:
            self._refresh_limits(state)
        limit = self._limits.get(url)
        if limit is None:
            limit = self._limit
            path = url.partition(b"?")[0]
            if path.startswith(b"/v2/models/"):
                parsed = parse_model_path(path[_PREFIX_LEN:].decode("latin-1"))
                if parsed is not None:
                    with contextlib.suppress(RouteError):  # not routed: 404 once it is read
                        limit = state.table.lookup(parsed[0], parsed[1]).max_body_bytes
            if len(self._limits) < _LIMITS_KEPT:
                self._limits[url] = limit
        return limit

    def _refresh_limits(self, state: Any) -> None:
        self._limit_for = state
        self._limit = max((r.max_body_bytes for r in state.table.routes()),
                          default=state.config.limits.max_body_bytes)
        self._limits = {}

    async def _model_stats(self, scope: Scope, send: Any, path: str) -> None:
        """``GET /v2/models/{m}[/versions/{v}]/stats``: merged over the model's pool."""
        parsed = parse_model_path(path[_PREFIX_LEN:])
        if parsed is None:
            raise NotFound(f"Not Found: {path}")
        model, version, _ = parsed
        if scope["method"] != "GET":
            raise MethodNotAllowed("GET")
        if version and not is_version(version):
            raise BadRequest(f"failed to parse model version '{version}': expected an integer")
        route = self.proxy.route(model, version)
        self.admission.admit(self._authenticate(scope), route, infer=False)
        await self.control.model_stats(send, route)

    def _authenticate(self, scope: Scope) -> str | None:
        """The calling tenant (``None`` with auth off); 401 without a valid key."""
        return self.admission.caller(lambda name: header(scope, name.encode()))

    # -------------------------------------------------------------- model calls

    async def model_call(self, request: HttpRequest, responder: Responder) -> None:
        """``/v2/models/{m}[/versions/{v}]/{action}``: forwarded through the pipeline.
        Every error is answered here (V2 error JSON), never raised."""
        path = request.path
        call: _RestCall | None = None
        try:
            parsed = parse_model_path(path[_PREFIX_LEN:])
            if parsed is None:
                raise NotFound(f"Not Found: {path}")
            model, version, action = parsed
            allowed = _MODEL_ACTIONS[action]
            if request.method != allowed:
                raise MethodNotAllowed(allowed)
            if version and not is_version(version):
                raise BadRequest(f"failed to parse model version '{version}': "
                                 "expected an integer")
        except Exception as exc:
            status, headers, body = error_response(exc)
            self.metrics.refused("", "http", status)
            await responder.reply(status, headers, body)
            return
        if action == "generate_stream":
            await self._stream_call(request, responder, model, version)
            return
        call = _RestCall(self, request, action)
        try:
            served = await self.pipeline.forward(call, model, version, _KINDS[action])
        except Exception as exc:
            status, headers, body = error_response(exc)
            if call.variant is not None:
                headers.append((VARIANT_HEADER, call.variant.encode()))
            await responder.reply(status, headers, body)
            return
        response: UpstreamResponse = served.result
        headers = response.headers
        if served.variant is not None:
            headers.append((VARIANT_HEADER, served.variant.encode()))
        if served.waited_s:
            headers.append((COLD_START_HEADER, str(round(served.waited_s * 1000)).encode()))
        await responder.reply(response.status, headers, response.body)

    async def _stream_call(self, request: HttpRequest, responder: Responder, model: str,
                           version: str) -> None:
        """``generate_stream``: Triton's Server-Sent Events pass through as they arrive, never
        buffered. A split model's variant is chosen as for infer (no shadow copy of a stream).
        A client that goes away cancels the call upstream; a transfer that breaks after the
        head was sent ends the stream with a V2 error event."""
        call = _StreamCall(self, request, "generate_stream", responder, model)
        task = asyncio.current_task()
        assert task is not None

        def gone() -> None:
            if not call.finished:
                call.gone = True
                task.cancel()

        unwatch = responder.on_gone(gone)
        try:
            await self.pipeline.forward(call, model, version, _KINDS["generate_stream"])
        except asyncio.CancelledError:
            if not call.gone or task.uncancel():
                raise
        except Exception as exc:
            if call.started:
                call.finished = True
                await responder.end(b"data: " + error_response(exc)[2] + b"\n\n")
            else:
                status, headers, body = error_response(exc)
                await responder.reply(status, headers, body)
        finally:
            unwatch()


# action -> what kind of call it is for the pipeline
_KINDS = {
    "infer": INFER | LOAD | SHADOW, "generate": INFER | LOAD | SHADOW,
    "generate_stream": INFER | LOAD | STREAM,
    "": LOAD, "config": LOAD, "ready": 0,
}


class _RestCall:
    """One forwarded REST call as the pipeline sees it (:class:`gateway.pipeline.service.Call`)."""

    __slots__ = ("action", "app", "body", "cold", "headers", "method", "request", "target",
                 "variant")
    protocol = "http"

    def __init__(self, app: GatewayApp, request: HttpRequest, action: str) -> None:
        self.app = app
        self.request = request
        self.action = action
        self.method = request.method.encode()
        target = request.path.encode()
        self.target = target + b"?" + request.query if request.query else target
        self.body = request.body
        # The client's headers minus hop-by-hop ones (and the API key: :meth:`credential`).
        self.headers = [(k, v) for k, v in request.headers if k not in HOP_BY_HOP]
        self.variant: str | None = None
        self.cold: ColdWait | None = None

    def credential(self, header: str) -> bytes | None:
        """The API key (taken out of what is forwarded: never sent on)."""
        name = header.encode()
        self.headers = [(k, v) for k, v in self.headers if k != name]
        return self.request.header(name)

    def header(self, name: str) -> str | None:
        raw = self.request.header(name.encode())
        return raw.decode("latin-1") if raw is not None else None

    def size(self) -> int:
        return len(self.body)

    def check(self) -> None:
        if self.action in _INFER_ACTIONS:
            check_infer_body(self.request.headers, self.body, self.action)

    def budget_s(self) -> float | None:
        return request_budget(self.request)

    def prioritize(self, level: int) -> bool:
        rewritten = rest_with_priority(self.body, self.headers, level)
        if rewritten is None:
            return False
        self.body, self.headers = rewritten
        return True

    def retarget(self, route: Route, variant: str) -> None:
        self.variant = variant
        self.target = model_path(route.model, route.version, self.action)

    def endpoints(self, pool: Pool) -> Sequence[Endpoint]:
        return pool.endpoints

    def send(self, ep: Endpoint, route: Route) -> Awaitable[UpstreamResponse]:
        timeouts = route.timeouts
        return self.app.upstream.request(ep.host, ep.port, self.method, self.target,
                                         self.headers, self.body, timeouts.connect_s,
                                         timeouts.read_s)

    def status(self, result: UpstreamResponse) -> int:
        return result.status

    def error_status(self, exc: BaseException) -> int:
        return http_status_of(exc)

    def shadow(self, route: Route) -> Callable[[], Awaitable[UpstreamResponse]] | None:
        upstream, method, headers, body = self.app.upstream, self.method, self.headers, self.body
        target = model_path(route.model, route.version, self.action)
        timeouts = route.timeouts

        def send(ep: Endpoint) -> Awaitable[UpstreamResponse]:
            return upstream.request(ep.host, ep.port, method, target, headers, body,
                                    timeouts.connect_s, timeouts.read_s)

        return self.app.pipeline.shadow_sender(route, send)


class _StreamCall(_RestCall):
    """``generate_stream``: the answer is relayed to the client as the endpoint sends it."""

    __slots__ = ("begun", "finished", "gone", "model", "responder", "started")

    def __init__(self, app: GatewayApp, request: HttpRequest, action: str,
                 responder: Responder, model: str) -> None:
        super().__init__(app, request, action)
        self.responder = responder
        self.model = model
        self.begun = time.perf_counter()
        self.started = self.finished = self.gone = False

    def send(self, ep: Endpoint, route: Route) -> Awaitable[UpstreamResponse]:
        return self._relay(ep, route)

    async def _relay(self, ep: Endpoint, route: Route) -> UpstreamResponse:
        timeouts = route.timeouts
        stream = await self.app.upstream.stream(
            ep.host, ep.port, b"POST", model_path(route.model, route.version, self.action),
            self.headers, self.body, timeouts.connect_s, timeouts.read_s)
        try:
            await self._pass_on(stream)
        finally:
            stream.close()
        return UpstreamResponse(stream.status, stream.headers, b"")

    async def _pass_on(self, stream: UpstreamStream) -> None:
        headers = list(stream.headers)
        if self.variant is not None:
            headers.append((VARIANT_HEADER, self.variant.encode()))
        if self.cold is not None and self.cold.waited_s:
            headers.append((COLD_START_HEADER, str(round(self.cold.waited_s * 1000)).encode()))
        responder = self.responder
        await responder.start(stream.status, headers)
        self.started = True
        first = True
        async for chunk in stream.chunks():
            if first:
                self.app.metrics.first_byte.labels(self.model, "http").observe(
                    time.perf_counter() - self.begun)
                first = False
            await responder.write(chunk)
        self.finished = True
        await responder.end()


class _AsgiResponder:
    """:class:`Responder` over ASGI ``send`` (and ``receive``, to see the client go)."""

    __slots__ = ("receive", "send")

    def __init__(self, send: Any, receive: Any) -> None:
        self.send = send
        self.receive = receive

    async def reply(self, status: int, headers: Headers, body: bytes) -> None:
        await respond(self.send, status, headers, body)

    async def start(self, status: int, headers: Headers) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, chunk: bytes) -> None:
        await self.send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end(self, chunk: bytes = b"") -> None:
        await self.send({"type": "http.response.body", "body": chunk, "more_body": False})

    def on_gone(self, callback: Callable[[], None]) -> Callable[[], None]:
        async def watch() -> None:  # the body was read already: the next message is the end
            while True:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    callback()
                    return

        watcher = asyncio.create_task(watch())
        return watcher.cancel  # type: ignore[return-value]


def is_model_call(path: str) -> bool:
    """A path the REST front forwards (statistics are merged by the gateway instead)."""
    return path.startswith(_PREFIX) and not path.endswith("/stats")


def http_status_of(exc: BaseException) -> int:
    row = status_of(exc)
    return 500 if row is None else row[0]


def request_budget(request: HttpRequest) -> float | None:
    """How long this request may wait for a cold start (seconds), if it says.

    Read only when a request is about to wait: the ``x-servegate-timeout-ms`` header, else the
    V2 ``timeout`` request parameter (microseconds) from the JSON header part of the body.
    """
    raw = request.header(TIMEOUT_HEADER)
    if raw is not None:
        try:
            return max(float(raw) / 1000, 0.0)
        except ValueError:
            raise BadRequest(f"invalid {TIMEOUT_HEADER.decode()} header: {raw[:32]!r}") from None
    body = request.body
    hlen = request.header(b"inference-header-content-length")
    head = body[:int(hlen)] if hlen is not None and hlen.isdigit() else body
    if b'"timeout"' not in head or request.header(b"content-encoding") is not None:
        return None
    try:
        params = json.loads(head).get("parameters") or {}
        timeout_us = params.get("timeout")
    except (ValueError, AttributeError):
        return None
    if isinstance(timeout_us, int | float) and not isinstance(timeout_us, bool):
        return max(timeout_us / 1e6, 0.0)
    return None


class _Tracked:
    """``receive`` that knows whether the request body has been read to its end.

    A request refused before its body was read (401, 403, 404, 429, ...) has a small body
    drained first, so the connection stays open for the client's next request (uvicorn closes
    a connection whose body was left unread, and a reconnect per refusal costs more than the
    refusal). A large or slow body is not waited for: the connection is closed instead.
    """

    __slots__ = ("done", "receive")

    def __init__(self, receive: Any) -> None:
        self.receive = receive
        self.done = False

    async def __call__(self) -> Any:
        message = await self.receive()
        if not message.get("more_body", False) or message["type"] != "http.request":
            self.done = True
        return message

    async def drain(self, scope: Scope) -> None:
        if self.done:
            return
        declared = header(scope, b"content-length")
        if declared is None or not declared.isdigit() or int(declared) > _DRAIN_LIMIT:
            return
        try:
            async with asyncio.timeout(_DRAIN_TIMEOUT_S):
                while not self.done:
                    await self()
        except TimeoutError:
            pass


async def _lifespan(receive: Any, send: Any) -> None:
    """Resources are owned by the server runner; lifespan events are acknowledged only."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
