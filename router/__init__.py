"""Pure routing decisions: config schema, route table, endpoint choice, endpoint health.

Imports no I/O library (asyncio, aiohttp, httpx, grpc, redis, kubernetes) and never reads the
clock; the gateway and the autoscaler both build on it.
"""

from router.balance import EndpointView, pick_endpoint
from router.config import (
    ColdStartConfig,
    Config,
    DiscoveryConfig,
    EndpointConfig,
    HealthConfig,
    LimitsConfig,
    ModelRouteConfig,
    PoolConfig,
    TimeoutConfig,
    is_version,
    parse_config,
    split_hostport,
)
from router.errors import ConfigError, NoEndpoint, RouteError, RouterError, UnknownModel
from router.health import ADMITTED, Health, record_failure, record_probe, record_success
from router.table import Route, RouteTable

__all__ = [
    "ADMITTED",
    "ColdStartConfig",
    "Config",
    "ConfigError",
    "DiscoveryConfig",
    "EndpointConfig",
    "EndpointView",
    "Health",
    "HealthConfig",
    "LimitsConfig",
    "ModelRouteConfig",
    "NoEndpoint",
    "PoolConfig",
    "Route",
    "RouteError",
    "RouteTable",
    "RouterError",
    "TimeoutConfig",
    "UnknownModel",
    "is_version",
    "parse_config",
    "pick_endpoint",
    "record_failure",
    "record_probe",
    "record_success",
    "split_hostport",
]
