"""The REST front door: a plain ASGI callable speaking the KServe V2 protocol as Triton does.

Where it sits: first hop of the request path (uvicorn -> here -> proxy -> upstream). Calls
under ``/v2/models/{m}[/versions/{v}]/...`` are forwarded as bytes to the model's pool
(infer, metadata, ready, config, generate); statistics are merged over the pool; health,
server metadata, ``/v2/repository/index`` and ``/metrics`` are answered by the gateway itself
(:mod:`gateway.http.control`). No framework and no JSON parsing on the infer path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from contracts import is_version
from contracts.cost import ANONYMOUS, SHADOW_TENANT
from gateway.adapters.upstream import HOP_BY_HOP, Headers, UpstreamResponse, UpstreamStream
from gateway.errors import BadRequest, MethodNotAllowed, NotFound
from gateway.http.asgi import ClientGone, Scope, header, read_body, respond
from gateway.http.control import Control
from gateway.http.errors import error_response
from gateway.http.validate import check_infer_body
from gateway.metrics import GatewayMetrics
from gateway.names import VARIANT_HEADER
from gateway.pipeline.admission import Admission
from gateway.pipeline.coldstart import ColdWait
from gateway.pipeline.priority import rest_with_priority
from gateway.pipeline.proxy import Proxy
from gateway.pipeline.splits import Decision
from gateway.traffic.manager import TrafficManager
from router import Route, UnknownModel

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
    def __init__(self, proxy: Proxy, metrics: GatewayMetrics, control: Control,
                 traffic: TrafficManager, admission: Admission) -> None:
        self.admission = admission
        self.proxy = proxy
        self.metrics = metrics
        self.control = control
        self.traffic = traffic

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        path: str = scope["path"]
        receive = _Tracked(receive)
        try:
            if path.startswith(_PREFIX) and path != "/v2/models/stats":
                await self._model_call(scope, receive, send, path)
            else:
                if not path.startswith(_OPEN_PATHS):
                    scope["servegate.tenant"] = self._authenticate(scope)
                await self.control(scope, receive, send)
        except ClientGone:
            pass
        except Exception as exc:
            status, headers, body = error_response(exc)
            self.metrics.rejected.labels("", "http", str(status)).inc()
            await receive.drain(scope)
            await respond(send, status, headers, body)

    async def _model_call(self, scope: Scope, receive: Any, send: Any, path: str) -> None:
        start = time.perf_counter()
        parsed = parse_model_path(path[_PREFIX_LEN:])
        if parsed is None:
            raise NotFound(f"Not Found: {path}")
        model, version, action = parsed
        method = scope["method"]
        if method != _MODEL_ACTIONS[action]:
            raise MethodNotAllowed(_MODEL_ACTIONS[action])
        if version and not is_version(version):
            raise BadRequest(f"failed to parse model version '{version}': expected an integer")
        ticket = None
        try:
            tenant = self._authenticate(scope)
            route = self.proxy.route(model, version)
            infer = action in _INFER_ACTIONS
            ticket = self.admission.admit(tenant, route, infer)
            if action == "stats":
                await self.control.model_stats(send, route)
                return
            body = await read_body(scope, receive, route.max_body_bytes)
            if infer:
                check_infer_body(scope, body, action)
            headers = self._forwarded_headers(scope)
            if ticket is not None and ticket.level and infer:
                body, headers = self._with_priority(model, body, headers, ticket.level)
            if action == "generate_stream":
                await self._stream_call(scope, receive, send, route, headers, body, start,
                                        tenant or ANONYMOUS)
                return
            if route.split is not None:
                await self._split_call(scope, send, route, action, headers, body, start,
                                       (tenant or ANONYMOUS) if infer else None)
                return
            target = path.encode()
            if scope["query_string"]:
                target += b"?" + scope["query_string"]
            cold = ColdWait(lambda: request_budget(scope, body), load=action != "ready")
            response, ep = await self.proxy.forward(
                route, method.encode(), target, headers, body, cold,
                (tenant or ANONYMOUS) if infer else None)
        except ClientGone:
            raise
        except Exception as exc:
            status, err_headers, err_body = error_response(exc)
            label = "<unknown>" if isinstance(exc, UnknownModel) else model  # bounded labels
            self.metrics.observe(label, getattr(exc, "endpoint", ""), "http", status,
                                 time.perf_counter() - start)
            await receive.drain(scope)
            await respond(send, status, err_headers, err_body)
            return
        finally:
            self.admission.release(ticket)
        _mark_cold_wait(response, cold)
        await respond(send, response.status, response.headers, response.body)
        self.metrics.observe(model, ep.address, "http", response.status,
                             time.perf_counter() - start)

    async def _stream_call(self, scope: Scope, receive: Any, send: Any, route: Route,
                           headers: Headers, body: bytes, start: float, charge: str) -> None:
        """``generate_stream``: Triton's Server-Sent Events pass through as they arrive, never
        buffered. A split model's variant is chosen as for infer (no shadow copy of a stream).
        A client that goes away cancels the call upstream; a transfer that breaks after the
        head was sent ends the stream with a V2 error event."""
        target, variant = route, None
        if route.split is not None:
            decision = self.traffic.decide(route, _header_reader(scope))
            target, variant = decision.route, decision.variant
        cold = ColdWait(lambda: request_budget(scope, body))
        relay = _Relay(send, route.model, variant, cold, start, self.metrics)
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(_client_gone(receive, relay, task))
        try:
            response, ep = await self.proxy.forward_stream(
                target, b"POST", model_path(target.model, target.version, "generate_stream"),
                headers, body, relay, cold, charge)
        except asyncio.CancelledError:
            if not relay.gone or task.uncancel():
                raise
            raise ClientGone() from None
        except Exception as exc:
            if not relay.started:
                raise
            await relay.fail(exc)
            self.metrics.observe(route.model, getattr(exc, "endpoint", ""), "http",
                                 error_response(exc)[0], time.perf_counter() - start)
            return
        finally:
            watcher.cancel()
        self.metrics.observe(route.model, ep.address, "http", response.status,
                             time.perf_counter() - start)

    def _authenticate(self, scope: Scope) -> str | None:
        """The calling tenant (``None`` with auth off); 401 without a valid key."""
        name = self.admission.auth_header()
        if name is None:
            return None
        return self.admission.authenticate(header(scope, name.encode()))

    def _forwarded_headers(self, scope: Scope) -> Headers:
        """The client's headers minus hop-by-hop ones and the API key (never sent on)."""
        name = self.admission.auth_header()
        drop = HOP_BY_HOP if name is None else HOP_BY_HOP | {name.encode()}
        return [(k, v) for k, v in scope["headers"] if k not in drop]

    def _with_priority(self, model: str, body: bytes, headers: Headers,
                       level: int) -> tuple[bytes, Headers]:
        rewritten = rest_with_priority(body, headers, level)
        if rewritten is None:
            self.metrics.priority_skipped.labels(model).inc()
            return body, headers
        return rewritten

    async def _split_call(self, scope: Scope, send: Any, route: Route, action: str,
                          headers: Headers, body: bytes, start: float,
                          charge: str | None = None) -> None:
        """A call to a split model: the chosen variant answers, a shadow may get a copy
        (charged to the shadow target as tenant ``_shadow``, never to the caller)."""
        if action in ("infer", "generate"):
            decision = self.traffic.decide(route, _header_reader(scope))
        else:  # metadata, readiness, config: the baseline variant describes the model
            split = route.split
            assert split is not None
            baseline = split.by_name[split.baseline]
            decision = Decision(self.proxy.runtime.state.table.target(route, baseline),
                                baseline.name, None)
        target = decision.route
        method = scope["method"].encode()
        mirror = None
        if decision.shadow is not None:
            shadow_route, shadow = decision.shadow
            shadow_path = model_path(shadow_route.model, shadow_route.version, action)

            async def send_shadow() -> UpstreamResponse:
                response, _ = await self.proxy.forward(shadow_route, method, shadow_path,
                                                       headers, body, charge=SHADOW_TENANT)
                return response

            mirror = self.traffic.mirror.start(route.model, shadow.variant.name,
                                               shadow.max_concurrency, send_shadow)
        variant = decision.variant
        cold = ColdWait(lambda: request_budget(scope, body), load=action != "ready")
        try:
            response, ep = await self.proxy.forward(
                target, method, model_path(target.model, target.version, action), headers, body,
                cold, charge)
        except Exception as exc:
            if mirror is not None:
                mirror.set_exception(exc)
            elapsed = time.perf_counter() - start
            self.traffic.stats.record(route.model, variant, False, elapsed)
            status, err_headers, err_body = error_response(exc)
            self.metrics.observe_variant(route.model, variant, status, elapsed)
            self.metrics.observe(route.model, getattr(exc, "endpoint", ""), "http", status,
                                 elapsed)
            err_headers.append((VARIANT_HEADER, variant.encode()))
            await respond(send, status, err_headers, err_body)
            return
        elapsed = time.perf_counter() - start
        if mirror is not None:
            mirror.set_result((response, elapsed))
        response.headers.append((VARIANT_HEADER, variant.encode()))
        _mark_cold_wait(response, cold)
        await respond(send, response.status, response.headers, response.body)
        self.traffic.stats.record(route.model, variant, response.status < 500, elapsed)
        self.metrics.observe_variant(route.model, variant, response.status, elapsed)
        self.metrics.observe(route.model, ep.address, "http", response.status, elapsed)


