"""gateway.pipeline.residency.Residency with a scripted upstream (the real Triton runs in
tests/integration/test_multimodel.py): single flight, the index race, backoff, idle unload,
and the proxy's managed-pool path."""

from __future__ import annotations

import asyncio
import json
from random import Random
from typing import Any

import pytest

from contracts import parse_config
from gateway.adapters.upstream import UpstreamResponse
from gateway.errors import Unavailable
from gateway.metrics import GatewayMetrics
from gateway.pipeline.coldstart import ColdStart, ColdWait
from gateway.pipeline.pools import Endpoint
from gateway.pipeline.proxy import Proxy
from gateway.pipeline.residency import Residency
from gateway.pipeline.runtime import Runtime

A, B = "10.0.0.1:8000", "10.0.0.2:8000"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedTriton:
    """Two explicit-mode Tritons as the upstream sees them: index, load, unload."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.held: dict[str, set[str]] = {A: set(), B: set()}
        self.calls: list[tuple[str, str]] = []
        self.load_gate = asyncio.Event()
        self.load_gate.set()

    async def request(self, host: str, port: int, method: bytes, target: bytes,
                      headers: Any, body: bytes, connect_s: float,
                      read_s: float) -> UpstreamResponse:
        address, path = f"{host}:{port}", target.decode()
        self.calls.append((address, path))
        if path == "/v2/repository/index":
            doc = [{"name": m, "version": "1", "state": "READY"}
                   for m in sorted(self.held[address])]
            return UpstreamResponse(200, [], json.dumps(doc).encode())
        model, action = path.split("/")[-2:]
        if action == "load":
            await self.load_gate.wait()
            if model not in self.known:
                return UpstreamResponse(400, [], json.dumps(
                    {"error": f"failed to load '{model}'"}).encode())
            self.held[address].add(model)
        else:
            self.held[address].discard(model)
        return UpstreamResponse(200, [], b"")

    def count(self, suffix: str) -> int:
        return sum(1 for _, p in self.calls if p.endswith(suffix))


def make(capacity: int = 1, **residency: Any) -> tuple[Proxy, Residency, ScriptedTriton, Clock]:
    config = parse_config({
        "pools": {
            "zoo": {"endpoints": [A, B], "model_control": "explicit",
                    "capacity": {"models": capacity},
                    "residency": {"idle_grace_s": 60, "min_residency_s": 10, **residency}},
            "cpu": {"endpoints": [A]},
        },
        "models": {"m1": {"pool": "zoo"}, "m2": {"pool": "zoo"}, "m3": {"pool": "zoo"},
                   "gone": {"pool": "zoo"}, "plain": {"pool": "cpu"}},
    })
    runtime = Runtime(config)
    clock = Clock()
    triton = ScriptedTriton({"m1", "m2", "m3", "plain"})
    proxy = Proxy(runtime, triton, rng=Random(1), clock=clock)  # type: ignore[arg-type]
    metrics = GatewayMetrics(runtime, lambda: proxy.in_flight)
    coldstart = ColdStart(runtime, metrics, clock=clock)
    res = Residency(runtime, triton, coldstart, metrics.registry,  # type: ignore[arg-type]
                    lambda: proxy.in_flight, clock=clock)
    proxy.coldstart, proxy.residency = coldstart, res
    return proxy, res, triton, clock


async def infer(proxy: Proxy, model: str) -> tuple[str, ColdWait]:
    cold = ColdWait()

    async def send(ep: Endpoint) -> str:
        return ep.address

    address, _ = await proxy.call(proxy.route(model, ""), lambda p: p.endpoints, send, cold)
    return address, cold


async def test_one_load_for_concurrent_calls_then_hits() -> None:
    proxy, res, triton, clock = make()
    triton.load_gate.clear()
    calls = [asyncio.create_task(infer(proxy, "m1")) for _ in range(5)]
    for _ in range(10):
        await asyncio.sleep(0)
    assert res.index_state("zoo", "m1") == ("UNAVAILABLE", "loading")
    clock.now += 1.5
    triton.load_gate.set()
    results = await asyncio.gather(*calls)
    assert triton.count("/m1/load") == 1
    assert {a for a, _ in results} == {A} and all(c.waited_s == 1.5 for _, c in results)
    address, cold = await infer(proxy, "m1")
    assert address == A and cold.waited_s == 0 and triton.count("/load") == 1
    assert res.index_state("zoo", "m1") == ("READY", "")
    assert res.index_state("zoo", "m2") == ("UNAVAILABLE", "not loaded")


async def test_full_pool_evicts_the_lru_model_after_min_residency() -> None:
    proxy, _, triton, clock = make()
    await infer(proxy, "m1")
    clock.now += 1
    await infer(proxy, "m2")  # the second endpoint's only slot
    clock.now += 20
    await infer(proxy, "m2")  # m2 used more recently than m1
    await infer(proxy, "m3")
    assert triton.held == {A: {"m3"}, B: {"m2"}}
    assert ("10.0.0.1:8000", "/v2/repository/models/m1/unload") in triton.calls


async def test_failed_load_backs_off_then_retries() -> None:
    proxy, _, triton, clock = make(retry_backoff_s=2)
    with pytest.raises(Unavailable, match=r"'gone' could not be loaded in pool 'zoo'.*400"):
        await infer(proxy, "gone")
    with pytest.raises(Unavailable, match="next attempt in 2s"):
        await infer(proxy, "gone")
    assert triton.count("/gone/load") == 1
    clock.now += 2.5
    with pytest.raises(Unavailable, match="could not be loaded"):
        await infer(proxy, "gone")
    assert triton.count("/gone/load") == 2
    with pytest.raises(Unavailable, match="next attempt in 4s"):  # doubled
        await infer(proxy, "gone")


async def test_index_race_keeps_a_model_loaded_after_the_index_was_read() -> None:
    proxy, res, triton, clock = make()
    pool = proxy.runtime.state.pools["zoo"]
    index_started = asyncio.Event()
    release = asyncio.Event()
    original = triton.request

    async def slow_index(host: str, port: int, method: bytes, target: bytes,
                         *rest: Any) -> UpstreamResponse:
        if target == b"/v2/repository/index":
            response = await original(host, port, method, target, *rest)
            index_started.set()
            await release.wait()
            return response
        return await original(host, port, method, target, *rest)

    triton.request = slow_index  # type: ignore[method-assign]
    refresh = asyncio.create_task(res.refresh(pool))
    await index_started.wait()
    clock.now += 1
    await res.load_on(pool, pool.endpoints[0], "m1", clock.now + 10)
    release.set()
    await refresh
    assert res.index_state("zoo", "m1") == ("READY", "")


async def test_idle_models_unloaded_by_the_tick_and_others_ignored() -> None:
    proxy, res, triton, clock = make(capacity=2)
    triton.held[A].add("plain")  # an ordinary pool's model on the same server
    await infer(proxy, "m1")
    clock.now += 61
    await res.tick(proxy.runtime.state.pools["zoo"])
    assert triton.held[A] == {"plain"}
    assert res.index_state("zoo", "m1") == ("UNAVAILABLE", "not loaded")


async def test_ordinary_pool_never_reaches_residency() -> None:
    proxy, _, triton, _ = make()
    assert await infer(proxy, "plain") == (A, ColdWait())
    assert triton.calls == []


async def test_unknown_model_answer_drops_the_holding_and_calls_again() -> None:
    proxy, res, triton, _ = make()
    await infer(proxy, "m1")
    triton.held[A].discard("m1")  # unloaded behind this gateway's back (another gateway)
    answers: list[int] = []

    async def send(ep: Endpoint) -> UpstreamResponse:
        if "m1" in triton.held[ep.address]:
            answers.append(200)
            return UpstreamResponse(200, [], b"{}")
        answers.append(404)
        return UpstreamResponse(404, [], b'{"error":"Request for unknown model: \'m1\'"}')

    response, _ = await proxy.call(proxy.route("m1", ""), lambda p: p.endpoints, send,
                                   ColdWait())
    assert response.status == 200 and answers == [404, 200]
    assert triton.count("/m1/load") == 2
    assert res.metrics.stale.labels("zoo")._value.get() == 1


async def test_a_placement_takes_its_slot_before_evicting() -> None:
    proxy, res, triton, clock = make()
    await infer(proxy, "m1")
    clock.now += 1
    await infer(proxy, "m2")
    clock.now += 20  # both resident past min_residency_s, both idle: both evictable
    unload_gate = asyncio.Event()
    original = triton.request

    async def slow_unload(host: str, port: int, method: bytes, target: bytes,
                          *rest: Any) -> UpstreamResponse:
        if target.endswith(b"/unload"):
            await unload_gate.wait()
        return await original(host, port, method, target, *rest)

    triton.request = slow_unload  # type: ignore[method-assign]
    first = asyncio.create_task(infer(proxy, "m3"))
    for _ in range(10):
        await asyncio.sleep(0)
    view = res.view(proxy.runtime.state.pools["zoo"])
    assert view.loading[A] == frozenset({"m3"}) and view.held[A] == {}
    second = asyncio.create_task(infer(proxy, "gone"))  # must not take m3's slot on A
    for _ in range(10):
        await asyncio.sleep(0)
    unload_gate.set()
    assert (await first)[0] == A
    with pytest.raises(Unavailable):
        await second
    loads_on_a = [p for a, p in triton.calls if a == A and p.endswith("/load")]
    assert loads_on_a == ["/v2/repository/models/m1/load", "/v2/repository/models/m3/load"]


async def test_readiness_checks_neither_load_nor_keep_a_model() -> None:
    proxy, res, triton, clock = make()

    async def ready(model: str) -> str:
        async def send(ep: Endpoint) -> str:
            return ep.address

        address, _ = await proxy.call(proxy.route(model, ""), lambda p: p.endpoints, send,
                                      ColdWait(load=False))
        return address

    with pytest.raises(Unavailable, match="'m1' is not loaded in pool 'zoo'"):
        await ready("m1")
    assert triton.count("/load") == 0
    await infer(proxy, "m1")
    for _ in range(4):  # polled past the grace: still idle
        clock.now += 20
        assert await ready("m1") == A
    await res.tick(proxy.runtime.state.pools["zoo"])
    assert triton.held[A] == set()
