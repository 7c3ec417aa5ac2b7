"""gateway.pipeline.proxy.Proxy with the circuit breaker: the half-open trial is one real request,
its outcome closes or re-opens the circuit, a cancelled trial frees the slot, 502/503/504 answers
count when ``eject_on_5xx`` is on, and the circuit-state gauge. Synthetic clock, fake sends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from random import Random
from typing import Any

import pytest

from contracts import parse_config
from gateway.adapters.upstream import UpstreamResponse
from gateway.errors import UpstreamConnectError
from gateway.metrics import GatewayMetrics
from gateway.pipeline.pools import Endpoint
from gateway.pipeline.proxy import Proxy, all_endpoints
from gateway.pipeline.runtime import Runtime
from router.health import CLOSED, HALF_OPEN, OPEN


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Answers:
    """An upstream that answers each endpoint with a fixed status, or refuses connections."""

    def __init__(self) -> None:
        self.status: dict[int, int] = {}  # port -> status; missing: 200
        self.refuse: set[int] = set()
        self.calls: list[int] = []

    async def request(self, host: str, port: int, *args: Any) -> UpstreamResponse:
        self.calls.append(port)
        if port in self.refuse:
            raise UpstreamConnectError(f"{host}:{port}", "connect failed: refused")
        return UpstreamResponse(self.status.get(port, 200), [], b"{}")

    async def aclose(self) -> None:
        pass


def make(endpoints: int = 2, **health: Any) -> tuple[Proxy, Answers, Clock, list[Endpoint]]:
    config = parse_config({
        "pools": {"cpu": {
            "endpoints": [f"10.0.0.{i}:{8000 + i}" for i in range(endpoints)],
            "health": {"active_probes": False, "eject_after_failures": 1, "min_eject_s": 5.0,
                       "max_eject_s": 30.0, **health},
        }},
        "models": {"m": {"pool": "cpu"}},
    })
    clock, upstream = Clock(), Answers()
    proxy = Proxy(Runtime(config), upstream, rng=Random(7), clock=clock)
    return proxy, upstream, clock, proxy.runtime.state.pools["cpu"].endpoints


async def forward(proxy: Proxy) -> tuple[int, Endpoint]:
    """One HTTP call as the pipeline makes it: any endpoint, the pool's 5xx rule."""
    route = proxy.route("m", "")

    def send(ep: Endpoint) -> Awaitable[UpstreamResponse]:
        return proxy.upstream.request(ep.host, ep.port, b"POST", b"/v2/models/m/infer", [],
                                      b"{}", 1.0, 1.0)

    response, ep = await proxy.call(route, all_endpoints, send,
                                    unhealthy=proxy.unhealthy_rule(route, _status))
    return response.status, ep


def _status(response: UpstreamResponse) -> int:
    return response.status


def eject(proxy: Proxy, ep: Endpoint, now: float) -> None:
    ep.failed(now, proxy.runtime.state.pools["cpu"].config.health, "refused")
    assert not ep.admitted


async def test_trial_refused_is_retried_elsewhere_and_backs_off() -> None:
    proxy, upstream, clock, (dead, live) = make()
    upstream.refuse.add(dead.port)
    eject(proxy, dead, 100.0)
    # open: nothing goes to the dead endpoint
    for _ in range(20):
        assert await forward(proxy) == (200, live)
    assert dead.port not in upstream.calls
    # half-open after 5 s: within a few requests one is the trial; it is refused, and that
    # request is answered by the live endpoint, not lost
    clock.now = 105.0
    for _ in range(40):
        assert await forward(proxy) == (200, live)
    assert upstream.calls.count(dead.port) == 1
    assert dead.health.open_s == 10.0 and dead.health.retry_at == 115.0
    clock.now = 114.9
    for _ in range(20):
        await forward(proxy)
    assert upstream.calls.count(dead.port) == 1
    clock.now = 115.0
    for _ in range(40):
        await forward(proxy)
    assert upstream.calls.count(dead.port) == 2 and dead.health.open_s == 20.0


async def test_successful_trial_closes_the_circuit() -> None:
    proxy, _, clock, (back, live) = make()
    eject(proxy, back, 100.0)
    clock.now = 106.0
    served: set[Endpoint] = set()
    for _ in range(40):
        served.add((await forward(proxy))[1])
    assert back.admitted and served == {back, live}


async def test_only_endpoint_half_open_serves_its_trial() -> None:
    proxy, _, clock, (only,) = make(endpoints=1)
    eject(proxy, only, 100.0)
    clock.now = 105.0
    assert await forward(proxy) == (200, only)
    assert only.admitted


async def test_cancelled_trial_frees_the_slot() -> None:
    proxy, _, clock, (ep,) = make(endpoints=1)
    eject(proxy, ep, 100.0)
    clock.now = 105.0
    started = asyncio.Event()

    async def hang(endpoint: Endpoint) -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(proxy.call(proxy.route("m", ""), lambda p: p.endpoints, hang))
    await started.wait()
    assert ep.health.trial_at == 105.0
    assert proxy.runtime.state.pools["cpu"].endpoints[0].health.retry_at == 135.0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ep.health.trial_at is None and not ep.admitted and ep.outstanding == 0
    assert await forward(proxy) == (200, ep)  # the next request is the trial, and closes it
    assert ep.admitted


@pytest.mark.parametrize(("status", "counts"), [
    (502, True), (503, True), (504, True), (500, False), (400, False), (200, False)])
async def test_unhealthy_status_counts_only_when_enabled(status: int, counts: bool) -> None:
    for enabled in (False, True):
        proxy, upstream, _, (ep,) = make(endpoints=1, eject_after_failures=3,
                                         eject_on_5xx=enabled)
        upstream.status[ep.port] = status
        for _ in range(3):
            assert await forward(proxy) == (status, ep)  # the answer goes back as it came
        assert ep.admitted == (not (enabled and counts)), (status, enabled)
        if enabled and counts:
            assert ep.health.reason == f"HTTP {status}"


async def test_unhealthy_status_fails_the_trial() -> None:
    proxy, upstream, clock, (ep,) = make(endpoints=1, eject_on_5xx=True)
    upstream.status[ep.port] = 503
    eject(proxy, ep, 100.0)
    clock.now = 105.0
    assert await forward(proxy) == (503, ep)
    assert not ep.admitted and ep.health.open_s == 10.0


def test_circuit_state_gauge() -> None:
    proxy, _, clock, (a, b) = make()
    metrics = GatewayMetrics(proxy.runtime, dict, clock=clock)

    def state(ep: Endpoint) -> float | None:
        return metrics.registry.get_sample_value(
            "servegate_endpoint_circuit_state", {"pool": "cpu", "endpoint": ep.address})

    assert (state(a), state(b)) == (CLOSED, CLOSED)
    eject(proxy, a, 100.0)
    assert state(a) == OPEN
    clock.now = 105.0
    assert state(a) == HALF_OPEN
    proxy.pick(proxy.runtime.state.pools["cpu"], [a])  # the trial starts
    assert a.health.trial_at == 105.0 and state(a) == HALF_OPEN
    a.succeeded()
    assert state(a) == CLOSED and state(b) == CLOSED
