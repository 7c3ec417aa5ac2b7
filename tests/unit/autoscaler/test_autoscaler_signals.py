"""Signal parsing and aggregation: Prometheus text (a real Triton's /metrics, captured), Triton
and gateway collectors in synthetic time, the Redis hash schema, DCGM / Prometheus / NVML."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from autoscaler.errors import ParseError
from autoscaler.policy import NoData
from autoscaler.policy.spec import sum_available
from autoscaler.signals import gpu, promtext, triton
from autoscaler.signals.gateway import GatewayCollector, PoolMap, stats_from_samples
from contracts import parse_config
from contracts.gatewaystats import (
    GatewayStats,
    ModelCounters,
    build_hash_fields,
    parse_hash_fields,
    stats_key,
)

FIXTURES = Path(__file__).parent / "fixtures"
# Captured from a real Triton (the demo worker, CPU) after 20 classifier requests of batch
# 1..4 and 5 identity requests: see the integration test that checks the same parse live.
TRITON_TEXT = (FIXTURES / "triton_metrics.txt").read_text()
CLASSIFIER_CONFIG = json.loads((FIXTURES / "triton_classifier_config.json").read_text())


# --------------------------------------------------------------------------------------------
# Prometheus text and Triton
# --------------------------------------------------------------------------------------------

def test_parse_real_triton_metrics() -> None:
    samples = promtext.parse(TRITON_TEXT)
    assert promtext.total(samples, "nv_inference_request_success", model="classifier") == 20
    assert promtext.total(samples, "nv_inference_count", model="classifier") == 50
    assert promtext.total(samples, "nv_inference_exec_count", model="classifier") == 20
    assert promtext.total(samples, "nv_inference_pending_request_count") == 0
    assert promtext.total(samples, "nv_inference_request_failure", model="identity") == 0
    assert promtext.total(samples, "nv_gpu_utilization") is None  # CPU-only: absent, not 0
    by_model = promtext.sum_by(samples, "nv_inference_queue_duration_us", "model")
    assert by_model == {("classifier",): 3959.0, ("identity",): 1063.0}


def test_parse_error_names_the_source() -> None:
    with pytest.raises(ParseError, match="http://x/metrics"):
        promtext.parse("this is { not metrics", "http://x/metrics")


def test_triton_stats_from_the_capture() -> None:
    stats = triton.stats_from_samples(promtext.parse(TRITON_TEXT), "t:8002", 100.0)
    c = stats.models["classifier"]
    assert (c.success, c.inferences, c.executions, c.queue_us) == (20, 50, 20, 3959)
    assert stats.gpu_utilization is None
    assert triton.batch_limit(CLASSIFIER_CONFIG) == 64
    assert triton.batch_limit({"max_batch_size": 8}) == 8
    assert triton.batch_limit({"max_batch_size": 0}) is None
    assert triton.batch_limit({"max_batch_size": 32,
                               "dynamic_batching": {"preferred_batch_size": [4, 8]}}) == 8


def later(text: str, **counters: float) -> str:
    """The captured text with the classifier's counters moved on (a second scrape)."""
    for name, value in counters.items():
        text = re.sub(rf'^({name}{{model="classifier",version="1"}}) \S+$', rf"\g<1> {value:g}",
                      text, flags=re.M)
    return text


def test_triton_collector_rates_between_scrapes() -> None:
    col = triton.TritonCollector(stale_after_s=5.0)
    col.record("cpu", triton.stats_from_samples(promtext.parse(TRITON_TEXT), "a", 100.0))
    first = col.read("cpu", 100.0)
    assert first.pending == 0 and isinstance(first.queue_time_s, NoData)
    text = later(TRITON_TEXT, nv_inference_request_success=120, nv_inference_count=850,
                 nv_inference_exec_count=70, nv_inference_queue_duration_us=503959,
                 nv_inference_pending_request_count=7)
    col.record("cpu", triton.stats_from_samples(promtext.parse(text), "a", 101.0))
    r = col.read("cpu", 101.0, model="classifier", batch_limits={"classifier": 64})
    assert r.pending == 7 and r.endpoints == 1
    assert r.queue_time_s == pytest.approx(0.5 / 100)          # 500 ms over 100 requests
    assert r.avg_batch == pytest.approx(800 / 50)
    assert r.batch_fill == pytest.approx(800 / (50 * 64))
    assert isinstance(r.gpu_utilization, NoData)
    unknown = col.read("cpu", 101.0, model="classifier")
    assert isinstance(unknown.batch_fill, NoData) and not unknown.batch_fill.idle


