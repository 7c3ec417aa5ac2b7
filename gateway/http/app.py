"""The REST front door: a plain ASGI callable speaking the KServe V2 protocol as Triton does.

Where it sits: first hop of the request path (uvicorn -> here -> proxy -> upstream). Calls
under ``/v2/models/{m}[/versions/{v}]/...`` are forwarded as bytes to the model's pool
(infer, metadata, ready, config, generate); statistics are merged over the pool; health,
server metadata, ``/v2/repository/index`` and ``/metrics`` are answered by the gateway itself
(:mod:`gateway.http.control`). No framework and no JSON parsing on the infer path.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gateway.errors import BadRequest, MethodNotAllowed, NotFound
from gateway.http.asgi import ClientGone, Scope, read_body, respond
from gateway.http.control import Control
from gateway.http.errors import error_response
from gateway.metrics import GatewayMetrics
from gateway.proxy import Proxy
from gateway.upstream import HOP_BY_HOP, Headers
from router import UnknownModel, is_version

log = logging.getLogger("servegate.http")

_PREFIX = "/v2/models/"
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


class GatewayApp:
    def __init__(self, proxy: Proxy, metrics: GatewayMetrics, control: Control) -> None:
        self.proxy = proxy
        self.metrics = metrics
        self.control = control

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
            target = path.encode()
            if scope["query_string"]:
                target += b"?" + scope["query_string"]
            response, ep = await self.proxy.forward(
                route, method.encode(), target, headers, body)
        except ClientGone:
            raise
        except Exception as exc:
            status, err_headers, err_body = error_response(exc)
            label = "<unknown>" if isinstance(exc, UnknownModel) else model  # bounded labels
            self.metrics.observe(label, getattr(exc, "endpoint", ""), "http", status,
                                 time.perf_counter() - start)
            await respond(send, status, err_headers, err_body)
            return
        await respond(send, response.status, response.headers, response.body)
        self.metrics.observe(model, ep.address, "http", response.status,
                             time.perf_counter() - start)


async def _lifespan(receive: Any, send: Any) -> None:
    """Resources are owned by the server runner; lifespan events are acknowledged only."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
