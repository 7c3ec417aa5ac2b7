"""Cost attribution: a pool's provisioned GPU-seconds, shared out to (model, tenant).

Where it sits: off the request path. The proxy adds each request's backend time into a
preallocated accumulator per (pool, model, tenant) (``gateway.pipeline.cost``); once per accounting
tick the gateway hands :func:`attribute` what it saw in the interval and this module decides what
everyone is charged. Pure: no clock (``now`` and ``dt_s`` come in), no I/O.

For one pool and one tick of ``dt_s`` seconds::

    provisioned P = ready replicas x GPUs per replica x dt_s x share
    busy        B = min(endpoint busy seconds x GPUs per replica x share, P)
                    (endpoint busy: the time an endpoint had at least one request outstanding)
    busy_i      = B x demand_i / sum(demand)     demand_i: the (model, tenant)'s backend time
                                                 (sum of its requests' send-to-answer seconds)
    idle        I = P - sum(busy_i)              (all of P when nobody sent anything)
    idle_i      = I x D_i / sum(D)               D: demand decayed with a half-life, so idle
                                                 time between bursts goes to recent users
    charged_i   = busy_i + idle_i

so ``sum(charged_i) == P`` at every tick, by construction. When ``D`` is empty (nobody used the
pool for many half-lives: decayed demand under a microsecond is forgotten) the idle time is
charged to the row ``(IDLE, IDLE)``: capacity
nobody can be billed for, reported on its own. ``share`` is this gateway replica's part of the
pool (1 / replicas) so that a fleet of gateways together counts each GPU-second once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from contracts.cost import (
    ANONYMOUS,
    IDLE,
    SHADOW_TENANT,
    AccountingConfig,
    CostConfig,
    gpu_fraction,
)

__all__ = [
    "ANONYMOUS", "IDLE", "SHADOW_TENANT", "AccountingConfig", "CostConfig", "DemandState",
    "Ledger", "PoolInterval", "attribute", "gpu_fraction", "group_rows", "parse_window",
    "report_rows", "row_doc",
]

Key = tuple[str, str]  # (model, tenant)

_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True)
class PoolInterval:
    """What the gateway saw of one pool during one accounting tick."""

    dt_s: float
    ready_replicas: int
    gpus_per_replica: float
    busy_replica_s: float                   # sum over endpoints of their busy seconds
    demand_s: Mapping[Key, float]           # backend seconds per (model, tenant)
    share: float = 1.0                      # this gateway's part of the pool (1 / replicas)


@dataclass(frozen=True)
class Charge:
    gpu_s: float    # busy + idle share
    idle_s: float   # the idle part of gpu_s


@dataclass(frozen=True)
class PoolCharges:
    provisioned_s: float
    busy_s: float
    rows: dict[Key, Charge]


@dataclass(frozen=True)
class DemandState:
    """Decayed demand per (model, tenant) of one pool: who idle time is charged to."""

    weights: dict[Key, float] = field(default_factory=dict)


def attribute(interval: PoolInterval, state: DemandState, half_life_s: float
              ) -> tuple[PoolCharges, DemandState]:
    """Charges for one pool over one tick, and the decayed demand to carry to the next."""
    i = interval
    per_replica_s = max(i.dt_s, 0.0) * i.gpus_per_replica * i.share
    provisioned = i.ready_replicas * per_replica_s
    demand = {k: v for k, v in i.demand_s.items() if v > 0}
    total = sum(demand.values())
    busy = min(i.busy_replica_s * i.gpus_per_replica * i.share, provisioned) if total else 0.0
    weights = _decay(state.weights, demand, i.dt_s, half_life_s)
    rows: dict[Key, Charge] = {}
    busy_of = {k: busy * (v / total) for k, v in demand.items()} if total else {}
    idle = max(provisioned - busy, 0.0)
    wsum = sum(weights.values())
    for key in busy_of.keys() | weights.keys():
        idle_k = idle * (weights.get(key, 0.0) / wsum) if wsum else 0.0
        rows[key] = Charge(busy_of.get(key, 0.0) + idle_k, idle_k)
    if not wsum and idle > 0:
        rows[(IDLE, IDLE)] = Charge(idle, idle)
    return PoolCharges(provisioned, busy, rows), DemandState(weights)


def _decay(weights: Mapping[Key, float], demand: Mapping[Key, float], dt_s: float,
           half_life_s: float) -> dict[Key, float]:
    factor = 0.5 ** (max(dt_s, 0.0) / half_life_s) if half_life_s > 0 else 0.0
    out = {k: v * factor for k, v in weights.items()}
    for k, v in demand.items():
        out[k] = out.get(k, 0.0) + v
    top = max(out.values(), default=0.0)
    # Forget demand that no longer matters: under 1e-6 of the largest, or under a microsecond
    # (1 s of demand is forgotten after 20 half-lives, 10 ms after 13).
    return {k: v for k, v in out.items() if v > 1e-6 * top and v > 1e-6}


def parse_window(text: str, max_s: float) -> float:
    """``"1h"`` -> 3600.0 (units s, m, h, d; a bare number is seconds); ValueError otherwise."""
    m = _WINDOW.match(text.strip())
    if m is None:
        raise ValueError(f"invalid window {text!r}: expected a number with a unit s, m, h or d "
                         "(e.g. 90s, 15m, 1h, 1d)")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not 0 < seconds <= max_s:
        raise ValueError(f"window {text!r} out of range: more than 0 and at most {max_s:g}s")
    return seconds


# ----------------------------------------------------------------------------- the ledger

@dataclass
class Totals:
    """Sums over a time span for one (pool, model, tenant)."""

    requests: int = 0
    gpu_s: float = 0.0
    idle_s: float = 0.0
    dollars: float = 0.0

    def add(self, other: Totals) -> None:
        self.requests += other.requests
        self.gpu_s += other.gpu_s
        self.idle_s += other.idle_s
        self.dollars += other.dollars


@dataclass
class _Bucket:
    start: float
    rows: dict[tuple[str, str, str], Totals] = field(default_factory=dict)
    pools: dict[str, Totals] = field(default_factory=dict)  # provisioned, as gpu_s
    covered_s: float = 0.0


class Ledger:
    """Charges in buckets of ``bucket_s`` (1 minute) kept for ``retention_s`` (24 h), for the
    windowed report (``GET /admin/cost?window=1h``): a window sums the buckets whose middle
    lies within it, and always the current one, so it is accurate to about one bucket."""

    def __init__(self, bucket_s: float = 60.0, retention_s: float = 86400.0) -> None:
        self.bucket_s = bucket_s
        self.retention_s = retention_s
        self._buckets: list[_Bucket] = []

    def add(self, now: float, dt_s: float, pool: str, charges: PoolCharges, price: float,
            requests: Mapping[Key, int]) -> None:
        b = self._bucket(now)
        per_dollar = price / 3600.0
        for (model, tenant), ch in charges.rows.items():
            t = b.rows.setdefault((pool, model, tenant), Totals())
            t.add(Totals(requests.get((model, tenant), 0), ch.gpu_s, ch.idle_s,
                         ch.gpu_s * per_dollar))
        for (model, tenant), n in requests.items():
            if (model, tenant) not in charges.rows and n:
                b.rows.setdefault((pool, model, tenant), Totals()).requests += n
        p = b.pools.setdefault(pool, Totals())
        p.add(Totals(0, charges.provisioned_s, charges.provisioned_s - charges.busy_s,
                     charges.provisioned_s * per_dollar))

    def tick_done(self, now: float, dt_s: float) -> None:
        self._bucket(now).covered_s += dt_s

    def _bucket(self, now: float) -> _Bucket:
        start = math.floor(now / self.bucket_s) * self.bucket_s
        if not self._buckets or self._buckets[-1].start != start:
            self._buckets.append(_Bucket(start))
            horizon = now - self.retention_s - self.bucket_s
            while self._buckets and self._buckets[0].start < horizon:
                self._buckets.pop(0)
        return self._buckets[-1]

    def window(self, now: float, seconds: float
               ) -> tuple[dict[tuple[str, str, str], Totals], dict[str, Totals], float]:
        """Rows, pool totals and seconds accounted within the last ``seconds``."""
        since = now - seconds
        rows: dict[tuple[str, str, str], Totals] = {}
        pools: dict[str, Totals] = {}
        covered = 0.0
        newest = self._buckets[-1] if self._buckets else None
        for b in self._buckets:
            # A bucket counts when its middle is within the window (so a window is rounded to
            # whole buckets); the newest always counts (a window shorter than a bucket).
            if b.start + self.bucket_s / 2 <= since and b is not newest:
                continue
            covered += b.covered_s
            for key, t in b.rows.items():
                rows.setdefault(key, Totals()).add(t)
            for pool, t in b.pools.items():
                pools.setdefault(pool, Totals()).add(t)
        return rows, pools, covered


def report_rows(rows: Mapping[tuple[str, str, str], Totals]) -> list[dict[str, object]]:
    """JSON rows of the cost report, largest cost first."""
    out = [row_doc({"pool": p, "model": m, "tenant": t}, tot)
           for (p, m, t), tot in rows.items()]
    out.sort(key=lambda r: (-float(r["gpu_seconds"]), str(r["pool"]),  # type: ignore[arg-type]
                            str(r["model"]), str(r["tenant"])))
    return out


def row_doc(labels: Mapping[str, str], t: Totals) -> dict[str, object]:
    per_k = 1000.0 / t.requests if t.requests else None
    return {
        **labels,
        "requests": t.requests,
        "gpu_seconds": t.gpu_s,
        "gpu_hours": t.gpu_s / 3600.0,
        "busy_gpu_seconds": t.gpu_s - t.idle_s,
        "idle_gpu_seconds": t.idle_s,
        "dollars": t.dollars,
        "gpu_seconds_per_1k": t.gpu_s * per_k if per_k is not None else None,
        "dollars_per_1k": t.dollars * per_k if per_k is not None else None,
        "idle_share": t.idle_s / t.gpu_s if t.gpu_s > 0 else None,
    }


def group_rows(rows: Iterable[Mapping[str, object]], by: str) -> list[dict[str, object]]:
    """Report rows summed by one of ``pool``, ``model`` or ``tenant`` (for ``servegate cost``)."""
    if by not in ("pool", "model", "tenant"):
        raise ValueError(f"cannot group by {by!r}: expected pool, model or tenant")
    sums: dict[str, Totals] = {}
    for r in rows:
        t = sums.setdefault(str(r[by]), Totals())
        gpu_s = _num(r["gpu_seconds"])
        t.add(Totals(int(_num(r["requests"])), gpu_s, _num(r["idle_gpu_seconds"]),
                     _num(r["dollars"])))
    out = [row_doc({by: k}, t) for k, t in sums.items()]
    out.sort(key=lambda r: (-_num(r["gpu_seconds"]), str(r[by])))
    return out


def _num(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"expected a number, got {value!r}")
