"""autoscaler.policy: forecast minimum, burst, survivors and warm-up, in synthetic time."""

from __future__ import annotations

import math
from dataclasses import replace

from autoscaler.policy import (
    Decision,
    Observation,
    ScalerSpec,
    ScalerState,
    Targets,
    Windowed,
    decide,
)
from autoscaler.policy.forecast import (
    Forecast,
    ForecastSpec,
    detect_period,
    forecast,
    seasonal_forecast,
    trend_forecast,
    update,
)

T0 = 1_717_400_000.0
FSPEC = ForecastSpec(horizon_s=20.0, bucket_s=10.0, history_s=3600.0)
BARE = ScalerSpec(
    targets=Targets(rate_per_replica=100.0, queue_per_replica=500.0),
    min_replicas=0, max_replicas=50, tolerance=0.0, scale_up=None, scale_down=None,
    scale_down_stabilization_s=0.0, max_scale_down_stabilization_s=0.0,
    scale_to_zero_grace_s=30.0, panic_threshold=1000.0)


def feed(series: list[float], spec: ForecastSpec = FSPEC, every_s: float = 1.0) -> Forecast:
    fc = Forecast()
    for i, rate in enumerate(series):
        fc = update(spec, fc, T0 + i * every_s, rate)
    return fc


def batches(period_s: int, on_s: int, seconds: int, high: float = 900.0) -> list[float]:
    return [high if t % period_s < on_s else 10.0 for t in range(seconds)]


# --------------------------------------------------------------------------------------------
# the forecaster
# --------------------------------------------------------------------------------------------

def test_a_ramp_is_projected_ahead_and_a_fall_is_not() -> None:
    rising = feed([100.0 + t for t in range(600)])  # +1 req/s every second
    ahead = trend_forecast(FSPEC, rising)
    assert ahead is not None and rising.level is not None
    assert rising.level < ahead <= 2 * rising.level
    assert ahead > 600.0  # past the last value: it looks ahead
    falling = feed([700.0 - t for t in range(600)])
    assert trend_forecast(FSPEC, falling) is None


def test_periodic_batches_are_found_and_forecast_before_they_come() -> None:
    series = batches(300, 40, 1500)
    fc = feed(series)
    assert fc.period == 30  # 300 s in 10 s buckets
    # 1500 s is 5 periods in: the next batch starts at once, one period ago it did too
    assert seasonal_forecast(FSPEC, fc) == 900.0
    quiet = feed(series[:1400])  # 1400 s: the next batch at 1500, beyond the horizon
    assert seasonal_forecast(FSPEC, quiet) is not None
    assert seasonal_forecast(FSPEC, quiet) < 100.0
    assert forecast(FSPEC, fc) == 900.0


def test_a_pattern_after_a_flash_crowd_is_found_and_a_ramp_is_no_season() -> None:
    flash = [0.0] * 300 + [2000.0] * 120 + [0.0] * 480
    series = flash + [600.0 if t % 240 < 30 else 0.0 for t in range(900)]
    assert feed(series).period == 24  # 240 s: the crowd, 10x the batches, does not drown it
    ramp = tuple(100.0 + 2.0 * i for i in range(360))
    assert detect_period(FSPEC, ramp) is None


def test_noise_and_short_histories_have_no_season() -> None:
    noisy = tuple(100.0 + 50.0 * math.sin(i * i) for i in range(200))
    assert detect_period(FSPEC, noisy) is None
    assert detect_period(FSPEC, tuple(batches(300, 40, 600)[::10])) is None  # 2 cycles only
    assert detect_period(FSPEC, (5.0,) * 100) is None


# --------------------------------------------------------------------------------------------
# in the decider
# --------------------------------------------------------------------------------------------

def run(spec: ScalerSpec, rates: list[float], current: int = 1) -> tuple[Decision, ScalerState]:
    state = ScalerState(last_active=T0)
    d = None
    for i, r in enumerate(rates):
        o = Observation(current, current, arrival_rate=Windowed(r, r), queued=Windowed.of(0.0))
        d, state = decide(spec, o, state, T0 + i)
    assert d is not None
    return d, state


def test_the_forecast_starts_replicas_before_a_periodic_batch() -> None:
    spec = replace(BARE, forecast=FSPEC)
    rates = batches(300, 40, 1500 - 15)  # the next batch in 15 s: within the start-up
    d, state = run(spec, rates)
    assert state.forecast.period == 30
    assert d.desired == 9 and "forecast" in d.clipped_by
    plain, _ = run(BARE, rates)
    assert plain.desired == 1  # without it: what 10 req/s needs


def test_burst_needs_acceleration_and_a_growing_queue() -> None:
    spec = replace(BARE, burst_acceleration=1.5, burst_projection=0.5)
    o = Observation(2, 2, arrival_rate=Windowed(200.0, 600.0), queued=Windowed(10.0, 300.0))
    d, _ = decide(spec, o, ScalerState(last_active=T0), T0)
    assert d.dominant == "burst" and d.desired == 8  # 600 + 0.5 x 400 = 800 req/s
    calm = replace(o, queued=Windowed(10.0, 10.0))  # faster arrivals, but the queue holds
    d, _ = decide(spec, calm, ScalerState(last_active=T0), T0)
    assert d.dominant != "burst" and d.desired == 6


def test_survivors_must_hold_the_slo_and_warm_up_is_waited_out() -> None:
    spec = replace(BARE, p99_slo_s=0.5, survivor_p99_fraction=0.8, warmup_s=10.0)
    o = Observation(6, 6, arrival_rate=Windowed.of(200.0), queued=Windowed.of(0.0),
                    p99_s=0.45)
    d, _ = decide(spec, o, ScalerState(last_active=T0), T0)
    assert d.desired == 6 and "survivors" in d.clipped_by  # p99 at 90% of the SLO
    d, _ = decide(spec, replace(o, p99_s=0.1), ScalerState(last_active=T0), T0)
    assert d.desired == 2
    starting = replace(o, ready_replicas=4, p99_s=0.1)
    d, _ = decide(spec, starting, ScalerState(last_active=T0), T0)
    assert d.desired == 6 and "warmup" in d.clipped_by
    warm = ScalerState(last_active=T0, last_pending_up=T0 - 5)
    d, _ = decide(spec, replace(o, p99_s=0.1), warm, T0)
    assert d.desired == 6 and "warmup" in d.clipped_by
    d, _ = decide(spec, replace(o, p99_s=0.1), replace(warm, last_pending_up=T0 - 11), T0)
    assert d.desired == 2