def test_triton_collector_idle_stale_and_restarts() -> None:
    col = triton.TritonCollector(stale_after_s=5.0)
    s = triton.stats_from_samples(promtext.parse(TRITON_TEXT), "a", 100.0)
    col.record("cpu", s)
    col.record("cpu", triton.TritonStats("a", 101.0, s.models, None))
    idle = col.read("cpu", 101.0)
    assert isinstance(idle.queue_time_s, NoData) and idle.queue_time_s.idle
    stale = col.read("cpu", 107.0)
    assert isinstance(stale.pending, NoData) and not stale.pending.idle and stale.endpoints == 0
    # a restarted Triton: counters drop, the delta is the new count
    restarted = later(TRITON_TEXT, nv_inference_request_success=4,
                      nv_inference_queue_duration_us=400, nv_inference_count=4,
                      nv_inference_exec_count=4)
    col.record("cpu", triton.stats_from_samples(promtext.parse(restarted), "a", 102.0))
    assert col.read("cpu", 102.0, "classifier").queue_time_s == pytest.approx(100e-6)


def test_gpu_utilization_from_triton_when_present() -> None:
    text = TRITON_TEXT + ('# TYPE nv_gpu_utilization gauge\n'
                          'nv_gpu_utilization{gpu_uuid="GPU-a"} 0.5\n'
                          'nv_gpu_utilization{gpu_uuid="GPU-b"} 0.9\n')
    col = triton.TritonCollector()
    col.record("gpu", triton.stats_from_samples(promtext.parse(text), "g", 1.0))
    assert col.read("gpu", 1.0).gpu_utilization == pytest.approx(0.7)


# --------------------------------------------------------------------------------------------
# gateway: /metrics -> GatewayStats -> fleet-wide readings
# --------------------------------------------------------------------------------------------

CONFIG = parse_config({
    "pools": {"cpu": {"endpoints": ["10.0.0.1:8000"]}, "gpu": {"endpoints": ["10.0.0.2:8000"]}},
    "models": {"classifier": {"pool": "cpu", "versions": {"2": {"pool": "gpu"}}},
               "embedder": {"pool": "gpu"}},
})
POOLS = PoolMap.from_config(CONFIG)
BUCKETS = (0.01, 0.1, 1.0)


def gateway_text(requests: dict[tuple[str, str], int], latencies: dict[tuple[str, str], list[
        float]], in_flight: dict[str, int], rejected: int = 0, queued: int | None = None) -> str:
    """/metrics as the gateway renders it (same prometheus-client classes and names)."""
    reg = CollectorRegistry()
    req = Counter("servegate_requests", "r", ["model", "endpoint", "protocol", "code_class"],
                  registry=reg)
    lat = Histogram("servegate_request_duration_seconds", "l", ["model", "endpoint", "protocol"],
                    buckets=BUCKETS, registry=reg)
    rej = Counter("servegate_rejected_requests", "x", ["model", "protocol", "code"], registry=reg)
    inf = Gauge("servegate_in_flight_requests", "i", ["model"], registry=reg)
    for (model, ep), n in requests.items():
        req.labels(model, ep, "http", "2xx").inc(n)
    for (model, ep), values in latencies.items():
        for v in values:
            lat.labels(model, ep, "http").observe(v)
    for model, n in in_flight.items():
        inf.labels(model).set(n)
    if rejected:
        rej.labels("classifier", "http", "503").inc(rejected)
        rej.labels("classifier", "http", "404").inc(1000)  # not demand
    if queued is not None:
        Gauge("servegate_queued_requests", "q", ["pool"], registry=reg).labels("cpu").set(queued)
    return generate_latest(reg).decode()