class _Relay:
    """Passes one streamed response on to the client (the ``relay`` of
    :meth:`gateway.pipeline.proxy.Proxy.forward_stream`)."""

    __slots__ = ("cold", "finished", "gone", "metrics", "model", "send", "start", "started",
                 "variant")

    def __init__(self, send: Any, model: str, variant: str | None, cold: ColdWait,
                 start: float, metrics: GatewayMetrics) -> None:
        self.send = send
        self.model = model
        self.variant = variant
        self.cold = cold
        self.start = start
        self.metrics = metrics
        self.started = self.finished = self.gone = False

    async def __call__(self, stream: UpstreamStream) -> None:
        headers = list(stream.headers)
        if self.variant is not None:
            headers.append((VARIANT_HEADER, self.variant.encode()))
        if self.cold.waited_s:
            headers.append((COLD_START_HEADER, str(round(self.cold.waited_s * 1000)).encode()))
        await self.send({"type": "http.response.start", "status": stream.status,
                         "headers": headers})
        self.started = True
        first = True
        async for chunk in stream.chunks():
            if first:
                self.metrics.first_byte.labels(self.model, "http").observe(
                    time.perf_counter() - self.start)
                first = False
            await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        self.finished = True
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def fail(self, exc: BaseException) -> None:
        """End a started stream with one V2 error event (the status line is already sent)."""
        self.finished = True
        await self.send({"type": "http.response.body",
                         "body": b"data: " + error_response(exc)[2] + b"\n\n", "more_body": False})


