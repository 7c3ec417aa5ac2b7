"""The ``autoscaling`` section of the servegate config (optional; read by the autoscaler).

Where it sits: part of the one YAML file (:mod:`contracts.config` validates it with the rest);
the autoscaler turns each pool's section into its policy spec. Units are in the key names;
defaults are servegate's policy defaults (see the autoscaler's ``policy/decide.py``)::

    autoscaling:
      signals:
        gateways: ["http://gateway-0:8000", "http://gateway-1:8000"]  # scrape /metrics, or
        redis_url: "redis://redis:6379/0"        # read the replicas' published counters
        dcgm_url: "http://dcgm-exporter:9400/metrics"                 # GPU utilization, or
        prometheus: {url: "http://prometheus:9090",
                     query: 'avg(DCGM_FI_DEV_GPU_UTIL{pod=~"triton-.*"}) / 100'}
        stale_after_s: 10
        p99_window_s: 10
      pools:
        cpu:
          min_replicas: 0
          max_replicas: 8
          targets: {rate_per_replica: 120, queue_per_replica: 600}
          # per_gpu: true in targets: they are per whole GPU, scaled by the pool's
          # cost.gpus_per_replica (a mig-1g.10gb replica gets 1/7 of each)
          p99_slo_s: 0.5
          scale_to_zero_grace_s: 30
          schedules:
            - {days: "mon-fri", start: "08:00", end: "18:00", timezone: "Europe/Berlin",
               min_replicas: 2}
          # what each actuator acts on (only the one the autoscaler runs with is read):
          kubernetes: {deployment: triton-cpu, namespace: serving}  # scale subresource
          keda: {metric_target: 100}           # GetMetrics reports desired x metric_target
          local: {models: [classifier], args: ["--classifier-delay-ms", "5"]}  # demo/tests
          activation_hold_s: 120  # an activation counts as demand until a replica is ready
      controller: {tick_s: 1, history: 50}
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.schedule import parse_clock, parse_days, zone

PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RateLimitConfig(_Frozen):
    """At most ``pods`` or ``percent`` (the more permissive) per ``period_s`` (HPA policies)."""

    period_s: PositiveFloat
    pods: int | None = Field(default=None, ge=1)
    percent: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _some(self) -> RateLimitConfig:
        if self.pods is None and self.percent is None:
            raise ValueError("set 'pods', 'percent' or both")
        return self


class ScheduleConfig(_Frozen):
    """A weekly window with a minimum: ``days`` like "mon-fri" or "*", local ``HH:MM``."""

    days: str = "*"
    start: str
    end: str
    timezone: str = "UTC"
    min_replicas: int = Field(ge=0)
    name: str = ""

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        parse_days(value)
        return value

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        parse_clock(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value


class TargetsConfig(_Frozen):
    """Per-signal targets; unset signals are not used (see ``autoscaler.policy.Targets``)."""

    concurrency_per_replica: PositiveFloat | None = None
    rate_per_replica: PositiveFloat | None = None
    queue_per_replica: PositiveFloat | None = None
    gpu_utilization: Fraction | None = None
    queue_time_s: PositiveFloat | None = None
    batch_fill: Fraction | None = None
    # The three capacity targets above are per whole GPU: a replica holding a fraction of one
    # (pools.<pool>.cost: MIG slice, time-sliced share) gets that fraction of each.
    per_gpu: bool = False


class LocalReplicaConfig(_Frozen):
    """How the local actuator runs one replica of a pool: a Triton worker process.

    The worker is ``python -m <module> --http-port H --grpc-port G --metrics-port M
    --models a,b <args...>``; it must print ``ready_line`` once it serves, and stop its
    Triton on SIGTERM (``servegate.local.triton_worker`` does both).
    """

    module: str = "servegate.local.triton_worker"
    models: list[str] = Field(default_factory=lambda: ["classifier", "embedder", "identity"],
                              min_length=1)
    args: list[str] = Field(default_factory=list)
    ready_line: str = "SERVEGATE_TRITON_READY"
    start_timeout_s: PositiveFloat = 120.0
    stop_timeout_s: PositiveFloat = 20.0
    start_attempts: int = Field(default=2, ge=1)
    # A stopping replica leaves the endpoint list this long before it is sent SIGTERM.
    drain_s: float = Field(default=0.5, ge=0)


class KubernetesTargetConfig(_Frozen):
    """The Deployment a pool scales through ``apps/v1 deployments/{name}/scale``."""

    deployment: str | None = None  # default: the pool's name
    namespace: str | None = None  # default: the autoscaler's --namespace


class KedaTargetConfig(_Frozen):
    """The KEDA external scaler's metric: ``desired x metric_target`` against a target of
    ``metric_target`` (AverageValue), so KEDA's HPA lands on servegate's count."""

    metric_target: float = Field(default=100.0, ge=1)


class PoolAutoscalingConfig(_Frozen):
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int = Field(default=10, ge=1)
    targets: TargetsConfig = TargetsConfig()
    p99_slo_s: PositiveFloat | None = None
    max_slo_boost: float = Field(default=2.0, ge=1)
    tolerance: float = Field(default=0.1, ge=0, lt=1)
    stable_window_s: PositiveFloat = 30.0
    panic_window_s: PositiveFloat = 3.0
    panic_threshold: float = Field(default=2.0, gt=1)
    scale_up: RateLimitConfig | None = RateLimitConfig(period_s=1.0, pods=4, percent=900.0)
    scale_down: RateLimitConfig | None = RateLimitConfig(period_s=10.0, percent=50.0)
    scale_down_stabilization_s: float = Field(default=30.0, ge=0)
    max_scale_down_stabilization_s: float = Field(default=300.0, ge=0)
    scale_to_zero_grace_s: float = Field(default=30.0, ge=0)
    schedules: list[ScheduleConfig] = Field(default_factory=list)
    activation_hold_s: PositiveFloat = 120.0
    local: LocalReplicaConfig = LocalReplicaConfig()
    kubernetes: KubernetesTargetConfig = KubernetesTargetConfig()
    keda: KedaTargetConfig = KedaTargetConfig()

    @model_validator(mode="after")
    def _consistent(self) -> PoolAutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas "
                             f"{self.max_replicas}")
        if self.panic_window_s > self.stable_window_s:
            raise ValueError("panic_window_s must not exceed stable_window_s")
        if self.scale_down_stabilization_s > self.max_scale_down_stabilization_s:
            raise ValueError("scale_down_stabilization_s must not exceed "
                             "max_scale_down_stabilization_s")
        if not any(v is not None for v in self.targets.model_dump(exclude={"per_gpu"}).values()):
            raise ValueError("set at least one target under 'targets'")
        over = [s.min_replicas for s in self.schedules if s.min_replicas > self.max_replicas]
        if over:
            raise ValueError(f"schedule min_replicas {over} above max_replicas "
                             f"{self.max_replicas}")
        return self


class PrometheusQueryConfig(_Frozen):
    url: str
    query: str  # must evaluate to GPU utilization in 0..1 (a vector is averaged)


class SignalsConfig(_Frozen):
    gateways: list[str] = Field(default_factory=list)  # gateway base URLs (scrape /metrics)
    redis_url: str | None = None  # or: read the replicas' published counters
    redis_prefix: str = "servegate:gwstats:"
    dcgm_url: str | None = None
    prometheus: PrometheusQueryConfig | None = None
    nvml: bool = False  # local GPUs through nvidia-ml-py (demo, single host)
    scrape_interval_s: PositiveFloat = 1.0
    scrape_timeout_s: PositiveFloat = 1.0
    stale_after_s: PositiveFloat = 10.0
    p99_window_s: PositiveFloat = 10.0


class ControllerConfig(_Frozen):
    """The control loop: how often each pool is decided, how many decisions /status keeps."""

    tick_s: PositiveFloat = 1.0
    history: int = Field(default=50, ge=1, le=10_000)


class AutoscalingConfig(_Frozen):
    signals: SignalsConfig = SignalsConfig()
    controller: ControllerConfig = ControllerConfig()
    pools: dict[str, PoolAutoscalingConfig] = Field(default_factory=dict)