def test_gateway_stats_map_models_and_endpoints_to_pools() -> None:
    text = gateway_text({("classifier", "10.0.0.1:8000"): 10, ("classifier", "10.0.0.2:8000"): 4,
                         ("embedder", "10.0.0.2:8000"): 3},
                        {("classifier", "10.0.0.1:8000"): [0.005] * 10},
                        {"classifier": 2, "embedder": 1}, rejected=5, queued=3)
    stats = stats_from_samples(promtext.parse(text), "gw-0", 10.0, POOLS)
    cpu = stats.models[("cpu", "classifier")]
    assert cpu.in_flight == 2 and cpu.requests == 10 + 5  # + the 503s, not the 404s
    assert stats.models[("gpu", "classifier")].requests == 4  # served by v2's pool
    assert stats.models[("gpu", "embedder")] .in_flight == 1
    assert dict(cpu.buckets)[0.01] == 10 and dict(cpu.buckets)[math.inf] == 10
    assert stats.queued == {"cpu": 3}


def snapshot(source: str, at: float, requests: float, fast: float, slow: float,
             in_flight: float = 0.0) -> GatewayStats:
    """One replica: ``fast`` requests under 10 ms, ``slow`` ones between 0.1 and 1 s."""
    buckets = ((0.01, fast), (0.1, fast), (1.0, fast + slow), (math.inf, fast + slow))
    return GatewayStats(source, at, {("cpu", "m"): ModelCounters(in_flight, requests, buckets)})


def test_fleet_p99_comes_from_summed_bucket_deltas_not_averaged_quantiles() -> None:
    col = GatewayCollector(stale_after_s=5.0, p99_window_s=10.0)
    # replica a: 990 fast requests; replica b: 10 slow ones. Each replica's own p99 differs
    # wildly; the fleet's p99 (1000 requests, 10 slow) sits at the slow bucket's edge.
    for src, fast, slow in (("a", 990, 0), ("b", 0, 10)):
        col.record(snapshot(src, 100.0, 0, 0, 0))
        col.record(snapshot(src, 110.0, fast + slow, fast, slow, in_flight=3))
    r = col.read("cpu", 110.0)
    assert r.replicas == 2 and r.in_flight == 6
    assert r.arrival_rate == pytest.approx(100.0)
    assert r.p99_s == pytest.approx(0.01)  # rank 990 of 1000: the last fast request
    col.record(snapshot("b", 111.0, 30, 0, 30))
    assert col.read("cpu", 111.0).p99_s > 0.1  # now 30 of 1020 are slow


def test_gateway_readings_without_data() -> None:
    col = GatewayCollector(stale_after_s=5.0)
    none = col.read("cpu", 100.0)
    assert isinstance(none.in_flight, NoData) and none.replicas == 0
    col.record(snapshot("a", 100.0, 0, 0, 0))
    one = col.read("cpu", 100.0)
    assert one.in_flight == 0 and isinstance(one.arrival_rate, NoData)
    assert isinstance(one.queued, NoData)  # the gateway exports no queue yet: no data, not 0
    col.record(snapshot("a", 101.0, 0, 0, 0))
    quiet = col.read("cpu", 101.0)
    assert quiet.arrival_rate == 0
    assert isinstance(quiet.p99_s, NoData) and quiet.p99_s.idle
    assert isinstance(col.read("cpu", 107.0).in_flight, NoData)  # stale
    assert col.read("gpu", 101.0).in_flight == 0  # a pool this gateway never served


def test_gateway_restart_and_forget() -> None:
    col = GatewayCollector()
    col.record(snapshot("a", 100.0, 500, 500, 0))
    col.record(snapshot("a", 101.0, 20, 20, 0))  # restarted: counters from zero
    assert col.read("cpu", 101.0).arrival_rate == pytest.approx(20.0)
    col.forget([])
    assert col.read("cpu", 101.0).replicas == 0


