"""Spot interruptions: the pure loss tracker, the fallback floor, and the control loop
surging a fallback pool at once when its spot pool loses replicas (synthetic time)."""

from __future__ import annotations

import pytest

from autoscaler.collector import Collector
from autoscaler.loop import Controller
from autoscaler.policy import ScalerSpec, Targets
from autoscaler.policy.fallback import LossState, fallback_floor, track_loss
from tests.unit.autoscaler.test_autoscaler_loop import Clock, FakeActuator, ManualTicker


def test_a_drop_nobody_decided_is_lost_until_replaced() -> None:
    s = track_loss(LossState(), 4, 4)
    assert s.lost == 0
    s = track_loss(s, 1, 4)        # three reclaimed while the decision wanted four
    assert s.lost == 3
    s = track_loss(s, 1, 4)        # replacements pending (no spot capacity)
    assert s.lost == 3
    s = track_loss(s, 3, 4)        # two are back
    assert s.lost == 1
    s = track_loss(s, 4, 4)
    assert s.lost == 0


def test_a_decided_scale_down_is_no_loss_but_a_drop_below_it_is() -> None:
    s = LossState(ready=4, desired=2)  # last tick decided to go from 4 to 2
    assert track_loss(s, 2, 2).lost == 0
    assert track_loss(s, 1, 2).lost == 1
    assert track_loss(LossState(ready=4, desired=4), 2, 1).lost == 0  # demand went away too


def test_the_floor_holds_the_lost_gpus() -> None:
    assert fallback_floor(0, 1.0, 1.0) == 0
    assert fallback_floor(3, 1.0, 1.0) == 3
    assert fallback_floor(1, 1.0, 1 / 7) == 7      # a whole GPU is seven MIG slices
    assert fallback_floor(2, 1 / 7, 1.0) == 1      # two slices fit in one GPU
    assert fallback_floor(3, 0.25, 0.5) == 2


SPOT = ScalerSpec(Targets(concurrency_per_replica=4), min_replicas=4, max_replicas=8,
                  fallback_pool="ondemand")
ONDEMAND = ScalerSpec(Targets(concurrency_per_replica=4), min_replicas=0, max_replicas=8,
                      scale_down_stabilization_s=0.0, scale_down=None)


@pytest.mark.parametrize("gpus", [1.0, 0.5])
async def test_an_interruption_surges_the_fallback_at_once_and_releases_it(gpus: float
                                                                          ) -> None:
    specs = {"spot": SPOT, "ondemand": ScalerSpec(
        ONDEMAND.targets, min_replicas=0, max_replicas=8, scale_down_stabilization_s=0.0,
        scale_down=None, gpus_per_replica=gpus)}
    clock = Clock()
    actuator = FakeActuator({"spot": 4, "ondemand": 0})
    c = Controller(specs, Collector(specs, None), actuator, clock=clock, ticker=ManualTicker())
    await c.step("spot")
    await c.step("ondemand")
    assert actuator.size["ondemand"] == 0
    # The node is drained: two spot replicas go away and do not come back yet.
    actuator.size["spot"] = 2
    clock.t += 1
    await c.step("spot")
    assert c._wake["ondemand"].is_set()  # the fallback's loop is woken, not left to its tick
    record = await c.step("ondemand")
    assert actuator.size["ondemand"] == round(2 / gpus)
    assert "spot lost 2 replica(s)" in record.reason
    # The spot pool is scaled back to 4; two replicas start (no capacity yet), then are ready.
    assert actuator.size["spot"] == 4
    actuator.starting = 2
    for _ in range(3):
        clock.t += 1
        await c.step("spot")
        assert c.losses["spot"].lost == 2  # still short: the floor holds
    assert (await c.step("ondemand")).desired == round(2 / gpus)
    actuator.starting = 0
    clock.t += 1
    await c.step("spot")
    assert c.losses["spot"].lost == 0
    assert c._fallback_floors("ondemand") == ()  # released: the fallback's own signals rule
