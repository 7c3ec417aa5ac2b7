"""Properties of autoscaler.policy.decide over random specs, observations and histories."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.policy import (
    NO_DATA,
    Floor,
    NoData,
    Observation,
    RateLimit,
    Reading,
    ScalerSpec,
    ScalerState,
    Targets,
    Windowed,
    decide,
)

T0 = 1_700_000_000.0
load = st.floats(min_value=0.0, max_value=5000.0, allow_nan=False)
reading = st.one_of(load, st.just(NO_DATA), st.just(NoData("idle", idle=True)))


@st.composite
def specs(draw: st.DrawFn) -> ScalerSpec:
    lo = draw(st.integers(0, 5))
    hi = draw(st.integers(max(lo, 1), 40))
    return ScalerSpec(
        targets=Targets(rate_per_replica=draw(st.floats(1.0, 500.0)),
                        queue_per_replica=draw(st.one_of(st.none(), st.floats(1.0, 500.0))),
                        concurrency_per_replica=draw(st.one_of(st.none(), st.floats(1.0, 64.0))),
                        gpu_utilization=draw(st.one_of(st.none(), st.floats(0.1, 1.0)))),
        min_replicas=lo, max_replicas=hi,
        p99_slo_s=draw(st.one_of(st.none(), st.floats(0.05, 2.0))),
        tolerance=draw(st.sampled_from([0.0, 0.1, 0.2])),
        panic_threshold=draw(st.sampled_from([1.5, 2.0, 3.0])),
        scale_up=draw(st.sampled_from([None, RateLimit(1.0, 4, 900.0), RateLimit(15.0, 4, 100.0)])),
        scale_down=draw(st.sampled_from([None, RateLimit(10.0, None, 50.0)])),
        scale_down_stabilization_s=draw(st.sampled_from([0.0, 30.0])),
        scale_to_zero_grace_s=draw(st.sampled_from([0.0, 30.0])))


@st.composite
def observations(draw: st.DrawFn, spec: ScalerSpec) -> Observation:
    current = draw(st.integers(0, spec.max_replicas))
    return Observation(
        current_replicas=current, ready_replicas=draw(st.integers(0, current)),
        concurrency=Windowed(draw(reading), draw(reading)),
        arrival_rate=Windowed(draw(reading), draw(reading)),
        queued=Windowed(draw(reading), draw(reading)),
        p99_s=draw(st.one_of(st.just(NO_DATA), st.floats(0.001, 30.0))),
        gpu_utilization=draw(st.one_of(st.just(NO_DATA), st.floats(0.0, 1.0))),
        floors=tuple(Floor(n, "f") for n in draw(st.lists(st.integers(0, 60), max_size=2))))


@st.composite
def histories(draw: st.DrawFn) -> tuple[ScalerSpec, list[Observation], list[float]]:
    spec = draw(specs())
    n = draw(st.integers(1, 12))
    obs = [draw(observations(spec)) for _ in range(n)]
    gaps = draw(st.lists(st.floats(0.5, 40.0), min_size=n, max_size=n))
    return spec, obs, gaps


def run(spec: ScalerSpec, obs: list[Observation], gaps: list[float]) -> list[tuple[
        Observation, int, bool]]:
    """Feed the decisions back (the actuator applies each); yields (obs, desired, panicking)."""
    state, now, current, out = ScalerState(), T0, None, []
    for o, gap in zip(obs, gaps, strict=True):
        now += gap
        if current is not None:
            o = replace(o, current_replicas=current, ready_replicas=min(o.ready_replicas, current))
        d, state = decide(spec, o, state, now)
        out.append((o, d.desired, d.panicking))
        current = d.desired
    return out


@settings(max_examples=150, deadline=None)
@given(histories())
def test_desired_is_always_within_bounds(case: tuple[ScalerSpec, list[Observation],
                                                     list[float]]) -> None:
    spec, obs, gaps = case
    for o, desired, _ in run(spec, obs, gaps):
        floor = max([spec.min_replicas, *(f.replicas for f in o.floors)])
        assert min(floor, spec.max_replicas) <= desired <= spec.max_replicas


@settings(max_examples=150, deadline=None)
@given(histories())
def test_no_scale_down_while_panicking(case: tuple[ScalerSpec, list[Observation],
                                                   list[float]]) -> None:
    spec, obs, gaps = case
    for o, desired, panicking in run(spec, obs, gaps):
        if panicking:
            assert desired >= o.current_replicas


def scaled(w: Windowed, k: float) -> Windowed:
    def mul(r: Reading) -> Reading:
        return r * k if not isinstance(r, NoData) else r
    return Windowed(mul(w.stable), mul(w.panic))


@settings(max_examples=200, deadline=None)
@given(histories(), st.floats(1.0, 20.0))
def test_monotone_in_load_for_a_fixed_state(case: tuple[ScalerSpec, list[Observation],
                                                        list[float]], k: float) -> None:
    spec, obs, gaps = case
    state, now = ScalerState(), T0
    for o, gap in zip(obs[:-1], gaps[:-1], strict=True):
        now += gap
        _, state = decide(spec, o, state, now)
    last, now = obs[-1], now + gaps[-1]
    more = replace(last, concurrency=scaled(last.concurrency, k),
                   arrival_rate=scaled(last.arrival_rate, k), queued=scaled(last.queued, k))
    low, _ = decide(spec, last, state, now)
    high, _ = decide(spec, more, state, now)
    assert high.desired >= low.desired, (low.reason, high.reason)
