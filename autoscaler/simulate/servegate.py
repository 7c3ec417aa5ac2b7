"""servegate's policy in the simulator: the simulator plays the collector, decide() decides.

Where it sits: a :class:`~autoscaler.simulate.model.SimPolicy` wrapping the real, pure
:func:`autoscaler.policy.decide` - the same function the control loop calls. Like the
collector it records each second's gateway signals (in-flight, arrivals, queued) into
:class:`~autoscaler.policy.window.Window` s and reads p99 over the last ``p99_window_s`` from
the completed requests' latency histogram (fleet-wide, as the gateway histograms give it).

:func:`sim_spec` derives the spec from the pool profile as an operator would from a load
test: the arrival-rate target is 75% of a replica's full-batch throughput, queued requests
target what a replica drains in 5 s, the p99 SLO is the profile's; the forecast looks one
start-up (plus the metrics' delay) ahead, a burst is arrivals 1.5x faster in the panic window
than in the stable one with a growing queue, new replicas warm up 10 s, survivors keep the
p99 under 80% of the SLO. What it holds scales with the start-up (a replica given back and
wanted again costs a start-up of violations): an idle pool goes to zero after 10 start-ups
(200 s at 20 s), the scale-down window is 1.5 start-ups (at least 30 s) and 15 after a flap
(at least 300 s). Its metrics arrive ``metrics_delay_s`` late (the gateways' 1 s stats plus
the actuation).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from autoscaler.policy.decide import decide
from autoscaler.policy.forecast import ForecastSpec
from autoscaler.policy.spec import NO_DATA, Observation, ScalerSpec, ScalerState, Targets
from autoscaler.policy.window import Window
from autoscaler.simulate.model import LatencyView, SecondStats
from autoscaler.simulate.profile import PoolProfile

RATE_UTILIZATION = 0.75
QUEUE_DRAIN_S = 5.0
BURST_ACCELERATION = 1.5
WARMUP_S = 10.0
SURVIVOR_P99_FRACTION = 0.8
IDLE_GRACE_S = 30.0
HOLD_STARTUPS = 1.5  # scale-down windows: at least this many start-ups
IDLE_STARTUPS = 10.0  # idle grace before zero: at least this many start-ups
EPOCH = 1_700_000_000.0  # the simulated clock's epoch (schedules would read wall time)


def sim_spec(profile: PoolProfile, **overrides: Any) -> ScalerSpec:
    mu = profile.max_rate
    horizon = profile.startup_s + ServegatePolicy.metrics_delay_s
    spec = ScalerSpec(
        targets=Targets(rate_per_replica=RATE_UTILIZATION * mu,
                        queue_per_replica=QUEUE_DRAIN_S * mu),
        min_replicas=0, max_replicas=profile.max_replicas, p99_slo_s=profile.slo_p99_s,
        forecast=ForecastSpec(horizon_s=horizon), burst_acceleration=BURST_ACCELERATION,
        warmup_s=WARMUP_S, survivor_p99_fraction=SURVIVOR_P99_FRACTION,
        scale_to_zero_grace_s=max(IDLE_GRACE_S, IDLE_STARTUPS * profile.startup_s),
        scale_down_stabilization_s=max(30.0, HOLD_STARTUPS * profile.startup_s),
        max_scale_down_stabilization_s=max(300.0, 10 * HOLD_STARTUPS * profile.startup_s))
    return replace(spec, **overrides)


class ServegatePolicy:
    name = "servegate"
    interval_s = 1.0
    wakes_on_arrival = True
    metrics_delay_s = 2.0  # the gateways' 1 s stats, plus the actuation

    def __init__(self, spec: ScalerSpec) -> None:
        self.spec = spec
        horizon = max(spec.stable_window_s, spec.panic_window_s)
        self.concurrency = Window(horizon)
        self.rate = Window(horizon)
        self.queued = Window(horizon)
        self.state = ScalerState()
        self.reasons: list[tuple[float, str]] = []

    def observe(self, stats: SecondStats) -> None:
        self.concurrency.record(stats.t, stats.concurrency)
        self.rate.record(stats.t, stats.arrivals)
        self.queued.record(stats.t, stats.queued)

    def observation(self, now: float, ready: int, current: int,
                    latency: LatencyView) -> Observation:
        s, p = self.spec.stable_window_s, self.spec.panic_window_s
        p99 = latency.p99(now, self.spec.p99_window_s)
        return Observation(
            current_replicas=current, ready_replicas=ready,
            concurrency=self.concurrency.windowed(now, s, p),
            arrival_rate=self.rate.windowed(now, s, p),
            queued=self.queued.windowed(now, s, p),
            p99_s=NO_DATA if p99 is None else p99)

    def decide(self, now: float, ready: int, current: int, latency: LatencyView) -> int:
        obs = self.observation(now, ready, current, latency)
        decision, self.state = decide(self.spec, obs, self.state, EPOCH + now)
        if decision.desired != current:
            self.reasons.append((now, decision.reason))
        return decision.desired
