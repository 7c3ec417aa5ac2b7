"""What the gateway and the autoscaler share: the config schema (one YAML file, validated
once), the Redis counter schema, the gateway's metric names and the schedule syntax.

Pure data and parsing: imports no I/O library, never reads the clock, and imports nothing
from ``router``, ``gateway`` or ``autoscaler``; all of them build on it.
"""

from contracts.config import (
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
from contracts.errors import ConfigError, ContractError

__all__ = [
    "ColdStartConfig",
    "Config",
    "ConfigError",
    "ContractError",
    "DiscoveryConfig",
    "EndpointConfig",
    "HealthConfig",
    "LimitsConfig",
    "ModelRouteConfig",
    "PoolConfig",
    "TimeoutConfig",
    "is_version",
    "parse_config",
    "split_hostport",
]
