"""The cost section of the config schema: what a pool's replicas hold and what a GPU-hour
costs, plus the label values the cost accounting reserves.

Where it sits: part of the one YAML file (:mod:`contracts.config` validates ``pools.<p>.cost``
and the top-level ``cost`` with the rest); the gateway's accounting reads it at each tick and
the autoscaler scales per-GPU targets by it. A schema only: the attribution maths is
:mod:`router.cost`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Label values reserved by the accounting (tenant names starting with "_" are not allowed).
IDLE = "_idle"            # model and tenant of idle capacity nobody used recently
SHADOW_TENANT = "_shadow"  # shadow mirrors: charged to the shadow variant, not to the caller
ANONYMOUS = "_anonymous"   # the tenant label when auth is off

# A MIG profile "nvidia.com/mig-<g>g.<mem>gb" is g sevenths of a GPU (A100/H100/H200: 7 slices).
_MIG = re.compile(r"^nvidia\.com/mig-(\d)g\.\d+gb$")
_WHOLE = ("nvidia.com/gpu", "amd.com/gpu")

NonNegative = Annotated[float, Field(ge=0)]


def gpu_fraction(resource: str) -> float | None:
    """GPUs per unit of a Kubernetes extended resource: 1 for a whole GPU, g/7 for a MIG
    profile; ``None`` when the name says nothing (time-sliced ``nvidia.com/gpu.shared``: set
    ``gpus_per_replica`` instead)."""
    if resource in _WHOLE:
        return 1.0
    m = _MIG.match(resource)
    if m is not None and 1 <= int(m.group(1)) <= 7:
        return int(m.group(1)) / 7
    return None


class CostConfig(BaseModel):
    """``pools.<name>.cost``: what one replica of the pool holds and what a GPU-hour costs.

        cost:
          gpus_per_replica: 0.25           # time-sliced quarter GPU (default 1)
          gpu_resource: nvidia.com/mig-1g.10gb   # or derive it from a MIG profile (1/7)
          gpus_per_resource: 1             # units of gpu_resource per replica (default 1)
          capacity: spot                   # on_demand (default) | spot
          price_per_gpu_hour: 4.10         # on-demand price of one whole GPU-hour
          spot_price_per_gpu_hour: 1.30    # used while capacity is spot
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpus_per_replica: float | None = Field(default=None, gt=0, le=64)
    gpu_resource: str | None = None
    gpus_per_resource: float = Field(default=1.0, gt=0, le=64)
    capacity: Literal["on_demand", "spot"] = "on_demand"
    price_per_gpu_hour: NonNegative = 0.0
    spot_price_per_gpu_hour: NonNegative | None = None

    @model_validator(mode="after")
    def _check(self) -> CostConfig:
        if self.gpu_resource is not None and self.gpus_per_replica is None \
                and gpu_fraction(self.gpu_resource) is None:
            raise ValueError(
                f"cannot tell the GPU fraction of {self.gpu_resource!r} (whole: nvidia.com/gpu; "
                "MIG: nvidia.com/mig-<g>g.<mem>gb); set gpus_per_replica")
        if self.capacity == "spot" and self.spot_price_per_gpu_hour is None:
            raise ValueError("capacity 'spot' needs spot_price_per_gpu_hour")
        return self

    @property
    def gpus(self) -> float:
        """GPUs (a fraction for MIG or time slicing) one replica holds."""
        if self.gpus_per_replica is not None:
            return self.gpus_per_replica
        if self.gpu_resource is not None:
            return (gpu_fraction(self.gpu_resource) or 1.0) * self.gpus_per_resource
        return 1.0

    @property
    def price(self) -> float:
        """Dollars per whole GPU-hour at the pool's current capacity type."""
        if self.capacity == "spot" and self.spot_price_per_gpu_hour is not None:
            return self.spot_price_per_gpu_hour
        return self.price_per_gpu_hour


class AccountingConfig(BaseModel):
    """``cost`` at the top level: how the gateway accounts (every pool has its own ``cost``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tick_s: float = Field(default=1.0, gt=0, le=60)
    # Idle time is charged by demand decayed with this half-life (0: only this tick's demand).
    idle_half_life_s: float = Field(default=600.0, ge=0)
