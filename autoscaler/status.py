"""The autoscaler's small HTTP server (aiohttp.web): status, metrics, activation, endpoints.

Where it sits: beside the control loop, off any data path. Its routes (the contract the
gateway and operators rely on):

``GET /status[?history=N]``
    200 JSON ``{"leader": bool, "actuator": str, "pools": {pool: {"current", "ready",
    "desired", "reason", "dominant", "activations", "errors", "decisions": [...]}}}``,
    ``decisions`` oldest first (see :class:`autoscaler.loop.DecisionRecord`).
``GET /metrics``
    Prometheus text (:mod:`autoscaler.metrics`).
``POST /activate`` with JSON ``{"pool": "<name>"}``
    202 ``{"pool": p, "activated": true}`` once the pool's loop is woken (decision and
    actuator call follow within milliseconds); 400 for a body that is not that object, 404 for
    an unknown pool.
``GET /pools/{pool}/endpoints[?version=N&wait_s=S]`` (local actuator only)
    200 ``{"pool": p, "version": n, "endpoints": [{"http": "127.0.0.1:P", "grpc": ...,
    "metrics": ...}]}`` - the READY replicas. With ``version`` equal to the current one the
    answer waits until the list changes or ``wait_s`` (default 0, at most 60) passes, then
    answers the same shape. 404 for an unknown pool, or when the actuator is not ``local``.
``GET /healthz``
    200 ``ok``.

Errors are JSON ``{"error": "..."}`` with the status chosen in :func:`_error` only.
"""

from __future__ import annotations

import json
import logging
from types import TracebackType
from typing import Any, Protocol

from aiohttp import web

from autoscaler.loop import Controller
from autoscaler.metrics import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

MAX_WAIT_S = 60.0


class EndpointSource(Protocol):
    """What the local actuator offers for ``GET /pools/{pool}/endpoints``."""

    async def wait_endpoints(self, pool: str, version: int | None,
                             wait_s: float) -> tuple[int, list[Any]]: ...


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def create_app(controller: Controller, actuator_name: str,
               endpoints: EndpointSource | None = None) -> web.Application:
    """The status app for ``controller``; ``endpoints`` given only for the local actuator."""

    async def status(request: web.Request) -> web.Response:
        try:
            history = int(request.query.get("history", "0")) or None
        except ValueError:
            return _error(400, "history must be an integer")
        doc = controller.status(history)
        doc["actuator"] = actuator_name
        return web.json_response(doc)

    async def metrics(request: web.Request) -> web.Response:
        body = controller.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def activate(request: web.Request) -> web.Response:
        try:
            doc = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return _error(400, 'expected a JSON body {"pool": "<name>"}')
        pool = doc.get("pool") if isinstance(doc, dict) else None
        if not isinstance(pool, str) or not pool:
            return _error(400, 'expected a JSON body {"pool": "<name>"}')
        if not controller.activate(pool, "http"):
            return _error(404, f"unknown pool {pool!r}")
        return web.json_response({"pool": pool, "activated": True}, status=202)

    async def pool_endpoints(request: web.Request) -> web.Response:
        pool = request.match_info["pool"]
        if endpoints is None:
            return _error(404, f"endpoints are served only by the local actuator, "
                               f"not {actuator_name!r}")
        if pool not in controller.pools:
            return _error(404, f"unknown pool {pool!r}")
        try:
            version = int(request.query["version"]) if "version" in request.query else None
            wait_s = min(max(float(request.query.get("wait_s", "0")), 0.0), MAX_WAIT_S)
        except ValueError:
            return _error(400, "version must be an integer and wait_s a number")
        current, eps = await endpoints.wait_endpoints(pool, version, wait_s)
        return web.json_response({"pool": pool, "version": current,
                                  "endpoints": [e.as_dict() for e in eps]})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/activate", activate)
    app.router.add_get("/pools/{pool}/endpoints", pool_endpoints)
    app.router.add_get("/healthz", healthz)
    return app


class StatusServer:
    """Serves an app on ``host:port`` while in ``async with``; ``port`` 0 picks a free one."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def __aenter__(self) -> StatusServer:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, shutdown_timeout=1.0)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._runner.cleanup()
