"""gateway.pipeline.cost.CostMeter with the proxy: what a request is charged, the accounting tick,
the counters and the report. A scripted clock and send, no network."""

from __future__ import annotations

from random import Random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from contracts import parse_config
from gateway.errors import UpstreamConnectError, UpstreamTimeout
from gateway.pipeline.cost import CostMeter
from gateway.pipeline.pools import Endpoint
from gateway.pipeline.proxy import Proxy
from gateway.pipeline.runtime import Runtime
from router import NoEndpoint
from router.cost import ANONYMOUS, IDLE


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(gpus: float = 0.5, price: float = 3.6) -> tuple[Proxy, CostMeter, Clock,
                                                          CollectorRegistry]:
    config = parse_config({
        "pools": {"gpu": {"endpoints": ["10.0.0.1:8000", "10.0.0.2:8000"],
                          "cost": {"gpus_per_replica": gpus, "price_per_gpu_hour": price}},
                  "empty": {}},
        "models": {"m": {"pool": "gpu"}, "n": {"pool": "gpu"}, "z": {"pool": "empty"}},
        "cost": {"idle_half_life_s": 600},
    })
    clock = Clock()
    runtime = Runtime(config)
    proxy = Proxy(runtime, upstream=None, rng=Random(1), clock=clock)  # type: ignore[arg-type]
    registry = CollectorRegistry()
    meter = CostMeter(runtime, registry, clock=clock, wall=lambda: 60.0 * 20_000 + clock.now)
    proxy.cost = meter
    return proxy, meter, clock, registry


def sender(clock: Clock, seconds: float, error: Exception | None = None) -> Any:
    async def send(ep: Endpoint) -> str:
        clock.now += seconds
        if error is not None:
            raise error
        return "ok"
    return send


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    total = 0.0
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def test_requests_are_charged_their_backend_time_and_sums_match_the_pool() -> None:
    proxy, meter, clock, reg = setup()
    route = proxy.route("m", "")
    for _ in range(3):
        await proxy.call(route, lambda p: p.endpoints, sender(clock, 0.1), charge="acme")
    await proxy.call(proxy.route("n", ""), lambda p: p.endpoints, sender(clock, 0.1),
                     charge="globex")
    clock.now += 9.6  # 10 s since the meter started
    meter.tick()
    pool = value(reg, "servegate_pool_gpu_seconds_total", pool="gpu")
    assert pool == pytest.approx(2 * 0.5 * 10)  # 2 ready x 0.5 GPU x 10 s
    acme = value(reg, "servegate_cost_gpu_seconds_total", pool="gpu", model="m", tenant="acme")
    globex = value(reg, "servegate_cost_gpu_seconds_total", pool="gpu", model="n",
                   tenant="globex")
    assert acme == pytest.approx(3 * globex)  # 3:1 in busy time, and so in idle share
    assert acme + globex == pytest.approx(pool)
    assert value(reg, "servegate_cost_requests_total", tenant="acme") == 3
    assert value(reg, "servegate_cost_dollars_total", tenant="acme") == pytest.approx(
        acme * 3.6 / 3600)
    busy = acme - value(reg, "servegate_cost_idle_gpu_seconds_total", tenant="acme")
    assert busy == pytest.approx(0.3 * 0.5)  # endpoint busy 0.3 s at half a GPU


async def test_refused_and_connect_failed_requests_cost_nothing() -> None:
    proxy, meter, clock, reg = setup()
    with pytest.raises(NoEndpoint):  # the empty pool: nothing is sent
        await proxy.call(proxy.route("z", ""), lambda p: p.endpoints, sender(clock, 1),
                         charge="acme")
    route = proxy.route("m", "")
    with pytest.raises(Exception, match="accepted a connection"):
        await proxy.call(route, lambda p: p.endpoints,
                         sender(clock, 0.2, UpstreamConnectError("x", "refused")), charge="acme")
    with pytest.raises(UpstreamTimeout):  # reached the backend but no answer: not an inference
        await proxy.call(route, lambda p: p.endpoints,
                         sender(clock, 0.2, UpstreamTimeout("x", "read")), charge="acme")
    await proxy.call(route, lambda p: p.endpoints, sender(clock, 0.2), charge=None)  # metadata
    clock.now += 1
    meter.tick()
    assert value(reg, "servegate_cost_requests_total") == 0
    assert value(reg, "servegate_cost_gpu_seconds_total", tenant="acme") == 0
    # Nobody was charged: the provisioned time is idle on its own row.
    assert value(reg, "servegate_cost_gpu_seconds_total", pool="gpu", model=IDLE,
                 tenant=IDLE) == pytest.approx(value(reg, "servegate_pool_gpu_seconds_total",
                                                     pool="gpu"))
    assert value(reg, "servegate_pool_gpu_seconds_total", pool="empty") == 0


async def test_auth_off_is_the_anonymous_tenant_and_slots_are_reused() -> None:
    _proxy, meter, _clock, _ = setup()
    assert meter.slot("gpu", "m", None) is meter.slot("gpu", "m", ANONYMOUS)
    assert meter.slot("gpu", "m", "acme") is meter.slot("gpu", "m", "acme")


async def test_overlapping_requests_count_endpoint_busy_time_once() -> None:
    proxy, meter, clock, reg = setup(gpus=1.0)
    ep = proxy.runtime.state.pools["gpu"].endpoints[0]
    ep.begin(clock.now)          # a long request outstanding over the tick boundary
    ep.begin(clock.now + 0.5)    # and another one overlapping it
    clock.now += 1.0
    ep.end(clock.now)
    meter.slot("gpu", "m", "acme").busy_s += 1.5  # the two requests' own times
    clock.now += 1.0
    meter.tick()
    busy = value(reg, "servegate_cost_gpu_seconds_total", tenant="acme") - value(
        reg, "servegate_cost_idle_gpu_seconds_total", tenant="acme")
    assert busy == pytest.approx(2.0)  # 2 s with something outstanding, not 1.5 + 2
    ep.end(clock.now)


