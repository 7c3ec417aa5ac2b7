"""The config schema shared by the gateway and the autoscaler (one YAML file, validated once).

Where it sits: ``gateway.config`` reads the YAML file and hands the parsed mapping to
:func:`parse_config`; the result is an immutable :class:`Config` from which the gateway builds
its :class:`router.table.RouteTable`. Errors name the file, the key path and the problem.

    pools:                          # named sets of Triton endpoints
      cpu:
        endpoints:
          - "127.0.0.1:8000"        # shorthand for {http: "127.0.0.1:8000"}
          - {http: "10.0.0.7:8000", grpc: "10.0.0.7:8001", metrics: "10.0.0.7:8002"}
        timeouts: {connect_s: 1, read_s: 30}
        health: {probe_interval_s: 2, eject_after_failures: 3}
        cost: {capacity: spot, price_per_gpu_hour: 4.1, spot_price_per_gpu_hour: 1.3}
        fallback_pool: ondemand     # takes the requests while this pool has no endpoint
      zoo:                          # a model-managed pool: Triton in explicit model-control mode
        endpoints: ["10.0.0.9:8000"]
        model_control: explicit     # the gateway loads models on demand, places and evicts them
        capacity: {models: 4}       # per endpoint (and/or memory_bytes + model_bytes)
        residency: {idle_grace_s: 300, min_residency_s: 30}
    models:                         # which pool serves each model; many models share a pool
      classifier:
        pool: cpu
        versions: {"2": {pool: gpu}}   # optional per-version pool override
        timeouts: {read_s: 5}          # optional per-model override
    limits: {max_body_bytes: 67108864}
    autoscaling: {...}              # optional, read by the autoscaler: see contracts/autoscaling.py
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contracts.autoscaling import AutoscalingConfig
from contracts.cost import AccountingConfig, CostConfig
from contracts.errors import ConfigError
from contracts.tenancy import AuthConfig, PrioritiesConfig, Priority, SheddingConfig, TenantConfig

_HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

PositiveFloat = Annotated[float, Field(gt=0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_VERSION = re.compile(r"^[1-9][0-9]{0,18}$")


def is_version(value: str) -> bool:
    """A Triton model version: a positive decimal integer (ASCII digits, no sign, no zero)."""
    return _VERSION.match(value) is not None


def split_hostport(value: str) -> tuple[str, int]:
    """``"host:port"`` -> ``("host", port)``; brackets are stripped from IPv6 literals."""
    m = _HOSTPORT.match(value)
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise ValueError(f"expected 'host:port', got {value!r}")
    return m.group(1).strip("[]"), int(m.group(2))


class EndpointConfig(_Frozen):
    """One Triton server: its HTTP address, and optionally its gRPC and metrics addresses."""

    http: str
    grpc: str | None = None
    metrics: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"http": value} if isinstance(value, str) else value

    @field_validator("http", "grpc", "metrics")
    @classmethod
    def _hostport(cls, value: str | None) -> str | None:
        if value is not None:
            split_hostport(value)
        return value


class TimeoutConfig(_Frozen):
    """Per-phase upstream deadlines in seconds (connect, then the whole response)."""

    connect_s: PositiveFloat = 1.0
    read_s: PositiveFloat = 60.0


class TimeoutOverride(_Frozen):
    connect_s: PositiveFloat | None = None
    read_s: PositiveFloat | None = None

    def apply(self, base: TimeoutConfig) -> TimeoutConfig:
        return TimeoutConfig(
            connect_s=self.connect_s or base.connect_s, read_s=self.read_s or base.read_s
        )


class HealthConfig(_Frozen):
    """Active probes of ``/v2/health/ready`` plus passive ejection after consecutive failures."""

    # Active probing can be turned off where something else (e.g. Kubernetes readiness feeding
    # EndpointSlices) already decides membership; passive ejection still applies.
    active_probes: bool = True
    probe_interval_s: PositiveFloat = 2.0
    probe_timeout_s: PositiveFloat = 1.0
    eject_after_failures: int = Field(default=3, ge=1)
    # An ejected endpoint is re-admitted by a successful probe no sooner than this. It is also
    # the first open interval of the circuit breaker: once it has passed, one real request is
    # let through as a trial (half-open); success re-admits, failure re-opens for twice as long.
    min_eject_s: float = Field(default=1.0, ge=0)
    # The longest open interval (never below min_eject_s); also how long a trial whose outcome
    # never arrived (e.g. a cancelled call) blocks the next one.
    max_eject_s: PositiveFloat = 30.0
    # Count HTTP 502/503/504 answers as failures toward ejection (the answer is still passed
    # back as it came). Off: only transport failures count.
    eject_on_5xx: bool = False


class DiscoveryConfig(_Frozen):
    """Where a pool's endpoints come from: the config (static), the autoscaler's local actuator
    (``url`` of its status server), or a Kubernetes Service's EndpointSlices."""

    type: Literal["static", "local", "kubernetes"] = "static"
    url: str | None = None
    service: str | None = None
    namespace: str = "default"
    http_port_name: str = "http"
    grpc_port_name: str = "grpc"

    @model_validator(mode="after")
    def _needs(self) -> DiscoveryConfig:
        if self.type == "local" and not self.url:
            raise ValueError("local discovery needs 'url' (the autoscaler's status server)")
        if self.type == "kubernetes" and not self.service:
            raise ValueError("kubernetes discovery needs 'service'")
        return self


