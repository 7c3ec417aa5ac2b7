"""Summing the workers' Prometheus expositions into the pod's: pure, no I/O.

Where it sits: under :mod:`gateway.workers.podmetrics`, which fetches each worker's own
``/metrics`` text and answers a scrape with :func:`merge` then :func:`render`. The pod's value
of a series, by the family's type:

- counter, histogram (every bucket, ``_sum``, ``_count``), summary ``_sum``/``_count``: the sum;
- gauge in :data:`COUNT_GAUGES` (what one process holds now: requests in flight, outstanding,
  held for a cold start): the sum, each worker holds its own;
- gauge in :data:`FACT_GAUGES` (a fact every worker states about the same thing: a split
  weight, an endpoint admitted, its breaker state, models resident on it): the largest any
  worker reports, never N times it (``servegate_endpoint_healthy`` is 1 when any worker admits
  the endpoint; ``servegate_endpoint_circuit_state`` is 0 only when every worker's breaker is
  closed);
- any other gauge, untyped series, summary quantiles: a gauge not listed is summed (a unit
  test fails when the gateway registers one that is not listed); quantiles take the largest.

A series only some workers report is the sum (or largest) of those that do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from contracts import metrics as names

COUNT_GAUGES = frozenset({
    names.IN_FLIGHT, names.QUEUED, "servegate_endpoint_outstanding_requests",
})
FACT_GAUGES = frozenset({
    "servegate_endpoint_healthy", "servegate_endpoint_circuit_state", "servegate_split_weight",
    "servegate_resident_models",
})

Combine = Callable[[float, float], float]
_SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def _add(a: float, b: float) -> float:
    return a + b


def combiner(family: Metric, sample: Sample) -> Combine:
    """How two workers' values of ``sample`` (of ``family``) make the pod's."""
    if family.type == "gauge" and family.name in FACT_GAUGES:
        return max
    if family.type == "summary" and "quantile" in sample.labels:
        return max
    return _add


def merge(expositions: Iterable[str]) -> list[Metric]:
    """The pod's families from each worker's exposition (text format), in first-seen order."""
    families: dict[str, Metric] = {}
    series: dict[str, dict[_SeriesKey, Sample]] = {}
    for text in expositions:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit)
                series[family.name] = {}
            seen = series[family.name]
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                before = seen.get(key)
                value = s.value if before is None else combiner(family, s)(before.value, s.value)
                seen[key] = Sample(s.name, s.labels, value)
    for name, merged in families.items():
        merged.samples = list(series[name].values())
    return list(families.values())


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render(families: list[Metric]) -> bytes:
    """``families`` in the Prometheus text format (what ``/metrics`` answers)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)
