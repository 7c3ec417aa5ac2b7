"""The REST front door: a plain ASGI callable speaking the KServe V2 protocol as Triton does.

Where it sits: first hop of the request path (uvicorn -> here -> proxy -> upstream). Calls
under ``/v2/models/{m}[/versions/{v}]/...`` are forwarded as bytes to the model's pool
(infer, metadata, ready, config, generate); statistics are merged over the pool; health,
server metadata, ``/v2/repository/index`` and ``/metrics`` are answered by the gateway itself
(:mod:`gateway.http.control`). No framework and no JSON parsing on the infer path.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from gateway.coldstart import ColdWait
from gateway.errors import BadRequest, MethodNotAllowed, NotFound
from gateway.http.asgi import ClientGone, Scope, header, read_body, respond
from gateway.http.control import Control
from gateway.http.errors import error_response
from gateway.metrics import GatewayMetrics
from gateway.proxy import Proxy
from gateway.traffic import Decision, TrafficManager
from gateway.upstream import HOP_BY_HOP, Headers, UpstreamResponse
from router import Route, UnknownModel, is_version

log = logging.getLogger("servegate.http")

_PREFIX = "/v2/models/"
# Names the variant that served a call to a split model (REST header, gRPC trailing metadata).
VARIANT_HEADER = b"x-servegate-variant"
# On a response that waited for a cold start: how long, in milliseconds.
COLD_START_HEADER = b"x-servegate-cold-start-ms"
# A request's own deadline for waiting on a cold start, in milliseconds.
TIMEOUT_HEADER = b"x-servegate-timeout-ms"
_PREFIX_LEN = len(_PREFIX)
# action -> the one method Triton accepts for it
_MODEL_ACTIONS = {
    "infer": "POST", "": "GET", "ready": "GET", "config": "GET", "stats": "GET",
    "generate": "POST",
}


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
                 traffic: TrafficManager) -> None:
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
        try:
            if path.startswith(_PREFIX) and path != "/v2/models/stats":
                await self._model_call(scope, receive, send, path)
            else:
                await self.control(scope, receive, send)
        except ClientGone:
            pass
        except Exception as exc:
            status, headers, body = error_response(exc)
            self.metrics.rejected.labels("", "http", str(status)).inc()
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
        try:
            route = self.proxy.route(model, version)
            if action == "stats":
                await self.control.model_stats(send, route)
                return
            body = await read_body(scope, receive, route.max_body_bytes)
            headers: Headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
            if route.split is not None:
                await self._split_call(scope, send, route, action, headers, body, start)
                return
            target = path.encode()
            if scope["query_string"]:
                target += b"?" + scope["query_string"]
            cold = ColdWait(lambda: request_budget(scope, body))
            response, ep = await self.proxy.forward(
                route, method.encode(), target, headers, body, cold)
        except ClientGone:
            raise
        except Exception as exc:
            status, err_headers, err_body = error_response(exc)
            label = "<unknown>" if isinstance(exc, UnknownModel) else model  # bounded labels
            self.metrics.observe(label, getattr(exc, "endpoint", ""), "http", status,
                                 time.perf_counter() - start)
            await respond(send, status, err_headers, err_body)
            return
        _mark_cold_wait(response, cold)
        await respond(send, response.status, response.headers, response.body)
        self.metrics.observe(model, ep.address, "http", response.status,
                             time.perf_counter() - start)

    async def _split_call(self, scope: Scope, send: Any, route: Route, action: str,
                          headers: Headers, body: bytes, start: float) -> None:
        """A call to a split model: the chosen variant answers, a shadow may get a copy."""
        def get(name: str) -> str | None:
            raw = header(scope, name.encode())
            return raw.decode("latin-1") if raw is not None else None

        if action in ("infer", "generate"):
            decision = self.traffic.decide(route, get)
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
                                                       headers, body)
                return response

            mirror = self.traffic.mirror.start(route.model, shadow.variant.name,
                                               shadow.max_concurrency, send_shadow)
        variant = decision.variant
        cold = ColdWait(lambda: request_budget(scope, body))
        try:
            response, ep = await self.proxy.forward(
                target, method, model_path(target.model, target.version, action), headers, body,
                cold)
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