def test_report_sums_rows_and_pools() -> None:
    _proxy, meter, clock, _ = setup()
    meter.slot("gpu", "m", "acme").busy_s += 0.5
    meter.slot("gpu", "m", "acme").requests += 10
    clock.now += 30
    meter.tick()
    doc = meter.report(3600, "1h")
    (pool,) = [p for p in doc["pools"] if p["pool"] == "gpu"]
    assert pool["gpu_seconds"] == pytest.approx(30) and pool["requests"] == 10
    assert pool["gpus_per_replica"] == 0.5 and pool["capacity"] == "on_demand"
    assert sum(r["gpu_seconds"] for r in doc["rows"] if r["pool"] == "gpu") == pytest.approx(30)
    (acme,) = [r for r in doc["rows"] if r["tenant"] == "acme"]
    assert acme["dollars_per_1k"] == pytest.approx(30 * 3.6 / 3600 * 100)
    assert doc["accounted_s"] == pytest.approx(30)


def fallback_proxy() -> tuple[Proxy, CostMeter, Clock]:
    config = parse_config({
        "pools": {"spot": {"endpoints": ["10.0.0.1:8000"], "fallback_pool": "ondemand",
                           "cost": {"capacity": "spot", "spot_price_per_gpu_hour": 1.0}},
                  "ondemand": {"endpoints": ["10.0.1.1:8000"]}},
        "models": {"m": {"pool": "spot"}},
    })
    clock = Clock()
    runtime = Runtime(config)
    proxy = Proxy(runtime, upstream=None, rng=Random(1), clock=clock)  # type: ignore[arg-type]
    proxy.cost = CostMeter(runtime, CollectorRegistry(), clock=clock)
    return proxy, proxy.cost, clock


async def test_a_pool_with_nothing_to_offer_sends_to_its_fallback_and_charges_it() -> None:
    proxy, meter, clock = fallback_proxy()
    route = proxy.route("m", "")
    _, ep = await proxy.call(route, lambda p: p.endpoints, sender(clock, 0.1), charge="acme")
    assert ep.pool == "spot"
    # the spot endpoint is reclaimed (discovery drops it; here: a reload without it)
    spot = proxy.runtime.state.pools["spot"]
    spot.endpoints.clear()
    _, ep = await proxy.call(route, lambda p: p.endpoints, sender(clock, 0.1), charge="acme")
    assert ep.pool == "ondemand"
    assert meter.slot("ondemand", "m", "acme").requests == 1
    assert meter.slot("spot", "m", "acme").requests == 1
    proxy.runtime.state.pools["ondemand"].endpoints.clear()
    with pytest.raises(NoEndpoint):
        await proxy.call(route, lambda p: p.endpoints, sender(clock, 0.1), charge="acme")


def test_fallback_pool_config_is_checked() -> None:
    from contracts import ConfigError

    def bad(pools: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as info:
            parse_config({"pools": pools, "models": {"m": {"pool": "a"}}})
        return str(info.value)

    assert "unknown pool 'z'" in bad({"a": {"fallback_pool": "z"}})
    assert "its own fallback" in bad({"a": {"fallback_pool": "a"}})
    assert "one hop" in bad({"a": {"fallback_pool": "b"}, "b": {"fallback_pool": "c"}, "c": {}})


async def test_a_busy_pool_spills_onto_a_less_loaded_fallback() -> None:
    config = parse_config({
        "pools": {"spot": {"endpoints": ["10.0.0.1:8000"], "fallback_pool": "ondemand",
                           "fallback_spill_at": 4},
                  "ondemand": {"endpoints": ["10.0.1.1:8000"]}},
        "models": {"m": {"pool": "spot"}},
    })
    clock = Clock()
    runtime = Runtime(config)
    proxy = Proxy(runtime, upstream=None, rng=Random(1), clock=clock)  # type: ignore[arg-type]
    proxy.cost = meter = CostMeter(runtime, CollectorRegistry(), clock=clock)
    route = proxy.route("m", "")
    (spot,) = runtime.state.pools["spot"].endpoints
    (ondemand,) = runtime.state.pools["ondemand"].endpoints

    async def pool_of_call() -> str:
        _, ep = await proxy.call(route, lambda p: p.endpoints, sender(clock, 0.01),
                                 charge="acme")
        return ep.pool

    spot.outstanding = 3  # below the spill point: stays on spot
    assert await pool_of_call() == "spot"
    spot.outstanding = 4
    assert await pool_of_call() == "ondemand"
    assert meter.slot("ondemand", "m", "acme").requests == 1
    ondemand.outstanding = 4  # the fallback is no less loaded: stay
    assert await pool_of_call() == "spot"
    ondemand.outstanding = 0
    ondemand.failed(clock.now, config.pools["ondemand"].health, "x")
    ondemand.failed(clock.now, config.pools["ondemand"].health, "x")
    ondemand.failed(clock.now, config.pools["ondemand"].health, "x")
    assert not ondemand.admitted
    assert await pool_of_call() == "spot"  # an ejected fallback endpoint takes no spill


def test_spill_needs_a_fallback() -> None:
    from contracts import ConfigError

    with pytest.raises(ConfigError, match="needs a fallback_pool"):
        parse_config({"pools": {"a": {"fallback_spill_at": 2}}, "models": {"m": {"pool": "a"}}})
