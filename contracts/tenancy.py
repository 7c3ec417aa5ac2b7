"""The tenancy part of the config schema: API keys, tenants, priority classes, shedding knobs.

Where it sits: part of :class:`contracts.config.Config` (the ``auth``, ``tenants`` and
``priorities`` sections, the per-model ``priority``/``max_in_flight`` and the per-pool
``shedding`` knobs); the decisions over these values are pure functions in
:mod:`router.tenancy`, called by the gateway's admission step.

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
"""

from __future__ import annotations

import fnmatch
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
