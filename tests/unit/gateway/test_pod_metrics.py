"""The pod's /metrics with --workers N: the merge of the workers' expositions (pure), and
siblings asked over their Unix sockets in-process (one missing: left out and counted)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from contracts import parse_config
from gateway.server import Gateway
from gateway.settings import GatewaySettings, WorkerSlot
from gateway.workers.merge import COUNT_GAUGES, FACT_GAUGES, merge, render
from gateway.workers.podmetrics import PodMetrics

prometheus_client.disable_created_metrics()


def exposition(requests: float, latencies: list[float], in_flight: float, weight: float,
               healthy: float) -> str:
    registry = CollectorRegistry()
    c = Counter("servegate_requests", "Requests", ["model"], registry=registry)
    c.labels("m").inc(requests)
    h = Histogram("servegate_request_duration_seconds", "Latency", ["model"],
                  buckets=(0.01, 0.1, 1.0), registry=registry)
    for s in latencies:
        h.labels("m").observe(s)
    Gauge("servegate_in_flight_requests", "In flight", ["model"],
          registry=registry).labels("m").set(in_flight)
    Gauge("servegate_split_weight", "Weight", ["model", "variant"],
          registry=registry).labels("m", "a").set(weight)
    Gauge("servegate_endpoint_healthy", "Admitted", ["pool", "endpoint"],
          registry=registry).labels("p", "e").set(healthy)
    Gauge("servegate_unlisted", "A gauge nobody classified", registry=registry).set(1)
    return generate_latest(registry).decode()


def values(text: str | bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = text.decode() if isinstance(text, bytes) else text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_counters_and_histograms_sum_gauges_follow_their_rule() -> None:
    a = exposition(3, [0.005, 0.5], in_flight=2, weight=90, healthy=1)
    b = exposition(4, [0.05, 0.05, 5.0], in_flight=5, weight=90, healthy=0)
    pod = values(render(merge([a, b])))
    m = (("model", "m"),)
    assert pod[("servegate_requests_total", m)] == 7
    buckets = {le: pod[("servegate_request_duration_seconds_bucket", (("le", le), *m))]
               for le in ("0.01", "0.1", "1.0", "+Inf")}
    assert buckets == {"0.01": 1, "0.1": 3, "1.0": 4, "+Inf": 5}
    assert pod[("servegate_request_duration_seconds_count", m)] == 5
    assert abs(pod[("servegate_request_duration_seconds_sum", m)] - 5.605) < 1e-9
    assert pod[("servegate_in_flight_requests", m)] == 7  # a count: summed
    assert pod[("servegate_split_weight", (*m, ("variant", "a")))] == 90  # a fact: not x2
    assert pod[("servegate_endpoint_healthy", (("endpoint", "e"), ("pool", "p")))] == 1
    assert pod[("servegate_unlisted", ())] == 2  # the default for a gauge: summed


def test_one_worker_round_trips_unchanged() -> None:
    text = exposition(3, [0.005, 0.5], in_flight=2, weight=90, healthy=1)
    assert render(merge([text])).decode() == text


def test_a_series_only_one_worker_has_is_kept() -> None:
    registry = CollectorRegistry()
    Counter("servegate_model_loads", "Loads", ["pool"], registry=registry).labels("x").inc(2)
    other = generate_latest(registry).decode()
    pod = values(render(merge([exposition(1, [], 0, 1, 1), other])))
    assert pod[("servegate_model_loads_total", (("pool", "x"),))] == 2
    assert pod[("servegate_requests_total", (("model", "m"),))] == 1


def test_every_gauge_the_gateway_registers_has_a_merge_rule() -> None:
    """A new gauge must be placed: a per-process count (summed) or a fact (largest)."""
    config = parse_config({"pools": {"p": {"endpoints": ["127.0.0.1:1"]}},
                           "models": {"m": {"pool": "p"}}})
    gw = Gateway(config, GatewaySettings(config_path=Path("unused.yaml")))
    gauges = {f.name for f in gw.metrics.registry.collect() if f.type == "gauge"}
    assert gauges, "the registry was read"
    assert gauges - (COUNT_GAUGES | FACT_GAUGES) == set()
    assert not COUNT_GAUGES & FACT_GAUGES


class _Registry:
    """Stands in for GatewayMetrics: what PodMetrics uses of it is render()."""

    def __init__(self, text: str) -> None:
        self.text = text

    def render(self) -> bytes:
        return self.text.encode()


def test_a_scrape_sums_the_siblings_that_answer_and_counts_the_missing() -> None:
    async def scenario(sockets_dir: Path) -> tuple[bytes, bytes]:
        texts = [exposition(n, [0.05] * n, in_flight=1, weight=50, healthy=1) for n in (1, 2)]
        pods = [PodMetrics(_Registry(t), WorkerSlot(i, 3, sockets_dir),  # type: ignore[arg-type]
                           timeout_s=0.5) for i, t in enumerate(texts)]
        for pod in pods:  # worker 2 never started: its socket does not exist
            await pod.start()
        try:
            return await pods[0].render(), await pods[1].render()
        finally:
            for pod in pods:
                await pod.aclose()

    with tempfile.TemporaryDirectory() as tmp:
        first, second = asyncio.run(scenario(Path(tmp)))
        assert list(Path(tmp).iterdir()) == []  # sockets removed on close
    for body in (first, second):
        pod = values(body)
        assert pod[("servegate_requests_total", (("model", "m"),))] == 3
        assert pod[("servegate_in_flight_requests", (("model", "m"),))] == 2
        assert pod[("servegate_split_weight", (("model", "m"), ("variant", "a")))] == 50
        assert pod[("servegate_metrics_workers", ())] == 2
        assert pod[("servegate_metrics_workers_missing", ())] == 1
