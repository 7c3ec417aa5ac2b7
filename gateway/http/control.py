"""REST endpoints the gateway answers itself (off the hot path).

- ``GET /v2/health/live``, ``GET /v2/health/ready`` (ready: config loaded, not draining;
  a pool scaled to zero does not make the gateway unready)
- ``GET /v2``: server metadata (the extensions the gateway passes through)
- ``POST /v2/repository/index``: models from the routing table, READY when their pool has an
  admitted endpoint; optional body ``{"ready": true}`` keeps only ready ones
- ``GET /v2/models/stats`` and ``/v2/models/{m}[/versions/{v}]/stats``: merged over endpoints
- ``GET /metrics``: Prometheus text format (with ``--workers N``, the whole pod's:
  :mod:`gateway.workers.podmetrics`)
- ``GET /openapi.json``: the OpenAPI 3 description of this REST surface
  (``gateway/http/openapi.yaml``, read once when the gateway starts)
- ``POST /v2/repository/models/{m}/load|unload``: refused (501); model control belongs to the
  Triton pools, not to a gateway that fronts many of them
- ``/admin/...``: the token-protected admin API (:mod:`gateway.http.admin`)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from importlib import resources
from typing import Any

import yaml

from gateway import __version__
from gateway.adapters.upstream import Upstream
from gateway.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    Unsupported,
    UpstreamError,
)
from gateway.http.asgi import Scope, read_body, respond, respond_json
from gateway.metrics import GatewayMetrics
from gateway.names import EXTENSIONS
from gateway.pipeline.pools import Endpoint
from gateway.pipeline.runtime import Runtime
from gateway.stats import merge_model_stats
from router import Route

_INDEX_BODY_LIMIT = 64 * 1024


class Control:
    def __init__(self, runtime: Runtime, upstream: Upstream, metrics: GatewayMetrics,
                 is_ready: Callable[[], bool],
                 admin: Callable[[Scope, Any, Any], Awaitable[None]] | None = None,
                 pod_metrics: Callable[[], Awaitable[bytes]] | None = None) -> None:
        self.runtime = runtime
        self.upstream = upstream
        self.metrics = metrics
        self.is_ready = is_ready
        self.admin = admin  # the admin API (an ASGI app) under /admin/
        # In a worker of ``--workers N``: renders the whole pod's metrics, not this process's.
        self.pod_metrics = pod_metrics
        self._routes: dict[str, tuple[str, Callable[[Scope, Any, Any], Any]]] = {
            "/v2/health/live": ("GET", self._live),
            "/v2/health/ready": ("GET", self._ready),
            "/v2": ("GET", self._server_metadata),
            "/v2/repository/index": ("POST", self._index),
            "/v2/models/stats": ("GET", self._all_stats),
            "/metrics": ("GET", self._metrics),
            "/openapi.json": ("GET", self._openapi),
        }
        self._openapi_doc = load_openapi()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope["path"]
        if path.startswith("/admin/") and self.admin is not None:
            await self.admin(scope, receive, send)
            return
        entry = self._routes.get(path)
        if entry is None:
            if path.startswith("/v2/repository/models/") and path.endswith(("/load", "/unload")):
                raise Unsupported(
                    "model load/unload is not available through servegate: "
                    "manage models on the Triton pools")
            raise NotFound(f"Not Found: {path}")
        method, handler = entry
        if scope["method"] != method and not (method == "GET" and scope["method"] == "HEAD"):
            raise MethodNotAllowed(method)
        await handler(scope, receive, send)

    async def _live(self, scope: Scope, receive: Any, send: Any) -> None:
        await respond(send, 200, [], b"")

    async def _ready(self, scope: Scope, receive: Any, send: Any) -> None:
        if self.is_ready():
            await respond(send, 200, [], b"")
        else:
            await respond_json(send, 400, {"error": "gateway is not ready"})

    async def _server_metadata(self, scope: Scope, receive: Any, send: Any) -> None:
        await respond_json(send, 200, {
            "name": "servegate", "version": __version__, "extensions": EXTENSIONS})

    async def _index(self, scope: Scope, receive: Any, send: Any) -> None:
        body = await read_body(scope, receive, _INDEX_BODY_LIMIT)
        ready_only = False
        if body.strip():
            try:
                doc = json.loads(body)
            except ValueError as exc:
                raise BadRequest(f"failed to parse the request JSON: {exc}") from None
            if not isinstance(doc, dict):
                raise BadRequest("expected a JSON object")
            ready_only = bool(doc.get("ready", False))
        await respond_json(send, 200, self.runtime.model_index(
            ready_only, scope.get("servegate.tenant")))

    async def _openapi(self, scope: Scope, receive: Any, send: Any) -> None:
        await respond(send, 200, [(b"content-type", b"application/json")], self._openapi_doc)

    async def _metrics(self, scope: Scope, receive: Any, send: Any) -> None:
        body = self.metrics.render() if self.pod_metrics is None else await self.pod_metrics()
        await respond(send, 200, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
                      body)

    async def _all_stats(self, scope: Scope, receive: Any, send: Any) -> None:
        state = self.runtime.state
        endpoints = [e for p in state.pools.values() for e in p.endpoints]
        await self._stats(send, "/v2/models/stats", endpoints, 5.0)

    async def model_stats(self, send: Any, route: Route) -> None:
        pool = self.runtime.state.pools[route.pool]
        path = f"/v2/models/{route.model}"
        if route.version:
            path += f"/versions/{route.version}"
        await self._stats(send, path + "/stats", pool.endpoints, pool.config.timeouts.read_s)

    async def _stats(self, send: Any, path: str, endpoints: Iterable[Endpoint],
                     timeout: float) -> None:
        unique = {e.address: e for e in endpoints if e.admitted}
        if not unique:
            await respond_json(send, 503, {"error": "no healthy endpoint to read statistics from"})
            return
        results = await asyncio.gather(
            *(self.upstream.request(e.host, e.port, b"GET", path.encode(), [], b"", 1.0, timeout)
              for e in unique.values()),
            return_exceptions=True)
        docs: list[dict[str, Any]] = []
        first_error: tuple[int, bytes] | None = None
        for result in results:
            if isinstance(result, UpstreamError):
                continue
            if isinstance(result, BaseException):
                raise result
            if result.status != 200:
                first_error = first_error or (result.status, result.body)
                continue
            try:
                docs.append(json.loads(result.body))
            except ValueError:
                continue
        if not docs:
            if first_error is not None:
                await respond(send, first_error[0], [(b"content-type", b"application/json")],
                              first_error[1])
            else:
                await respond_json(send, 503, {"error": "no endpoint answered the statistics call"})
            return
        await respond_json(send, 200, merge_model_stats(docs))


def load_openapi() -> bytes:
    """The packaged OpenAPI document (YAML, anchors expanded) as compact JSON bytes."""
    text = (resources.files("gateway") / "http" / "openapi.yaml").read_text(encoding="utf-8")
    return json.dumps(yaml.safe_load(text), separators=(",", ":")).encode()
