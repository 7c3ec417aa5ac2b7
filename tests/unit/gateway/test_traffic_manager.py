"""TrafficManager against the in-memory store: weights, pins, drains, rollouts, validation."""

from __future__ import annotations

import pytest

from contracts import parse_config
from gateway.adapters.state import MemoryStore
from gateway.errors import BadRequest, NotFound
from gateway.metrics import GatewayMetrics
from gateway.pipeline.runtime import Runtime
from gateway.traffic.fleetstats import sum_docs, window
from gateway.traffic.manager import TrafficManager
from gateway.traffic.rollouts import rollout_spec
from gateway.traffic.shadow import ShadowMirror
from router.rollout import RolloutSpec

CONFIG = {
    "pools": {"cpu": {"endpoints": ["a:1"]}, "canary": {"endpoints": ["b:1"]}},
    "models": {
        "clf": {"pool": "cpu", "versions": {"2": {"pool": "canary"}},
                "split": {"variants": {"stable": {"weight": 90},
                                       "canary": {"weight": 10, "version": 2}}}},
        "plain": {"pool": "cpu"},
    },
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def manager(clock: Clock) -> TrafficManager:
    runtime = Runtime(parse_config(CONFIG))
    metrics = GatewayMetrics(runtime, dict)
    return TrafficManager(runtime, MemoryStore(), ShadowMirror(metrics), clock=clock)


def _weights(m: TrafficManager) -> dict[str, float]:
    split = m.runtime.state.table.lookup("clf").split
    assert split is not None
    return split.weights()


async def test_set_weights_swaps_the_table(manager: TrafficManager) -> None:
    assert await manager.set_weights("clf", {"canary": 30}) == {"stable": 90, "canary": 30}
    assert _weights(manager) == {"stable": 90, "canary": 30}
    await manager.pin("clf", "canary")
    assert _weights(manager) == {"stable": 0, "canary": 100}
    with pytest.raises(BadRequest, match="above 0"):
        await manager.drain("clf", "canary")
    await manager.set_weights("clf", {"stable": 50})
    await manager.drain("clf", "canary")
    assert _weights(manager) == {"stable": 50, "canary": 0}


@pytest.mark.parametrize(("model", "weights", "error"), [
    ("clf", {"blue": 5}, BadRequest),
    ("clf", {"canary": -1}, BadRequest),
    ("clf", {"canary": float("nan")}, BadRequest),
    ("plain", {"x": 1}, NotFound),
])
async def test_bad_weights_are_rejected(manager: TrafficManager, model: str,
                                        weights: dict[str, float], error: type) -> None:
    with pytest.raises(error):
        await manager.set_weights(model, weights)
    assert _weights(manager) == {"stable": 90, "canary": 10}


async def test_weights_survive_a_config_reload(manager: TrafficManager) -> None:
    await manager.set_weights("clf", {"canary": 50})
    manager.runtime.apply(parse_config(CONFIG))
    assert _weights(manager) == {"stable": 90, "canary": 50}


async def test_rollout_rolls_back_a_failing_canary(manager: TrafficManager,
                                                   clock: Clock) -> None:
    spec = RolloutSpec(steps=(20, 100), interval_s=10, min_samples=50)
    doc = await manager.start_rollout("clf", "canary", None, spec)
    assert doc["weights"] == {"canary": 20, "stable": 80}
    assert _weights(manager) == {"stable": 80, "canary": 20}
    for i in range(200):
        manager.stats.record("clf", "stable", True, 0.01)
        manager.stats.record("clf", "canary", i % 3 != 0, 0.01)
    clock.now += 1
    await manager.drive_once()
    rollout = manager.rollout_doc("clf")
    assert rollout["status"] == "rolled_back"
    assert "error rate" in rollout["history"][-1]["reason"]
    assert _weights(manager) == {"stable": 100, "canary": 0}


async def test_rollout_promotes_a_healthy_canary(manager: TrafficManager, clock: Clock) -> None:
    spec = RolloutSpec(steps=(20, 100), interval_s=10, min_samples=50)
    await manager.start_rollout("clf", "canary", "stable", spec)
    for _ in range(3):
        for _ in range(100):
            manager.stats.record("clf", "stable", True, 0.01)
            manager.stats.record("clf", "canary", True, 0.01)
        clock.now += 11
        await manager.drive_once()
    doc = manager.rollout_doc("clf")
    assert doc["status"] == "promoted", doc["history"]
    assert [h["action"] for h in doc["history"]] == ["start", "step", "promoted"]
    assert _weights(manager) == {"stable": 0, "canary": 100}


async def test_operator_abort(manager: TrafficManager) -> None:
    await manager.start_rollout("clf", "canary", None, RolloutSpec())
    with pytest.raises(BadRequest, match="already running"):
        await manager.start_rollout("clf", "canary", None, RolloutSpec())
    doc = await manager.stop_rollout("clf", "abort")
    assert doc["status"] == "aborted" and _weights(manager)["canary"] == 0
    with pytest.raises(BadRequest, match="already aborted"):
        await manager.stop_rollout("clf", "promote")


def test_window_is_a_difference_of_fleet_sums() -> None:
    def doc(req: int, err: int) -> dict[str, object]:
        buckets = [0] * 14
        buckets[3] = req
        return {"m|v": {"requests": req, "errors": err, "buckets": buckets}}

    base = sum_docs([doc(10, 1)])
    now = sum_docs([doc(60, 6), doc(40, 0)])
    w = window(now, base, "m", "v")
    assert (w.requests, w.errors) == (90, 5)
    assert w.p99_s is not None and 0.005 < w.p99_s <= 0.01


@pytest.mark.parametrize(("body", "ok"), [
    ({"canary": "c"}, True),
    ({"canary": "c", "steps": [5, 50, 100], "interval_s": 5}, True),
    ({"canary": "c", "steps": [50, 5]}, False),
    ({"canary": "c", "steps": [0, 100]}, False),
    ({"canary": "c", "bogus": 1}, False),
])
def test_rollout_spec_from_body(body: dict[str, object], ok: bool) -> None:
    if ok:
        assert isinstance(rollout_spec(body), RolloutSpec)
    else:
        with pytest.raises(BadRequest):
            rollout_spec(body)