def test_queued_adds_gateway_and_triton() -> None:
    assert sum_available(3.0, NoData("no gateway queue")) == 3.0
    assert isinstance(sum_available(NoData("a"), NoData("b")), NoData)


# --------------------------------------------------------------------------------------------
# the Redis hash schema (the gateway's publisher writes build_hash_fields)
# --------------------------------------------------------------------------------------------

def test_hash_fields_round_trip() -> None:
    stats = GatewayStats("gw-7", 1718000000.25, {
        ("cpu", "classifier"): ModelCounters(3, 1234, ((0.1, 1000), (1.0, 1230), (math.inf, 1234))),
        ("pool:with/odd chars", "m.v-1"): ModelCounters(0, 1, ((math.inf, 1),)),
    }, {"cpu": 7})
    fields = build_hash_fields(stats)
    assert fields["v"] == "1" and fields["ts"] == "1718000000.25"
    assert fields["q:cpu"] == "7.0"
    doc = json.loads(fields["m:cpu:classifier"])
    assert doc == {"in_flight": 3, "requests": 1234, "le": [0.1, 1.0, "+Inf"],
                   "counts": [1000, 1230, 1234]}
    assert "m:pool%3Awith%2Fodd%20chars:m.v-1" in fields
    raw = {k.encode(): v.encode() for k, v in fields.items()}  # as redis-py returns them
    assert parse_hash_fields("gw-7", raw) == stats
    assert stats_key("gw-7") == "servegate:gwstats:gw-7"


@pytest.mark.parametrize("fields", [
    {"v": "2", "ts": "1"}, {"v": "1"}, {"v": "1", "ts": "x"},
    {"v": "1", "ts": "1", "m:cpu": "{}"},
    {"v": "1", "ts": "1", "m:cpu:m": "not json"},
    {"v": "1", "ts": "1", "m:cpu:m": '{"le": [1], "counts": []}'},
])
def test_bad_hashes_are_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        parse_hash_fields("gw", fields)


# --------------------------------------------------------------------------------------------
# GPU utilization sources
# --------------------------------------------------------------------------------------------

# Written in the exporter's format (labels per REFERENCE §5): two GPUs of the cpu pool's pods,
# one idle GPU no pod holds, one seen through Prometheus relabelling (exported_*).
DCGM_TEXT = (FIXTURES / "dcgm_metrics.txt").read_text()


def test_dcgm_utilization_per_pool_pods() -> None:
    samples = promtext.parse(DCGM_TEXT)
    assert gpu.dcgm_utilization(samples, re.compile(r"triton-cpu-.*"), "serving") == \
        pytest.approx(0.6)
    assert gpu.dcgm_utilization(samples, re.compile(r"triton-gpu-.*")) == pytest.approx(1.0)
    assert gpu.dcgm_utilization(samples) == pytest.approx(0.55)
    assert isinstance(gpu.dcgm_utilization(samples, re.compile("other-.*")), NoData)


@pytest.mark.parametrize(("doc", "want"), [
    ({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1.0, "0.25"]}, {"metric": {}, "value": [1.0, "0.75"]}]}}, 0.5),
    ({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "0.4"]}}, 0.4),
    ({"status": "success", "data": {"resultType": "vector", "result": []}}, None),
    ({"status": "error", "error": "bad query"}, None),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, None),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "NaN"]}]}},
     None),
    ("not a dict", None),
])
def test_prometheus_query_answers(doc: object, want: float | None) -> None:
    got = gpu.prometheus_value(doc)
    if want is None:
        assert isinstance(got, NoData)
    else:
        assert got == pytest.approx(want)


def test_nvml_without_the_package_or_a_gpu_is_no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    reading = gpu.nvml_utilization()
    assert isinstance(reading, NoData) or 0.0 <= reading <= 1.0  # no GPU: no data, never 0
    monkeypatch.setitem(sys.modules, "pynvml", None)  # the package absent
    absent = gpu.nvml_utilization()
    assert isinstance(absent, NoData) and "not installed" in absent.reason
