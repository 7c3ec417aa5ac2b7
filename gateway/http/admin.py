"""The admin API (off the hot path): read routes, set weights, pin/drain, drive rollouts.

Where it sits: mounted under ``/admin`` on the REST port by :mod:`gateway.http.control`.
Every call needs the admin token (``Authorization: Bearer <token>`` or
``x-servegate-admin-token``), compared in constant time: no token is a 401, a wrong one a 403.
Without a configured token the admin API answers 403 to everything. Errors use the same V2
error JSON and status map as the data plane (:mod:`gateway.http.errors`).

    GET  /admin/routes                              routes, splits, weights, rollouts
    PUT  /admin/models/{m}/weights   {"weights": {"canary": 20}}
    POST /admin/models/{m}/pin       {"variant": "canary"}     all traffic to one variant
    POST /admin/models/{m}/drain     {"variant": "canary"}     weight 0 for one variant
    POST /admin/models/{m}/rollout   {"canary": "canary", "steps": [5, 25, 100], ...}
    GET  /admin/models/{m}/rollout
    POST /admin/models/{m}/rollout/abort | /rollout/promote
    GET  /admin/cost?window=1h                      cost per pool, model and tenant (JSON)
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from gateway.errors import BadRequest, Forbidden, GatewayError, Unauthorized, Unsupported
from gateway.http.errors import error_response
from gateway.pipeline.cost import MAX_WINDOW_S, CostMeter
from gateway.traffic.manager import TrafficManager
from gateway.traffic.rollouts import rollout_spec
from router import RouterError
from router.cost import parse_window


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WeightsBody(_Body):
    weights: dict[str, float]


class VariantBody(_Body):
    variant: str


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-servegate-admin-token")


def create_admin_app(traffic: TrafficManager, token: str | None,
                     cost: CostMeter | None = None) -> FastAPI:
    app = FastAPI(title="servegate admin", openapi_url="/admin/openapi.json", docs_url=None,
                  redoc_url=None)
    expected = token.encode() if token else None

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Response:
        sent = _token(request)
        try:
            if sent is None:
                raise Unauthorized("admin token required (Authorization: Bearer <token>)")
            if expected is None:
                raise Forbidden("the admin API is disabled: no admin token is configured")
            if not hmac.compare_digest(sent.encode(), expected):
                raise Forbidden("invalid admin token")
        except GatewayError as exc:
            return _error(exc)
        response: Response = await call_next(request)
        return response

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        return _error(exc)

    @app.exception_handler(RouterError)
    async def router_error(request: Request, exc: RouterError) -> Response:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=400)

    @app.get("/admin/routes")
    async def routes() -> list[dict[str, Any]]:
        return traffic.routes()

    @app.put("/admin/models/{model}/weights")
    async def set_weights(model: str, body: WeightsBody) -> dict[str, Any]:
        return {"model": model, "weights": await traffic.set_weights(model, body.weights)}

    @app.post("/admin/models/{model}/pin")
    async def pin(model: str, body: VariantBody) -> dict[str, Any]:
        return {"model": model, "weights": await traffic.pin(model, body.variant)}

    @app.post("/admin/models/{model}/drain")
    async def drain(model: str, body: VariantBody) -> dict[str, Any]:
        return {"model": model, "weights": await traffic.drain(model, body.variant)}

    @app.post("/admin/models/{model}/rollout")
    async def start_rollout(model: str, body: dict[str, Any]) -> dict[str, Any]:
        canary = body.get("canary")
        if not isinstance(canary, str):
            raise BadRequest("'canary' (the variant to roll out) is required")
        baseline = body.get("baseline")
        return await traffic.start_rollout(
            model, canary, baseline if isinstance(baseline, str) else None, rollout_spec(body))

    @app.get("/admin/models/{model}/rollout")
    async def get_rollout(model: str) -> dict[str, Any]:
        return traffic.rollout_doc(model)

    @app.post("/admin/models/{model}/rollout/abort")
    async def abort(model: str) -> dict[str, Any]:
        return await traffic.stop_rollout(model, "abort")

    @app.post("/admin/models/{model}/rollout/promote")
    async def promote(model: str) -> dict[str, Any]:
        return await traffic.stop_rollout(model, "promote")

    @app.get("/admin/cost")
    async def cost_report(window: str = "1h") -> dict[str, Any]:
        """Requests, GPU-seconds, dollars, cost per 1,000 inferences and idle share per
        (pool, model, tenant) over the last ``window`` (s, m, h, d; at most 1d), to the
        minute (the current minute counts in full)."""
        if cost is None:
            raise Unsupported("cost accounting is not running in this process")
        try:
            seconds = parse_window(window, MAX_WINDOW_S)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return cost.report(seconds, window)

    return app


def _error(exc: BaseException) -> Response:
    status, headers, body = error_response(exc)
    return Response(body, status_code=status,
                    headers={k.decode(): v.decode() for k, v in headers})