async def _client_gone(receive: Any, relay: _Relay, task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` (the streaming call) if the client disconnects before the stream ends
    (the body was read already: the next message is the disconnect)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not relay.finished:
                relay.gone = True
                task.cancel()
            return


def _header_reader(scope: Scope) -> Callable[[str], str | None]:
    def get(name: str) -> str | None:
        raw = header(scope, name.encode())
        return raw.decode("latin-1") if raw is not None else None

    return get


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


def _mark_cold_wait(response: UpstreamResponse, cold: ColdWait) -> None:
    """A response that waited for a cold start says how long, in milliseconds."""
    if cold.waited_s:
        response.headers.append((COLD_START_HEADER, str(round(cold.waited_s * 1000)).encode()))


def request_budget(scope: Scope, body: bytes) -> float | None:
    """How long this request may wait for a cold start (seconds), if it says.

    Read only when a request is about to wait: the ``x-servegate-timeout-ms`` header, else the
    V2 ``timeout`` request parameter (microseconds) from the JSON header part of the body.
    """
    raw = header(scope, TIMEOUT_HEADER)
    if raw is not None:
        try:
            return max(float(raw) / 1000, 0.0)
        except ValueError:
            raise BadRequest(f"invalid {TIMEOUT_HEADER.decode()} header: {raw[:32]!r}") from None
    hlen = header(scope, b"inference-header-content-length")
    head = body[:int(hlen)] if hlen is not None and hlen.isdigit() else body
    if b'"timeout"' not in head or header(scope, b"content-encoding") is not None:
        return None
    try:
        params = json.loads(head).get("parameters") or {}
        timeout_us = params.get("timeout")
    except (ValueError, AttributeError):
        return None
    if isinstance(timeout_us, int | float) and not isinstance(timeout_us, bool):
        return max(timeout_us / 1e6, 0.0)
    return None


async def _lifespan(receive: Any, send: Any) -> None:
    """Resources are owned by the server runner; lifespan events are acknowledged only."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
