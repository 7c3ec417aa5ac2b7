"""Prometheus metrics of the data plane, defined once per gateway instance.

Where it sits: the proxy records each finished request (count by status class, latency) and
each upstream failure; gauges that are just current counts (in-flight per model, outstanding
and health per endpoint, circuit state per endpoint) are read from the runtime at scrape time,
costing nothing per request.
Served at ``/metrics`` in the Prometheus text format.
"""

from __future__ import annotations

import contextlib
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from contracts import metrics as names
from gateway.pipeline.runtime import Runtime
from router.health import circuit_state

# 1 ms .. 10 s, roughly x2 per step with the usual SLO points (25/50/100/250 ms, 1 s).
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_CHILDREN_KEPT = 4096  # label sets whose counter child is kept resolved


class _Series:
    """Request count by status class and latency histogram of one (model, endpoint, protocol).

    Plain numbers, written by the event loop's thread only and read at scrape time by
    :class:`_RequestCollector`: a prometheus_client child takes a lock per update, which is
    most of what recording a request cost.
    """

    __slots__ = ("buckets", "by_class", "sum")

    def __init__(self) -> None:
        self.by_class = [0, 0, 0, 0, 0]
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, not cumulative; +Inf last
        self.sum = 0.0


class _RequestCollector(Collector):
    """``servegate_requests_total`` and ``servegate_request_duration_seconds`` from the series."""

    def __init__(self, series: dict[tuple[str, str, str], _Series]) -> None:
        self._series = series

    def collect(self) -> Iterator[Any]:
        labels = ["model", "endpoint", "protocol"]
        requests = CounterMetricFamily(
            names.REQUESTS, "Requests answered, by model, endpoint and status class",
            labels=[*labels, "code_class"])
        latency = HistogramMetricFamily(
            names.REQUEST_DURATION, "Time from request to full response", labels=labels)
        bounds = [*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf"]
        for key, series in list(self._series.items()):
            for code_class, count in zip(_CLASSES, series.by_class, strict=True):
                requests.add_metric([*key, code_class], count)
            running, cumulative = 0, []
            for bound, count in zip(bounds, series.buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            latency.add_metric(list(key), cumulative, series.sum)
        yield requests
        yield latency

    def describe(self) -> Iterator[Any]:
        return iter(())


class GatewayMetrics:
    def __init__(self, runtime: Runtime, in_flight: Callable[[], dict[str, int]],
                 clock: Callable[[], float] = time.monotonic,
                 queued: Callable[[], dict[str, int]] = dict) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._series: dict[tuple[str, str, str], _Series] = {}
        self.registry.register(_RequestCollector(self._series))
        self.first_byte = Histogram(
            "servegate_time_to_first_byte_seconds",
            "Streamed responses (generate_stream): time from request to the first body bytes",
            ["model", "protocol"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.upstream_errors = Counter(
            "servegate_upstream_errors", "Transport failures talking to an endpoint, by kind",
            ["pool", "endpoint", "kind"], registry=self.registry)
        self.rejected = Counter(
            names.REJECTED, "Requests answered by the gateway itself with an error",
            ["model", "protocol", "code"], registry=self.registry)
        self.admission_rejected = Counter(
            "servegate_admission_rejections",
            "Requests refused by admission (auth, quota, in-flight cap, shedding), by reason",
            ["tenant", "model", "reason"], registry=self.registry)
        self.priority_skipped = Counter(
            "servegate_priority_not_applied",
            "Requests whose priority could not be written into the body (compressed, or a "
            "JSON header over the size the gateway rewrites)", ["model"],
            registry=self.registry)
        self.reloads = Counter(
            "servegate_config_reloads", "Config reload attempts", ["result"],
            registry=self.registry)
        variant_labels = ("model", "variant")
        self.variant_requests = Counter(
            "servegate_variant_requests", "Requests per split variant, by status class",
            [*variant_labels, "code_class"], registry=self.registry)
        self.variant_latency = Histogram(
            "servegate_variant_request_duration_seconds", "Latency per split variant",
            variant_labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.shadow_requests = Counter(
            "servegate_shadow_requests",
            "Shadow mirrors by outcome: compared, status (non-200 on either side), dropped "
            "(shadow saturated), error, unpaired (the primary failed)",
            [*variant_labels, "result"], registry=self.registry)
        self.shadow_agreement = Counter(
            "servegate_shadow_comparisons", "Shadow vs primary output comparisons",
            [*variant_labels, "agree"], registry=self.registry)
        self.shadow_abs_error = Histogram(
            "servegate_shadow_max_abs_error", "Max absolute output difference, shadow vs primary",
            variant_labels, buckets=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0),
            registry=self.registry)
        self.shadow_latency_delta = Histogram(
            "servegate_shadow_latency_delta_seconds", "Shadow latency minus primary latency",
            variant_labels, buckets=(-1.0, -0.1, -0.01, -0.001, 0.0, 0.001, 0.01, 0.1, 1.0),
            registry=self.registry)
        self.activations = Counter(
            "servegate_pool_activations", "Cold starts begun: a request found no ready endpoint",
            ["pool"], registry=self.registry)
        cold_buckets = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
        self.cold_start = Histogram(
            "servegate_cold_start_seconds", "From the first held request to a ready endpoint",
            ["pool"], buckets=cold_buckets, registry=self.registry)
        self.cold_start_wait = Histogram(
            "servegate_cold_start_wait_seconds", "Time requests spent held for a cold start",
            ["pool"], buckets=cold_buckets, registry=self.registry)
        # Requests held in the cold-start buffer, per pool.
        self.registry.register(_StateCollector(runtime, in_flight, queued, clock))
        self._error_labels: set[tuple[str, str, str]] = set()
        # Counter children resolved once per label set (``labels()`` costs more than ``inc()``).
        self._refused: dict[tuple[str, ...], Any] = {}
        self._admission_refused: dict[tuple[str, ...], Any] = {}

    def observe(self, model: str, endpoint: str, protocol: str, status: int,
                seconds: float) -> None:
        key = (model, endpoint, protocol)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        series.by_class[min(max(status // 100, 1), 5) - 1] += 1
        series.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        series.sum += seconds

    def refused(self, model: str, protocol: str, status: int) -> None:
        """A request the gateway answered itself with an error (``servegate_rejected``)."""
        _child(self._refused, self.rejected, (model, protocol, str(status))).inc()

    def refused_by_admission(self, tenant: str, model: str, reason: str) -> None:
        """A request admission refused (``servegate_admission_rejected``)."""
        _child(self._admission_refused, self.admission_rejected, (tenant, model, reason)).inc()

    def upstream_error(self, pool: str, endpoint: str, kind: str) -> None:
        self._error_labels.add((pool, endpoint, kind))
        self.upstream_errors.labels(pool, endpoint, kind).inc()

    def forget_endpoints(self, live: set[str]) -> int:
        """Drop the series of endpoints not in ``live`` (replicas that went away: each cold
        start brings a new address, so keeping them would grow the registry without bound).
        A request still in flight on a dropped endpoint simply records it again."""
        gone = [key for key in self._series if key[1] and key[1] not in live]
        for key in gone:
            del self._series[key]
        errors = [key for key in self._error_labels if key[1] not in live]
        for key in errors:
            self._error_labels.discard(key)
            _remove(self.upstream_errors, *key)
        return len(gone) + len(errors)

    def observe_variant(self, model: str, variant: str, status: int, seconds: float) -> None:
        self.variant_requests.labels(model, variant, _CLASSES[min(max(status // 100, 1), 5) - 1]
                                     ).inc()
        self.variant_latency.labels(model, variant).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _child(kept: dict[tuple[str, ...], Any], metric: Counter, labels: tuple[str, ...]) -> Any:
    """``metric.labels(*labels)``, resolved once per label set (up to ``_CHILDREN_KEPT``)."""
    child = kept.get(labels)
    if child is None:
        child = metric.labels(*labels)
        if len(kept) < _CHILDREN_KEPT:
            kept[labels] = child
    return child


def _remove(metric: Counter | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never recorded with these labels
        metric.remove(*labels)


class _StateCollector(Collector):
    def __init__(self, runtime: Runtime, in_flight: Callable[[], dict[str, int]],
                 queued: Callable[[], dict[str, int]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._runtime = runtime
        self._in_flight = in_flight
        self._queued = queued
        self._clock = clock

    def collect(self) -> Iterator[Any]:
        inflight = GaugeMetricFamily(
            names.IN_FLIGHT, "Requests in flight per model", labels=["model"])
        for model, n in sorted(self._in_flight().items()):
            inflight.add_metric([model], n)
        yield inflight
        outstanding = GaugeMetricFamily(
            "servegate_endpoint_outstanding_requests", "Requests outstanding per endpoint",
            labels=["pool", "endpoint"])
        healthy = GaugeMetricFamily(
            "servegate_endpoint_healthy", "1 when the endpoint is admitted for traffic",
            labels=["pool", "endpoint"])
        circuit = GaugeMetricFamily(
            "servegate_endpoint_circuit_state",
            "Circuit breaker per endpoint: 0 closed, 1 open, 2 half-open (a trial is due or in "
            "flight)", labels=["pool", "endpoint"])
        now = self._clock()
        for pool in self._runtime.state.pools.values():
            for ep in pool.endpoints:
                outstanding.add_metric([pool.name, ep.address], ep.outstanding)
                healthy.add_metric([pool.name, ep.address], 1.0 if ep.admitted else 0.0)
                circuit.add_metric([pool.name, ep.address], circuit_state(ep.health, now))
        yield outstanding
        yield healthy
        yield circuit
        weights = GaugeMetricFamily(
            "servegate_split_weight", "Current weight of each split variant",
            labels=["model", "variant"])
        for model, split in sorted(self._runtime.state.table.splits().items()):
            for v in split.variants:
                weights.add_metric([model, v.name], v.weight)
        yield weights
        queued = GaugeMetricFamily(
            names.QUEUED, "Requests held while their pool has no ready endpoint",
            labels=["pool"])
        held = self._queued()
        for pool in sorted(self._runtime.state.pools):
            queued.add_metric([pool], held.get(pool, 0))
        yield queued

    def describe(self) -> Iterator[Any]:
        return iter(())