class ColdStartConfig(_Frozen):
    """Holding requests while a pool has no ready endpoint (scale from zero)."""

    enabled: bool = False
    max_wait_s: PositiveFloat = 60.0
    max_queue: int = Field(default=1000, ge=0)
    # Readiness probes of a pool's endpoints while requests wait: short and fixed, no backoff.
    probe_interval_s: PositiveFloat = 0.1


class CapacityConfig(_Frozen):
    """What one endpoint of a model-managed pool holds at once: at most ``models`` models
    and/or models whose estimated sizes add up to at most ``memory_bytes`` (each model's
    estimate is ``model_sizes[name]``, else ``model_bytes``)."""

    models: int | None = Field(default=None, ge=1)
    memory_bytes: float | None = Field(default=None, gt=0)
    model_bytes: float | None = Field(default=None, gt=0)
    model_sizes: dict[str, PositiveFloat] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _some_limit(self) -> CapacityConfig:
        if self.models is None and self.memory_bytes is None:
            raise ValueError("set 'models' (models per endpoint) and/or 'memory_bytes'")
        if self.memory_bytes is not None and self.model_bytes is None:
            raise ValueError("'memory_bytes' needs 'model_bytes': the size estimate of a "
                             "model not listed in 'model_sizes'")
        return self

    def size_of(self, model: str) -> float:
        return self.model_sizes.get(model, self.model_bytes or 0.0)


class ResidencyConfig(_Frozen):
    """Load on demand, placement and eviction in a model-managed pool (all times in seconds).

    A model no endpoint holds is loaded on its first call (the call waits at most
    ``max_wait_s`` and its own deadline, ``max_queue`` calls per model); a model unused for
    ``idle_grace_s`` is unloaded; a model is never unloaded to make room before it has been
    resident ``min_residency_s`` (so two hot models cannot thrash one slot); a model gets one
    more endpoint per ``rate_per_replica`` requests/s (None: one endpoint per model).
    """

    idle_grace_s: PositiveFloat = 300.0
    min_residency_s: float = Field(default=30.0, ge=0)
    load_timeout_s: PositiveFloat = 120.0
    max_wait_s: PositiveFloat = 60.0
    max_queue: int = Field(default=1000, ge=0)
    rate_per_replica: PositiveFloat | None = None
    # After a failed load, calls are answered at once for this long (doubling per failure).
    retry_backoff_s: PositiveFloat = 1.0
    max_retry_backoff_s: PositiveFloat = 30.0
    # How often each endpoint's repository index is read (what it holds), and how often the
    # leader revisits placement.
    index_interval_s: PositiveFloat = 2.0
    tick_s: PositiveFloat = 1.0


