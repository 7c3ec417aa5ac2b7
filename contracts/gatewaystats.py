"""Per-replica gateway counters and their Redis hash schema (gateway writes, autoscaler reads).

Where it sits: every gateway replica publishes its counters so the autoscaler can add them up
fleet-wide. With Redis configured a replica writes :func:`build_hash_fields` of its
:class:`GatewayStats` to the hash :func:`stats_key` (its id) every publish interval, as one
transaction - ``DEL key; HSET key <fields>; EXPIRE key <ttl>`` - with a TTL of a few intervals,
so a replica that dies disappears. The autoscaler ``SCAN`` s ``<prefix>*`` and turns each hash
back into :class:`GatewayStats` with :func:`parse_hash_fields`. Without Redis the autoscaler
builds the same :class:`GatewayStats` from each replica's ``/metrics``.

Schema version 1, one hash per gateway replica (all values are strings)::

    key   servegate:gwstats:<gateway id>
    v     "1"                                   schema version
    ts    "1718000000.25"                       publish time, epoch seconds
    m:<pool>:<model>                            one per (pool, model), names %-encoded
          '{"in_flight": 3, "requests": 1234,   gauge; cumulative answered requests
            "le": [0.001, ..., "+Inf"],         histogram bucket bounds (seconds) and
            "counts": [0, ..., 1234]}'          cumulative counts per bound (Prometheus-style)
    q:<pool>                                    requests held in the gateway for the pool
          "7"                                   (only when the gateway holds requests)

Counters are cumulative since the replica started; readers take deltas between two reads and
treat a decrease as a restart. Pure: no I/O library is imported here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

KEY_PREFIX = "servegate:gwstats:"
SCHEMA_VERSION = "1"
DEFAULT_TTL_S = 15


@dataclass(frozen=True, slots=True)
class ModelCounters:
    """One (pool, model) on one gateway replica."""

    in_flight: float = 0.0
    requests: float = 0.0
    # (upper bound in seconds, cumulative count), bounds increasing, math.inf last
    buckets: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class GatewayStats:
    """All counters of one gateway replica at one moment."""

    source: str  # gateway id (Redis) or /metrics URL (scrape)
    at: float  # epoch seconds
    models: Mapping[tuple[str, str], ModelCounters] = field(default_factory=dict)
    queued: Mapping[str, float] = field(default_factory=dict)  # pool -> held requests


def stats_key(gateway_id: str, prefix: str = KEY_PREFIX) -> str:
    return prefix + gateway_id


def _bound(le: float) -> float | str:
    return "+Inf" if math.isinf(le) else le


def build_hash_fields(stats: GatewayStats) -> dict[str, str]:
    """The hash fields for ``stats`` (schema above); the gateway's publisher writes these."""
    fields = {"v": SCHEMA_VERSION, "ts": repr(float(stats.at))}
    for (pool, model), c in sorted(stats.models.items()):
        fields[f"m:{quote(pool, safe='')}:{quote(model, safe='')}"] = json.dumps({
            "in_flight": c.in_flight, "requests": c.requests,
            "le": [_bound(le) for le, _ in c.buckets], "counts": [n for _, n in c.buckets],
        }, separators=(",", ":"))
    for pool, n in sorted(stats.queued.items()):
        fields[f"q:{quote(pool, safe='')}"] = repr(float(n))
    return fields


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _counters(raw: str) -> ModelCounters:
    doc = json.loads(raw)
    bounds = [math.inf if b == "+Inf" else float(b) for b in doc.get("le", [])]
    counts = [float(n) for n in doc.get("counts", [])]
    if len(bounds) != len(counts):
        raise ValueError("'le' and 'counts' differ in length")
    return ModelCounters(float(doc.get("in_flight", 0.0)), float(doc.get("requests", 0.0)),
                         tuple(zip(bounds, counts, strict=True)))


def parse_hash_fields(gateway_id: str,
                      fields: Mapping[bytes, bytes] | Mapping[str, str]) -> GatewayStats:
    """Inverse of :func:`build_hash_fields`; ValueError on another schema or a bad field."""
    items = {_text(k): _text(v) for k, v in fields.items()}
    if items.get("v") != SCHEMA_VERSION:
        raise ValueError(f"schema version {items.get('v')!r}, expected {SCHEMA_VERSION!r}")
    models: dict[tuple[str, str], ModelCounters] = {}
    queued: dict[str, float] = {}
    for name, value in items.items():
        kind, _, rest = name.partition(":")
        try:
            if kind == "m":
                pool, sep, model = rest.partition(":")
                if not sep:
                    raise ValueError("expected m:<pool>:<model>")
                models[(unquote(pool), unquote(model))] = _counters(value)
            elif kind == "q":
                queued[unquote(rest)] = float(value)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"field {name!r}: {exc}") from exc
    try:
        at = float(items["ts"])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"field 'ts': missing or not a number: {items.get('ts')!r}") from exc
    return GatewayStats(gateway_id, at, models, queued)
