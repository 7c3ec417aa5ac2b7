"""The control loop in synthetic time: a fake actuator, fake gateway stats, no sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from autoscaler.actuators.base import ExportedActuator
from autoscaler.collector import Collector
from autoscaler.errors import ActuatorError
from autoscaler.loop import Controller
from autoscaler.policy import ScalerSpec, Targets, Variant
from autoscaler.signals.gateway import GatewayCollector
from autoscaler.signals.promtext import parse
from contracts.gatewaystats import GatewayStats, ModelCounters

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeActuator:
    """Records every call; ``ready`` lags ``current`` by ``starting`` replicas."""

    def __init__(self, sizes: Mapping[str, int]) -> None:
        self.size = dict(sizes)
        self.starting = 0
        self.calls: list[tuple[str, int]] = []
        self.fail: str | None = None

    async def current(self, pool: str) -> int:
        return self.size[pool]

    async def ready(self, pool: str) -> int:
        return max(self.size[pool] - self.starting, 0)

    async def scale(self, pool: str, replicas: int) -> None:
        if self.fail:
            raise ActuatorError(f"fake {pool}", self.fail)
        self.calls.append((pool, replicas))
        self.size[pool] = replicas


class FakeGateways:
    """One gateway replica whose counters the test sets."""

    def __init__(self) -> None:
        self.in_flight = 0.0
        self.requests = 0.0
        self.queued: float | None = None

    async def read_into(self, collector: GatewayCollector, now: float) -> list[object]:
        queued = {} if self.queued is None else {"cpu": self.queued}
        collector.record(GatewayStats("gw-0", now, {("cpu", "m"): ModelCounters(
            self.in_flight, self.requests)}, queued))
        return []


class ManualTicker:
    """Waits only for the wake event: intervals never pass unless the test steps."""

    async def wait(self, seconds: float, wake: asyncio.Event) -> None:
        await wake.wait()


SPEC = ScalerSpec(Targets(concurrency_per_replica=4), min_replicas=0, max_replicas=8,
                  scale_to_zero_grace_s=30.0, stable_window_s=30.0, panic_window_s=3.0)


def build(size: int = 0, spec: ScalerSpec = SPEC, leader: bool = True,
          gateways: FakeGateways | None = None) -> tuple[Controller, FakeActuator, Clock]:
    clock = Clock()
    actuator = FakeActuator({"cpu": size})
    collector = Collector({"cpu": spec}, gateways, stale_after_s=10.0)
    controller = Controller({"cpu": spec}, collector, actuator, clock=clock,
                            ticker=ManualTicker(), leader=lambda: leader)
    return controller, actuator, clock


async def tick(c: Controller, clock: Clock, seconds: float = 1.0) -> None:
    clock.t += seconds
    await c.collect()
    await c.step("cpu")


async def test_in_flight_demand_scales_the_pool_up() -> None:
    gw = FakeGateways()
    c, actuator, clock = build(1, gateways=gw)
    gw.in_flight = 10.0
    for _ in range(3):
        gw.requests += 10
        await tick(c, clock)
    assert actuator.calls == [("cpu", 3)]  # once: later ticks find it the right size
    acted = [r for r in c.pools["cpu"].history if r.acted]
    assert len(acted) == 1 and acted[0].dominant == "concurrency" and acted[0].current == 1


async def test_idle_pool_goes_to_zero_only_after_the_grace() -> None:
    gw = FakeGateways()
    c, actuator, clock = build(2, gateways=gw)
    sizes = []
    for _ in range(45):
        await tick(c, clock)
        sizes.append(actuator.size["cpu"])
    first_zero = sizes.index(0) + 1  # seconds after the start
    assert 30 <= first_zero <= 32, sizes
    assert all(s > 0 for s in sizes[:first_zero - 1])
    assert c.pools["cpu"].history[-1].desired == 0


async def test_activation_takes_a_pool_without_data_from_zero_to_one() -> None:
    c, actuator, clock = build(0, gateways=None)
    await tick(c, clock)
    assert actuator.calls == []  # no data: keep 0
    assert c.activate("cpu")
    record = await c.step("cpu")
    assert actuator.calls == [("cpu", 1)]
    assert record.dominant == "activation" and record.activated and record.acted
    assert c.pools["cpu"].activations == 1


async def test_activation_holds_until_a_replica_is_ready_then_the_grace_counts() -> None:
    gw = FakeGateways()
    spec = ScalerSpec(Targets(concurrency_per_replica=4), scale_to_zero_grace_s=3.0)
    c, actuator, clock = build(0, spec=spec, gateways=gw)
    await tick(c, clock)
    await tick(c, clock)
    c.activate("cpu")
    actuator.starting = 1  # the replica takes 10 s to start
    await c.step("cpu")
    for _ in range(10):
        await tick(c, clock)
        assert actuator.size["cpu"] == 1, "stopped while still starting"
    actuator.starting = 0
    sizes = []
    for _ in range(6):
        await tick(c, clock)
        sizes.append(actuator.size["cpu"])
    assert sizes[0] == 1 and sizes[-1] == 0, sizes


async def test_queued_requests_at_zero_activate_without_a_call() -> None:
    gw = FakeGateways()
    c, actuator, clock = build(0, gateways=gw)
    await tick(c, clock)
    gw.queued = 2.0
    await tick(c, clock)
    assert actuator.calls == [("cpu", 1)]


async def test_a_follower_decides_but_does_not_act() -> None:
    gw = FakeGateways()
    c, actuator, clock = build(1, leader=False, gateways=gw)
    gw.in_flight = 20.0
    await tick(c, clock)
    await tick(c, clock)
    assert actuator.calls == []
    last = c.pools["cpu"].last
    assert last is not None and last.desired == 5 and not last.acted and not last.leader


async def test_actuator_errors_are_recorded_and_retried() -> None:
    c, actuator, _ = build(0)
    actuator.fail = "API down"
    c.activate("cpu")
    record = await c.step("cpu")
    assert record.error == "fake cpu: API down" and not record.acted
    assert c.pools["cpu"].errors == 1
    actuator.fail = None
    await c.step("cpu")
    assert actuator.calls == [("cpu", 1)]
    text = c.metrics.render().decode()
    assert 'servegate_autoscaler_scale_errors_total{pool="cpu"} 1.0' in text


async def test_unknown_pool_is_not_activated() -> None:
    c, _, _ = build()
    assert not c.activate("nope")


async def test_an_activation_wakes_the_running_loop_at_once() -> None:
    c, actuator, _ = build(0)
    run = asyncio.create_task(c.run())
    for _ in range(5):
        await asyncio.sleep(0)
    assert actuator.calls == []  # the ticker never fires by itself
    c.activate("cpu")
    for _ in range(20):
        if actuator.calls:
            break
        await asyncio.sleep(0)
    assert actuator.calls == [("cpu", 1)]
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


async def test_cancelling_run_leaves_no_task_behind() -> None:
    spec = ScalerSpec(Targets(concurrency_per_replica=4))
    clock = Clock()
    collector = Collector({"a": spec, "b": spec}, FakeGateways())
    c = Controller({"a": spec, "b": spec}, collector, ExportedActuator({"a": 0, "b": 0}),
                   clock=clock, ticker=ManualTicker())
    run = asyncio.create_task(c.run())
    for _ in range(5):
        await asyncio.sleep(0)
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert {"collect", "decide-a", "decide-b"} <= names
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert not names & {"collect", "decide-a", "decide-b"}


async def test_status_and_metrics_describe_the_last_decisions() -> None:
    gw = FakeGateways()
    c, _, clock = build(1, gateways=gw)
    gw.in_flight = 10.0
    for _ in range(3):
        await tick(c, clock)
    doc = c.status(history=2)
    pool = doc["pools"]["cpu"]
    assert doc["leader"] is True
    assert pool["desired"] == 3 and pool["current"] == 3 and len(pool["decisions"]) == 2
    assert set(pool["decisions"][-1]) >= {"at", "current", "ready", "desired", "reason",
                                          "dominant", "clipped_by", "signals", "acted"}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for s in parse(c.metrics.render().decode())}
    assert samples[("servegate_autoscaler_desired_replicas", (("pool", "cpu"),))] == 3
    assert samples[("servegate_autoscaler_demand", (("pool", "cpu"),))] == 10
    info = [k for k in samples if k[0] == "servegate_autoscaler_decision_info"]
    assert len(info) == 1 and ("dominant", "concurrency") in info[0][1]


async def test_exported_actuator_is_idempotent() -> None:
    a = ExportedActuator({"cpu": 2})
    await a.scale("cpu", 2)
    assert a.changes == 0
    await a.scale("cpu", 3)
    await a.scale("cpu", 3)
    assert a.changes == 1 and await a.current("cpu") == 3


def test_decide_activation_without_data_takes_zero_to_one_only() -> None:
    from autoscaler.policy import Observation, ScalerState, decide

    d, state = decide(SPEC, Observation(0, 0, activated=True), ScalerState(), T0)
    assert (d.desired, d.valid, d.dominant) == (1, True, "activation")
    assert state.last_active == T0
    d, _ = decide(SPEC, Observation(0, 0), ScalerState(), T0)
    assert (d.desired, d.valid) == (0, False)
    d, _ = decide(SPEC, Observation(2, 0, activated=True), ScalerState(), T0)
    assert d.desired == 2  # not at zero: the activation changes nothing by itself


def test_actuator_sections_of_the_config() -> None:
    from contracts import ConfigError, parse_config

    base: dict[str, object] = {"pools": {"cpu": {}}, "models": {"m": {"pool": "cpu"}}}
    cfg = parse_config({**base, "autoscaling": {"pools": {"cpu": {
        "targets": {"rate_per_replica": 10},
        "local": {"models": ["classifier"], "args": ["--classifier-delay-ms", "5"]},
        "kubernetes": {"deployment": "triton-cpu", "namespace": "serving"},
        "keda": {"metric_target": 10}}}}})
    assert cfg.autoscaling is not None
    pool = cfg.autoscaling.pools["cpu"]
    assert pool.local.module == "servegate.local.triton_worker"
    assert pool.local.models == ["classifier"] and pool.local.ready_line == "SERVEGATE_TRITON_READY"
    assert (pool.kubernetes.deployment, pool.kubernetes.namespace) == ("triton-cpu", "serving")
    assert pool.keda.metric_target == 10 and pool.activation_hold_s == 120
    assert cfg.autoscaling.controller.tick_s == 1.0 and cfg.autoscaling.controller.history == 50
    for bad in ({"local": {"models": []}}, {"keda": {"metric_target": 0}},
                {"activation_hold_s": 0}):
        with pytest.raises(ConfigError):
            parse_config({**base, "autoscaling": {"pools": {"cpu": {
                "targets": {"rate_per_replica": 10}, **bad}}}})


async def test_tee_actuator_tells_the_mirror_every_decision() -> None:
    from autoscaler.actuators.base import ExportedActuator, TeeActuator

    primary, mirror = ExportedActuator({"p": 0}), ExportedActuator({"p": 0})
    tee = TeeActuator(primary, mirror)
    await tee.scale("p", 2)
    assert await tee.current("p") == 2 and await mirror.current("p") == 2
    assert await tee.ready("p") == 2


async def test_split_planning_feeds_each_variant_pool_a_floor() -> None:
    gw = FakeGateways()
    clock = Clock()
    specs = {"cpu": SPEC, "canary": SPEC}
    actuator = FakeActuator({"cpu": 1, "canary": 0})
    split = {"m": [Variant("cpu", 50.0, stable=True), Variant("canary", 50.0)]}
    c = Controller(specs, Collector(specs, gw, stale_after_s=10.0), actuator, clock=clock,
                   ticker=ManualTicker(), splits=split)
    assert c.floors() == {}  # no decision yet: nothing to plan from
    gw.in_flight = 24.0  # the model's demand, all on the stable pool so far: 6 replicas
    for _ in range(3):
        gw.requests += 10
        await tick(c, clock)
    assert actuator.size["cpu"] == 6
    await c.step("canary")  # its own signals know nothing yet; the plan gives half of 6
    assert actuator.size["canary"] == 3
    assert c.pools["canary"].last is not None
    assert "split m" in c.pools["canary"].last.reason
    alone = build(0)[0]
    assert alone.floors() == {}
