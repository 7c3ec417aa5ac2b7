"""Pure routing decisions: route table, traffic splits, endpoint choice, endpoint health,
rollout verdicts and admission rules.

Imports no I/O library (asyncio, aiohttp, httpx, grpc, redis, kubernetes) and never reads the
clock; it reads the config schema from :mod:`contracts`. The gateway and the autoscaler both
build on it.
"""

from router.balance import EndpointView, pick_endpoint
from router.errors import NoEndpoint, RouteError, RouterError, UnknownModel
from router.health import ADMITTED, Health, record_failure, record_probe, record_success
from router.table import Route, RouteTable

__all__ = [
    "ADMITTED",
    "EndpointView",
    "Health",
    "NoEndpoint",
    "Route",
    "RouteError",
    "RouteTable",
    "RouterError",
    "UnknownModel",
    "pick_endpoint",
    "record_failure",
    "record_probe",
    "record_success",
]
