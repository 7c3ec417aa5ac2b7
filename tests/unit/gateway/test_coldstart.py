"""The cold-start buffer in synthetic time: hold, wake in order, deadlines, queue limits."""

from __future__ import annotations

import asyncio

import pytest

from contracts import EndpointConfig, parse_config
from contracts.config import ResidencyConfig
from gateway.errors import Unavailable
from gateway.metrics import GatewayMetrics
from gateway.pipeline.coldstart import ColdStart
from gateway.pipeline.runtime import Runtime
from router import NoEndpoint


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(enabled: bool = True, max_queue: int = 3,
         max_wait_s: float = 30) -> tuple[ColdStart, Runtime, list[str], Clock]:
    runtime = Runtime(parse_config({
        "pools": {"cold": {"cold_start": {"enabled": enabled, "max_queue": max_queue,
                                          "max_wait_s": max_wait_s},
                           "discovery": {"type": "local", "url": "http://127.0.0.1:1"}}},
        "models": {"m": {"pool": "cold"}},
    }))
    activated: list[str] = []
    clock = Clock()
    cs = ColdStart(runtime, GatewayMetrics(runtime, dict), activated.append, clock)
    return cs, runtime, activated, clock


def bring_up(runtime: Runtime, cs: ColdStart) -> None:
    runtime.set_endpoints("cold", [EndpointConfig(http="127.0.0.1:9")])
    cs.notify("cold")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_waiters_are_held_activated_once_and_woken_in_arrival_order() -> None:
    cs, runtime, activated, clock = make()
    order: list[int] = []

    async def request(i: int) -> None:
        await cs.wait("cold", None)
        order.append(i)

    tasks = [asyncio.create_task(request(i)) for i in range(3)]
    await settle()
    assert cs.queued() == {"cold": 3} and activated == ["cold"]
    assert all(not t.done() for t in tasks)
    clock.now += 4.0
    bring_up(runtime, cs)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and cs.queued() == {"cold": 0}


async def test_full_queue_is_503_with_retry_after() -> None:
    cs, _, _, _ = make(max_queue=1)
    first = asyncio.create_task(cs.wait("cold", None))
    await settle()
    with pytest.raises(Unavailable, match="queue is full") as err:
        await cs.wait("cold", None)
    assert err.value.retry_after_s >= 1
    first.cancel()


async def test_deadline_before_predicted_ready_is_answered_at_once() -> None:
    cs, runtime, _, clock = make()
    waiter = asyncio.create_task(cs.wait("cold", None))
    await settle()
    clock.now += 10.0  # this pool takes 10 s to start
    bring_up(runtime, cs)
    await waiter
    runtime.set_endpoints("cold", [])  # back to zero
    clock.now += 100
    with pytest.raises(Unavailable, match=r"ready in about 10\.0s") as err:
        await cs.wait("cold", 2.0)
    assert err.value.retry_after_s == 10
    # A request with a longer deadline is held.
    held = asyncio.create_task(cs.wait("cold", 15.0))
    await settle()
    assert not held.done()
    held.cancel()


async def test_wait_runs_out_as_503() -> None:
    cs, _, _, _ = make(max_wait_s=0.05)
    with pytest.raises(Unavailable, match="no ready endpoint within"):
        await cs.wait("cold", None)
    assert cs.queued() == {"cold": 0}


async def test_pool_without_cold_start_fails_fast() -> None:
    cs, _, activated, _ = make(enabled=False)
    with pytest.raises(NoEndpoint):
        await cs.wait("cold", None)
    assert activated == []


async def test_notify_without_ready_endpoint_keeps_waiting() -> None:
    cs, _, _, _ = make()
    waiter = asyncio.create_task(cs.wait("cold", None))
    await settle()
    cs.notify("cold")
    await settle()
    assert not waiter.done()
    waiter.cancel()


async def test_drain_answers_held_requests_503_at_its_deadline() -> None:
    cs, _, _, _ = make()
    waiters = [asyncio.create_task(cs.wait("cold", None)) for _ in range(2)]
    await settle()
    cs.drain(0.05)
    await settle()
    assert not any(w.done() for w in waiters)  # still held until the deadline
    for w in waiters:
        with pytest.raises(Unavailable, match="shutting down") as err:
            await w
        assert err.value.retry_after_s >= 1
    assert cs.queued() == {"cold": 0}


async def test_drain_still_serves_a_pool_that_becomes_ready_in_time() -> None:
    cs, runtime, _, _ = make()
    waiter = asyncio.create_task(cs.wait("cold", None))
    await settle()
    cs.drain(30.0)
    bring_up(runtime, cs)
    assert await waiter >= 0.0


async def test_wait_starting_after_the_drain_deadline_is_answered_at_once() -> None:
    cs, _, activated, clock = make()
    cs.drain(1.0)
    clock.now += 2.0
    with pytest.raises(Unavailable, match="shutting down"):
        await cs.wait("cold", None)
    assert cs.queued() == {"cold": 0}
    # One that starts before the deadline is held, at most until it.
    clock.now -= 1.5
    held = asyncio.create_task(cs.wait("cold", None))
    await settle()
    assert not held.done() and activated == ["cold"]
    held.cancel()


# ------------------------------------------------- model loads in a model-managed pool

def residency(max_queue: int = 2, max_wait_s: float = 30) -> ResidencyConfig:
    return ResidencyConfig(max_queue=max_queue, max_wait_s=max_wait_s)


async def test_model_waiters_released_when_ready_and_prediction_learned() -> None:
    cs, _, _, clock = make()
    waits = [asyncio.create_task(cs.wait_for_model("zoo", "m1", residency(), None))
             for _ in range(2)]
    await settle()
    assert cs.model_queued("zoo", "m1") == 2 and cs.queued() == {}  # not a pool cold start
    with pytest.raises(Unavailable, match="'m1' is loading and its queue is full"):
        await cs.wait_for_model("zoo", "m1", residency(), None)
    clock.now += 2.0
    cs.model_ready("zoo", "m1")
    assert await asyncio.gather(*waits) == [2.0, 2.0]
    assert cs.model_queued("zoo", "m1") == 0
    # the pool's loads took ~2 s: a call whose deadline is 0.5 s is answered at once
    with pytest.raises(Unavailable, match=r"ready in about 2\.0s") as err:
        await cs.wait_for_model("zoo", "m2", residency(), 0.5)
    assert err.value.retry_after_s == 2


async def test_failed_load_answers_every_waiter_with_its_reason() -> None:
    cs, _, _, _ = make()
    waits = [asyncio.create_task(cs.wait_for_model("zoo", "m", residency(), None))
             for _ in range(2)]
    await settle()
    cs.model_failed("zoo", "m", "model 'm' could not be loaded: no such model", 4)
    for outcome in await asyncio.gather(*waits, return_exceptions=True):
        assert isinstance(outcome, Unavailable)
        assert "could not be loaded" in str(outcome) and outcome.retry_after_s == 4


async def test_model_wait_runs_out() -> None:
    cs, _, _, _ = make()
    with pytest.raises(Unavailable, match=r"'m' was not loaded within 0\.05s"):
        await cs.wait_for_model("zoo", "m", residency(max_wait_s=0.05), None)
    assert cs.model_queued("zoo", "m") == 0