class PoolConfig(_Frozen):
    endpoints: list[EndpointConfig] = Field(default_factory=list)
    timeouts: TimeoutConfig = TimeoutConfig()
    health: HealthConfig = HealthConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    cold_start: ColdStartConfig = ColdStartConfig()
    shedding: SheddingConfig = SheddingConfig()
    cost: CostConfig = CostConfig()  # GPUs per replica and prices (router/cost.py)
    # A pool serving the same models (typically on-demand) that takes this pool's requests
    # while this one has no endpoint to offer (e.g. its spot nodes were reclaimed); the
    # autoscaler surges it for the replicas this pool lost.
    fallback_pool: str | None = None
    # Also send a request to the fallback when the endpoint picked here already has this many
    # requests outstanding and the fallback has a less loaded one (a pool that lost some of its
    # replicas spills over onto the surged fallback). Unset: only when this pool has nothing.
    fallback_spill_at: int | None = Field(default=None, ge=1)
    # "explicit": the endpoints run Triton in explicit model-control mode and the gateway
    # loads, places and unloads this pool's models (router/residency.py); needs ``capacity``.
    model_control: Literal["none", "explicit"] = "none"
    capacity: CapacityConfig | None = None
    residency: ResidencyConfig = ResidencyConfig()

    @model_validator(mode="after")
    def _managed(self) -> PoolConfig:
        if self.model_control == "explicit" and self.capacity is None:
            raise ValueError("model_control: explicit needs 'capacity' (e.g. {models: 4}: "
                             "how many models one endpoint holds at once)")
        if self.model_control != "explicit":
            extra = [k for k in ("capacity", "residency") if k in self.model_fields_set]
            if extra:
                raise ValueError(f"{' and '.join(extra)} apply only to pools with "
                                 "model_control: explicit")
        return self

    @property
    def managed(self) -> bool:
        """The gateway decides which endpoint holds which model (explicit model control)."""
        return self.model_control == "explicit"

    @field_validator("endpoints")
    @classmethod
    def _unique(cls, value: list[EndpointConfig]) -> list[EndpointConfig]:
        seen = [e.http for e in value]
        dupes = sorted({h for h in seen if seen.count(h) > 1})
        if dupes:
            raise ValueError(f"duplicate endpoint(s): {', '.join(dupes)}")
        return value


class VersionRoute(_Frozen):
    pool: str


class VariantConfig(_Frozen):
    """One target of a split: a model (default: the split model) and/or version on a pool."""

    weight: float = Field(ge=0)
    model: str | None = None
    version: str | None = None
    pool: str | None = None  # default: the pool that serves model/version in this config

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and not is_version(value):
            raise ValueError(f"version must be a positive integer, got {value!r}")
        return value


class ShadowConfig(_Frozen):
    """Mirror ``percent`` of requests to ``variant``, off the client's path."""

    variant: str
    percent: float = Field(gt=0, le=100)
    max_concurrency: int = Field(default=8, ge=1)


class SplitConfig(_Frozen):
    """Traffic split of one model name across variants (canary, A/B, shadow)."""

    variants: dict[str, VariantConfig]
    # The variant a rollout compares against and falls back to (default: the first one).
    baseline: str | None = None
    # Header (REST) / metadata key (gRPC) whose value keeps a caller on one variant.
    sticky_header: str | None = None
    # Header that forces a variant by name; an unknown name is a 400.
    pin_header: str = "x-servegate-variant"
    shadow: ShadowConfig | None = None

    @field_validator("sticky_header", "pin_header")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if not self.variants:
            raise ValueError("a split needs at least one variant")
        bad = [v for v in self.variants if not _MODEL_NAME.match(v)]
        if bad:
            raise ValueError(f"variant names may only use letters, digits, '.', '_', '-': {bad}")
        for ref in (self.baseline, self.shadow.variant if self.shadow else None):
            if ref is not None and ref not in self.variants:
                raise ValueError(f"unknown variant {ref!r}; variants: {sorted(self.variants)}")
        serving = [n for n, v in self.variants.items()
                   if v.weight > 0 and not (self.shadow and n == self.shadow.variant)]
        if not serving:
            raise ValueError("at least one non-shadow variant needs a weight above 0")
        return self

    @property
    def baseline_name(self) -> str:
        return self.baseline or next(iter(self.variants))


