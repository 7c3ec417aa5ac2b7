"""The autoscaler process in-process: its HTTP contract (/status, /metrics, /activate,
/pools/{pool}/endpoints), activation latency, and a clean stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from autoscaler.actuators.local import Endpoint
from autoscaler.main import Autoscaler, AutoscalerSettings
from autoscaler.signals.promtext import parse
from autoscaler.status import StatusServer, create_app
from contracts import parse_config

CONFIG = {
    "pools": {"cpu": {"endpoints": []}, "gpu": {"endpoints": []}},
    "models": {"classifier": {"pool": "cpu"}, "big": {"pool": "gpu"}},
    "autoscaling": {
        "controller": {"tick_s": 30},  # only activations move the loop in these tests
        "pools": {
            "cpu": {"targets": {"concurrency_per_replica": 4}},
            "gpu": {"min_replicas": 1, "targets": {"queue_per_replica": 10}},
        },
    },
}


class TimedActuator:
    def __init__(self) -> None:
        self.size = {"cpu": 0, "gpu": 1}
        self.calls: list[tuple[str, int, float]] = []
        self.called = asyncio.Event()

    async def current(self, pool: str) -> int:
        return self.size[pool]

    async def scale(self, pool: str, replicas: int) -> None:
        self.calls.append((pool, replicas, time.monotonic()))
        self.size[pool] = replicas
        self.called.set()


@pytest.fixture()
async def running() -> AsyncIterator[tuple[Autoscaler, httpx.AsyncClient]]:
    settings = AutoscalerSettings(Path("servegate.yaml"), actuator="none", host="127.0.0.1",
                                  status_port=0)
    stop = asyncio.Event()
    async with Autoscaler(settings, config=parse_config(CONFIG)) as a:
        assert a.controller is not None
        a.controller.actuator = TimedActuator()
        task = asyncio.create_task(a.run(stop))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{a.status_port}") as client:
            yield a, client
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_activate_reaches_the_actuator_within_100ms(
        running: tuple[Autoscaler, httpx.AsyncClient]) -> None:
    a, client = running
    assert a.controller is not None
    actuator: Any = a.controller.actuator
    started = time.monotonic()
    r = await client.post("/activate", json={"pool": "cpu"})
    assert r.status_code == 202 and r.json() == {"pool": "cpu", "activated": True}
    await asyncio.wait_for(actuator.called.wait(), 1.0)
    pool, replicas, at = actuator.calls[0]
    assert (pool, replicas) == ("cpu", 1)
    assert at - started < 0.1, f"activation took {(at - started) * 1000:.0f} ms"


@pytest.mark.parametrize(("body", "status"), [
    (b'{"pool": "nope"}', 404), (b"not json", 400), (b'["cpu"]', 400), (b'{"pool": 3}', 400),
    (b"{}", 400)])
async def test_activate_rejects_bad_requests(running: tuple[Autoscaler, httpx.AsyncClient],
                                             body: bytes, status: int) -> None:
    _, client = running
    r = await client.post("/activate", content=body)
    assert r.status_code == status and "error" in r.json()


async def test_status_and_metrics(running: tuple[Autoscaler, httpx.AsyncClient]) -> None:
    a, client = running
    assert a.controller is not None
    await a.controller.step("gpu")
    doc = (await client.get("/status")).json()
    assert doc["actuator"] == "none" and doc["leader"] is True
    assert set(doc["pools"]) == {"cpu", "gpu"}
    gpu = doc["pools"]["gpu"]
    assert gpu["desired"] == 1 and gpu["current"] == 1 and gpu["decisions"]
    assert gpu["reason"].startswith("1 by none")
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    names = {s.name for s in parse(metrics.text)}
    assert {"servegate_autoscaler_desired_replicas", "servegate_autoscaler_demand",
            "servegate_autoscaler_decision_info", "servegate_autoscaler_current_replicas",
            "servegate_autoscaler_leader"} <= names
    assert (await client.get("/healthz")).text == "ok"


async def test_endpoints_need_the_local_actuator(
        running: tuple[Autoscaler, httpx.AsyncClient]) -> None:
    _, client = running
    r = await client.get("/pools/cpu/endpoints")
    assert r.status_code == 404 and "local actuator" in r.json()["error"]


class FakeEndpoints:
    def __init__(self) -> None:
        self.version = 0
        self.eps: list[Endpoint] = []
        self.changed = asyncio.Event()

    def publish(self, eps: list[Endpoint]) -> None:
        self.version += 1
        self.eps = eps
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_endpoints(self, pool: str, version: int | None,
                             wait_s: float) -> tuple[int, list[Endpoint]]:
        if version == self.version:
            try:
                async with asyncio.timeout(wait_s):
                    await self.changed.wait()
            except TimeoutError:
                pass
        return self.version, self.eps


async def test_endpoints_long_poll_returns_on_change() -> None:
    settings = AutoscalerSettings(Path("x.yaml"), status_port=0)
    async with Autoscaler(settings, config=parse_config(CONFIG)) as a:
        assert a.controller is not None
        eps = FakeEndpoints()
        app = create_app(a.controller, "local", eps)
        async with StatusServer(app, "127.0.0.1", 0) as server, \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            first = (await client.get("/pools/cpu/endpoints")).json()
            assert first == {"pool": "cpu", "version": 0, "endpoints": []}
            waiting = asyncio.create_task(
                client.get("/pools/cpu/endpoints", params={"version": 0, "wait_s": 5}))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            eps.publish([Endpoint("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")])
            r = await asyncio.wait_for(waiting, 2)
            assert r.json() == {"pool": "cpu", "version": 1, "endpoints": [
                {"http": "127.0.0.1:1", "grpc": "127.0.0.1:2", "metrics": "127.0.0.1:3"}]}
            started = time.monotonic()
            r = await client.get("/pools/cpu/endpoints", params={"version": 1, "wait_s": 0.2})
            assert r.json()["version"] == 1 and 0.15 < time.monotonic() - started < 2
            r = await client.get("/pools/cpu/endpoints", params={"version": 0, "wait_s": 5})
            assert r.json()["version"] == 1  # differs already: at once
            assert (await client.get("/pools/nope/endpoints")).status_code == 404
            bad = await client.get("/pools/cpu/endpoints", params={"version": "x"})
            assert bad.status_code == 400


async def test_stop_ends_every_task() -> None:
    settings = AutoscalerSettings(Path("x.yaml"), actuator="hpa", host="127.0.0.1",
                                  status_port=0)
    stop = asyncio.Event()
    async with Autoscaler(settings, config=parse_config(CONFIG)) as a:
        task = asyncio.create_task(a.run(stop))
        for _ in range(5):
            await asyncio.sleep(0)
        assert any(t.get_name() == "decide-cpu" for t in asyncio.all_tasks())
        stop.set()
        await asyncio.wait_for(task, 5)
    assert not {t.get_name() for t in asyncio.all_tasks()} & {
        "controller", "collect", "decide-cpu", "decide-gpu", "stop"}


def test_a_config_without_autoscaling_pools_is_a_setup_error() -> None:
    from autoscaler.errors import SetupError

    cfg = parse_config({"pools": {"p": {}}, "models": {"m": {"pool": "p"}}})
    with pytest.raises(SetupError, match=r"no 'autoscaling\.pools'"):
        Autoscaler(AutoscalerSettings(Path("x.yaml")), config=cfg)
