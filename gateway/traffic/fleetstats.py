"""Per-variant counters and the fleet-statistics maths rollouts judge on.

Where it sits: the front doors record each answered request of a split model into this
replica's :class:`VariantStats` (a few integer adds); the traffic sync job publishes them to the
shared store, and the rollout driver sums every replica's documents (:func:`sum_docs`) and
turns the growth since a step began into the :class:`router.rollout.WindowStats` the pure
verdict reads (:func:`window`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from gateway.adapters.state import Doc
from gateway.metrics import LATENCY_BUCKETS
from gateway.traffic.shadow import ShadowMirror
from router.quantile import bucket_quantile, delta
from router.rollout import WindowStats


@dataclass
class VariantCounters:
    requests: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))


class VariantStats:
    """Cumulative per-(model, variant) counters of this replica, fed by the front doors."""

    def __init__(self) -> None:
        self._counters: dict[str, VariantCounters] = {}

    def record(self, model: str, variant: str, ok: bool, seconds: float) -> None:
        key = f"{model}|{variant}"
        c = self._counters.get(key)
        if c is None:
            c = self._counters[key] = VariantCounters()
        c.requests += 1
        c.errors += 0 if ok else 1
        i = 0
        while i < len(LATENCY_BUCKETS) and seconds > LATENCY_BUCKETS[i]:
            i += 1
        c.buckets[i] += 1

    def doc(self, mirror: ShadowMirror | None = None) -> Doc:
        out: Doc = {k: asdict(c) for k, c in self._counters.items()}
        for (model, variant), a in (mirror.agreement.items() if mirror else ()):
            entry = out.setdefault(f"{model}|{variant}", asdict(VariantCounters()))
            entry["compared"], entry["agreed"] = a.compared, a.agreed
        return out


def sum_docs(docs: list[Doc]) -> Doc:
    total: Doc = {}
    for doc in docs:
        for key, entry in doc.items():
            mine = total.setdefault(key, {"requests": 0, "errors": 0, "compared": 0,
                                          "agreed": 0, "buckets": [0] * len(entry["buckets"])})
            for name in ("requests", "errors", "compared", "agreed"):
                mine[name] += entry.get(name, 0)
            mine["buckets"] = [a + b for a, b in zip(mine["buckets"], entry["buckets"],
                                                       strict=True)]
    return total


def window(now: Doc, base: Doc, model: str, variant: str) -> WindowStats:
    empty = {"requests": 0, "errors": 0, "compared": 0, "agreed": 0,
             "buckets": [0] * (len(LATENCY_BUCKETS) + 1)}
    a, b = now.get(f"{model}|{variant}", empty), base.get(f"{model}|{variant}", empty)
    compared = a.get("compared", 0) - b.get("compared", 0)
    agreed = a.get("agreed", 0) - b.get("agreed", 0)
    return WindowStats(
        requests=a["requests"] - b["requests"], errors=a["errors"] - b["errors"],
        p99_s=bucket_quantile(0.99, LATENCY_BUCKETS, delta(a["buckets"], b["buckets"])),
        agreement=agreed / compared if compared > 0 else None)