class ModelRouteConfig(_Frozen):
    pool: str
    versions: dict[str, VersionRoute] = Field(default_factory=dict)
    split: SplitConfig | None = None
    timeouts: TimeoutOverride = TimeoutOverride()
    max_body_bytes: int | None = Field(default=None, gt=0)
    # Admission: the class of calls from tenants that set none, and a cap on the requests
    # this gateway replica has in flight for the model (429 past it).
    priority: Priority | None = None
    max_in_flight: int | None = Field(default=None, ge=1)

    @field_validator("versions", mode="before")
    @classmethod
    def _numeric_versions(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        keys = {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v
                for k, v in value.items()}
        bad = [k for k in keys if not (isinstance(k, str) and is_version(k))]
        if bad:
            raise ValueError(f"versions must be positive integers, got {bad}")
        return keys


class LimitsConfig(_Frozen):
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # A REST request (head and body) must arrive within this many seconds of its first byte,
    # else 408 and the connection is closed; read when the gateway starts.
    body_timeout_s: PositiveFloat = 30.0


class Config(_Frozen):
    pools: dict[str, PoolConfig]
    models: dict[str, ModelRouteConfig]
    limits: LimitsConfig = LimitsConfig()
    autoscaling: AutoscalingConfig | None = None  # read by the autoscaler only
    auth: AuthConfig | None = None  # API keys on the data plane (router/tenancy.py)
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    priorities: PrioritiesConfig = PrioritiesConfig()
    cost: AccountingConfig = AccountingConfig()

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, value: dict[str, TenantConfig]) -> dict[str, TenantConfig]:
        bad = sorted(t for t in value if t.startswith("_"))
        if bad:
            raise ValueError(f"tenant names starting with '_' are reserved for cost "
                             f"accounting (_idle, _shadow, _anonymous): {bad}")
        return value

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: dict[str, ModelRouteConfig]) -> dict[str, ModelRouteConfig]:
        bad = [m for m in value if not _MODEL_NAME.match(m) or m in (".", "..")]
        if bad:
            raise ValueError(f"model names may only use letters, digits, '.', '_', '-' "
                             f"(and are not '.' or '..'): {bad}")
        return value


def _cross_checks(cfg: Config) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for name, model in cfg.models.items():
        if model.pool not in cfg.pools:
            problems.append((f"models.{name}.pool", f"unknown pool {model.pool!r}"))
        for ver, route in model.versions.items():
            if route.pool not in cfg.pools:
                problems.append(
                    (f"models.{name}.versions.{ver}.pool", f"unknown pool {route.pool!r}")
                )
        if model.split is not None:
            for vname, var in model.split.variants.items():
                if var.pool is not None and var.pool not in cfg.pools:
                    problems.append((f"models.{name}.split.variants.{vname}.pool",
                                     f"unknown pool {var.pool!r}"))
                elif var.pool is None and variant_pool(cfg, name, var) is None:
                    problems.append((f"models.{name}.split.variants.{vname}",
                                     f"no pool serves model {var.model!r}; set 'pool'"))
    for name, pool in cfg.pools.items():
        problems += _fallback_problems(cfg, name, pool)
        problems += _capacity_problems(cfg, name, pool)
    if cfg.auth is not None and cfg.auth.enabled and not cfg.tenants:
        problems.append(("auth", "API keys are on but no tenants are configured"))
    if cfg.autoscaling is not None:
        problems += [(f"autoscaling.pools.{pool}", f"unknown pool {pool!r}")
                     for pool in cfg.autoscaling.pools if pool not in cfg.pools]
    return problems


def _fallback_problems(cfg: Config, name: str, pool: PoolConfig) -> list[tuple[str, str]]:
    fb = pool.fallback_pool
    if fb is None:
        if pool.fallback_spill_at is not None:
            return [(f"pools.{name}.fallback_spill_at", "needs a fallback_pool")]
        return []
    if fb not in cfg.pools:
        return [(f"pools.{name}.fallback_pool", f"unknown pool {fb!r}")]
    if fb == name:
        return [(f"pools.{name}.fallback_pool", "a pool cannot be its own fallback")]
    if cfg.pools[fb].fallback_pool is not None:
        return [(f"pools.{name}.fallback_pool",
                 f"pool {fb!r} has a fallback of its own (one hop only)")]
    return []


def _capacity_problems(cfg: Config, name: str, pool: PoolConfig) -> list[tuple[str, str]]:
    cap = pool.capacity
    if cap is None or cap.memory_bytes is None:
        return []
    too_big = sorted(m for m, r in cfg.models.items()
                     if r.pool == name and cap.size_of(m) > cap.memory_bytes)
    if too_big:
        return [(f"pools.{name}.capacity", f"model(s) larger than memory_bytes "
                                           f"({cap.memory_bytes:g}): {too_big}")]
    return []


def variant_pool(cfg: Config, model: str, var: VariantConfig) -> str | None:
    """The pool a variant's target is served from when the variant names none."""
    if var.pool is not None:
        return var.pool
    target = cfg.models.get(var.model or model)
    if target is None:
        return None
    if var.version is not None and var.version in target.versions:
        return target.versions[var.version].pool
    return target.pool


def parse_config(data: object, source: str = "<config>") -> Config:
    """Validate a parsed YAML/JSON document; raise :class:`ConfigError` listing every problem."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, [("", "expected a mapping with 'pools' and 'models'")])
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            source,
            [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()],
        ) from exc
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(source, problems)
    return cfg
