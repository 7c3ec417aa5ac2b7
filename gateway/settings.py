"""Process settings of the gateway, built once from the command line and passed in.

The routing config (pools, models) is the YAML file; these are the knobs of the process itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001  # 0: no gRPC front door
    log_level: str = "info"
    # SIGTERM: seconds to finish in-flight requests (REST and gRPC) and cold-start waits once
    # the listeners are closed; requests still held for a cold start get 503 just before.
    graceful_shutdown_s: float = 30.0
    # SIGTERM: seconds to keep serving with readiness false before closing the listeners, so
    # Kubernetes can take the pod out of its Service endpoints first.
    shutdown_delay_s: float = 0.0


@dataclass(frozen=True)
class TracingSettings:
    """OpenTelemetry spans of the gateway's phases (:mod:`gateway.tracing`); off unless
    ``enabled``, and only then is the ``tracing`` extra (the OpenTelemetry SDK) needed."""

    enabled: bool = False
    # The OTLP/gRPC collector, e.g. http://otel-collector:4317 (http: plaintext); None leaves
    # it to the exporter ($OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, $OTEL_EXPORTER_OTLP_ENDPOINT,
    # else localhost:4317), as it does the other OTEL_EXPORTER_OTLP_* and OTEL_BSP_* variables.
    otlp_endpoint: str | None = None
    # The share of requests traced when the caller sends no traceparent; with one, its sampled
    # flag decides.
    sample_ratio: float = 1.0
    service_name: str = "servegate-gateway"

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise ValueError(f"sample_ratio must be within [0, 1], not {self.sample_ratio}")


@dataclass(frozen=True)
class WorkerSlot:
    """Set in each worker process of ``--workers N`` (N > 1) by the supervising parent."""

    index: int  # 0 .. count-1
    count: int
    # The parent's private directory: worker-<i>.sock serves worker i's own metrics.
    sockets_dir: Path


@dataclass(frozen=True)
class GatewaySettings:
    config_path: Path
    server: ServerSettings = ServerSettings()
    watch: bool = False
    watch_interval_s: float = 1.0
    probe_tick_s: float = 0.05
    # The autoscaler's status server, told at once when a pool at zero gets a request.
    autoscaler_url: str | None = None
    # Shared traffic state (split weights, rollouts) across replicas; None keeps it in memory.
    redis_url: str | None = None
    # This replica's name in the shared state (defaults to host:pid).
    replica_id: str = ""
    # The admin API's token; None disables the admin API (every call gets 403).
    admin_token: str | None = None
    # API keys (tenant -> key hashes) when the config turns auth on; None: $SERVEGATE_API_KEYS.
    api_keys_file: Path | None = None
    # Rollout driver tick and shared-state resync period.
    traffic_tick_s: float = 2.0
    resync_s: float = 1.0
    tracing: TracingSettings = TracingSettings()
    # Gateway processes serving the same ports (SO_REUSEPORT) under a supervising parent; 1:
    # this process serves, as before (gateway/workers/).
    workers: int = 1
    # In a worker process only: which one it is (None in a gateway of one process).
    worker: WorkerSlot | None = None
