"""Tenancy and admission as pure data and decisions: who may call what, and when to say no.

Where it sits: the config's ``auth``, ``tenants`` and ``priorities`` sections, the per-model
``priority``/``max_in_flight`` and the per-pool ``shedding`` knobs are parsed here (as part of
:class:`router.config.Config`); the gateway's admission step (``gateway.admission``) calls the
functions below with counts it keeps, before a request is read or sent upstream. Nothing here
reads a clock or talks to Redis: windows, counts and queue depths come in as arguments.

    auth: {header: authorization}       # presence turns API keys on; keys: --api-keys-file
    tenants:
      acme:
        models: [classifier, "embed*"]  # allowed model names (fnmatch patterns); default: all
        priority: critical              # critical | standard | sheddable (default: the route's)
        requests_per_s: 200             # rate quota, fleet-wide (Redis) with a local fallback
        max_concurrency: 32             # in-flight quota, fleet-wide
    priorities: {critical: 1, standard: 0, sheddable: 3}   # Triton priority level; 0 = unset
    models:
      classifier: {pool: gpu, priority: standard, max_in_flight: 256}
    pools:
      gpu: {shedding: {sheddable_at: 4, standard_at: 16}}   # queue per ready endpoint

Rate quotas use a sliding window over fixed windows (the estimate is the previous window's
count weighted by how much of it still overlaps, plus the current one's), which needs only two
counters per tenant and sums exactly across replicas.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Priority = Literal["critical", "standard", "sheddable"]
PRIORITIES: tuple[Priority, ...] = ("critical", "standard", "sheddable")
DEFAULT_PRIORITY: Priority = "standard"

PositiveFloat = Annotated[float, Field(gt=0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuthConfig(_Frozen):
    """API keys on the data plane. ``header: authorization`` expects ``Bearer <key>``; any
    other header name carries the key itself (e.g. ``x-api-key``). gRPC reads the same key
    from the call's metadata."""

    enabled: bool = True
    header: str = "authorization"

    @field_validator("header")
    @classmethod
    def _lower(cls, value: str) -> str:
        value = value.strip().lower()
        if not value or not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError(f"not a header name: {value!r}")
        return value

    @property
    def bearer(self) -> bool:
        return self.header == "authorization"


class TenantConfig(_Frozen):
    models: list[str] = Field(default_factory=lambda: ["*"])
    priority: Priority | None = None
    requests_per_s: PositiveFloat | None = None
    # Length of a rate window; the quota allows requests_per_s * window_s per window.
    window_s: PositiveFloat = 1.0
    max_concurrency: int | None = Field(default=None, ge=1)

    def allows(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)


class PrioritiesConfig(_Frozen):
    """The Triton priority level (the V2 ``priority`` request parameter) for each class; 0
    leaves a request as it came (Triton then uses the model's ``default_priority_level``).
    Triton treats 1 as the highest level and ignores a level above the model's
    ``priority_levels``."""

    critical: int = Field(default=1, ge=0)
    standard: int = Field(default=0, ge=0)
    sheddable: int = Field(default=3, ge=0)

    def level(self, priority: Priority) -> int:
        value: int = getattr(self, priority)
        return value


class SheddingConfig(_Frozen):
    """Shed by class when a pool's queue (requests this gateway has outstanding on the pool
    plus those held for a cold start, per ready endpoint) reaches a threshold. Critical
    traffic is never shed (only ``max_in_flight`` bounds it)."""

    sheddable_at: PositiveFloat | None = None
    standard_at: PositiveFloat | None = None
    retry_after_s: int = Field(default=1, ge=1)


def resolve_priority(tenant: Priority | None, route: Priority | None) -> Priority:
    """The class of a request: the tenant's if it sets one, else the route's, else standard."""
    return tenant or route or DEFAULT_PRIORITY


def queue_per_endpoint(outstanding: int, queued: int, ready: int) -> float:
    """A pool's queue depth per ready endpoint (a pool with none counts as one)."""
    return (outstanding + queued) / max(ready, 1)


def should_shed(priority: Priority, queue: float, cfg: SheddingConfig) -> bool:
    """Sheddable goes first (at ``sheddable_at``), standard later; critical never."""
    if priority == "sheddable":
        threshold = cfg.sheddable_at if cfg.sheddable_at is not None else cfg.standard_at
    elif priority == "standard":
        threshold = cfg.standard_at
    else:
        return False
    return threshold is not None and queue >= threshold


def window_of(now: float, window_s: float) -> tuple[int, float]:
    """The index of the fixed window holding ``now`` and how far into it ``now`` is (0..1)."""
    position = now / window_s
    index = math.floor(position)
    return index, position - index


def window_estimate(previous: float, current: float, elapsed: float) -> float:
    """Requests counted in the sliding window ending now (``elapsed``: 0..1 into the current
    window): the part of the previous window still inside it, plus the current window."""
    return previous * (1.0 - elapsed) + current


def rate_allows(limit: float, previous: float, current: float, elapsed: float) -> bool:
    """Whether one more request fits a quota of ``limit`` requests per window."""
    return window_estimate(previous, current, elapsed) + 1 <= limit


def retry_after_s(limit: float, previous: float, current: float, elapsed: float,
                  window_s: float) -> int:
    """Whole seconds until a request over the rate quota would fit again (at least 1)."""
    if current + 1 > limit or previous <= 0:  # the current window alone is full
        wait = 1.0 - elapsed
    else:  # the previous window's share must slide out far enough
        wait = max(1.0 - (limit - current - 1) / previous - elapsed, 0.0)
    return max(1, math.ceil(wait * window_s))


def concurrency_allows(limit: int, local: int, others: int) -> bool:
    """Whether one more in-flight request fits ``limit`` given this replica's and the
    others' last reported counts."""
    return local + others + 1 <= limit


def local_share(limit: float, replicas: int) -> float:
    """A replica's share of a fleet-wide quota when the shared counts are unavailable."""
    return limit / max(replicas, 1)
