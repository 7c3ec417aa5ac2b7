"""autoscaler.policy.decide: table-driven, in synthetic time (``now`` is a number, no sleeps)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from autoscaler.policy import (
    NO_DATA,
    Decision,
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
    make_window,
)

T0 = 1_717_400_000.0

# A spec with every limit off; each test turns on what it is about.
BARE = ScalerSpec(
    targets=Targets(rate_per_replica=100.0, queue_per_replica=50.0),
    min_replicas=0, max_replicas=50, tolerance=0.0, scale_up=None, scale_down=None,
    scale_down_stabilization_s=0.0, max_scale_down_stabilization_s=0.0,
    scale_to_zero_grace_s=30.0, panic_threshold=1000.0)


def obs(current: int, ready: int | None = None, rate: float | Reading = 0.0,
        rate_panic: float | Reading | None = None, queue: float | Reading = 0.0,
        queue_panic: float | Reading | None = None, **kw: object) -> Observation:
    return Observation(
        current_replicas=current, ready_replicas=current if ready is None else ready,
        arrival_rate=Windowed(rate, rate if rate_panic is None else rate_panic),
        queued=Windowed(queue, queue if queue_panic is None else queue_panic),
        **kw)  # type: ignore[arg-type]


def step(spec: ScalerSpec, o: Observation, state: ScalerState | None = None,
         now: float = T0) -> tuple[Decision, ScalerState]:
    return decide(spec, o, state or ScalerState(last_active=now), now)


# --------------------------------------------------------------------------------------------
# per-signal proposals: capacity form, HPA form, tolerance, max of signals
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("current", "rate", "want"), [
    (10, 1050.0, 10),   # 5% over: inside the 10% band
    (10, 950.0, 10),    # 5% under: inside
    (10, 1100.0, 10),   # exactly at the edge: inside
    (10, 1150.0, 12),   # 15% over: ceil(11.5)
    (10, 850.0, 9),     # 15% under: ceil(8.5)
    (0, 1.0, 1),        # from zero there is no band
], ids=["+5%", "-5%", "+10%", "+15%", "-15%", "from-zero"])
def test_tolerance_band(current: int, rate: float, want: int) -> None:
    spec = replace(BARE, tolerance=0.1)
    d, _ = step(spec, obs(current, rate=rate))
    assert d.desired == want, d.reason


@pytest.mark.parametrize(("rate", "queue", "gpu", "want", "dominant"), [
    (400.0, 0.0, NO_DATA, 4, "rate"),
    (400.0, 350.0, NO_DATA, 7, "queue"),
    (400.0, 100.0, 0.9, 6, "gpu"),       # HPA form: ceil(4 ready x 0.9/0.6)
    (100.0, 0.0, 0.3, 2, "gpu"),         # ceil(4 x 0.5) = 2 vs rate 1
], ids=["rate", "queue-wins", "gpu-wins", "gpu-down"])
def test_max_of_signals(rate: float, queue: float, gpu: Reading, want: int,
                        dominant: str) -> None:
    spec = replace(BARE, targets=replace(BARE.targets, gpu_utilization=0.6))
    d, _ = step(spec, obs(4, rate=rate, queue=queue, gpu_utilization=gpu))
    assert (d.desired, d.dominant) == (want, dominant), d.reason
    signals = dict(d.signals)
    assert signals["rate"] == -(-int(rate) // 100)
    assert max(signals.values()) == want
    assert d.reason.startswith(f"{want} by {dominant}")


def test_signals_use_the_larger_window_so_up_is_fast_and_down_waits() -> None:
    up, _ = step(BARE, obs(2, rate=200.0, rate_panic=900.0))
    assert up.desired == 9 and dict(up.signals)["rate"] == 9
    down, _ = step(BARE, obs(9, rate=800.0, rate_panic=100.0))
    assert down.desired == 8  # the stable window still remembers the load


def test_concurrency_and_triton_ratios() -> None:
    spec = replace(BARE, targets=Targets(concurrency_per_replica=8.0, queue_time_s=0.01,
                                         batch_fill=0.5))
    d, _ = step(spec, obs(4, concurrency=Windowed.of(40.0), queue_time_s=0.02,
                          batch_fill=0.25))
    assert dict(d.signals) == {"concurrency": 5, "queue_time": 8, "batch_fill": 2}
    assert d.desired == 8 and d.dominant == "queue_time"


# --------------------------------------------------------------------------------------------
# missing signals, no decision
# --------------------------------------------------------------------------------------------

def test_a_missing_signal_forbids_scaling_down() -> None:
    d, _ = step(BARE, obs(6, rate=100.0, queue=NoData("gateway down")))
    assert d.desired == 6 and d.valid
    assert "missing_signals" in d.clipped_by and "queue" in d.reason
    up, _ = step(BARE, obs(6, rate=900.0, queue=NoData("gateway down")))
    assert up.desired == 9  # scaling up is still allowed


def test_idle_ratios_do_not_block_scaling_down() -> None:
    spec = replace(BARE, targets=replace(BARE.targets, queue_time_s=0.01))
    d, _ = step(spec, obs(6, rate=100.0, queue_time_s=NoData("no requests", idle=True)))
    assert d.desired == 1 and "missing_signals" not in d.clipped_by


def test_no_data_at_all_is_no_decision() -> None:
    d, _ = step(BARE, obs(3, rate=NO_DATA, queue=NO_DATA))
    assert not d.valid and d.desired == 3 and d.dominant == "none"
    assert "no data" in d.reason
    floored, _ = step(replace(BARE, min_replicas=5), obs(3, rate=NO_DATA, queue=NO_DATA))
    assert not floored.valid and floored.desired == 5  # bounds still hold


# --------------------------------------------------------------------------------------------
# p99 SLO
# --------------------------------------------------------------------------------------------

SLO = replace(BARE, p99_slo_s=0.5, max_slo_boost=2.0)


@pytest.mark.parametrize(("p99", "kw", "want", "note"), [
    (0.4, {}, 4, ""),                                         # under the SLO
    (0.75, {}, 6, "x1.50"),                                   # ceil(4 x 1.5)
    (5.0, {}, 8, "x2.00"),                                    # capped at 2x
    (5.0, {"ready": 2}, 4, "still starting"),                 # scale-up in flight
    (5.0, {"queue": 1.0}, 4, "nothing waits"),                # no queue: replicas won't help
    (5.0, {"queue": 150.0, "queue_panic": 100.0}, 4, "draining"),
], ids=["under", "x1.5", "capped", "pending", "no-queue", "draining"])
def test_p99_over_slo_boosts_by_the_overshoot(p99: float, kw: dict[str, float], want: int,
                                              note: str) -> None:
    args: dict[str, object] = {"rate": 350.0, "queue": 100.0, **kw}
    d, _ = step(SLO, obs(4, p99_s=p99, **args))  # type: ignore[arg-type]
    assert d.desired == want, d.reason
    assert note in d.reason
    if "x" in note:
        assert d.dominant == "p99"


def test_p99_boost_waits_a_p99_window_after_a_scale_up() -> None:
    state = ScalerState(last_active=T0, last_pending_up=T0 - 5)
    d, _ = step(SLO, obs(4, rate=350.0, queue=100.0, p99_s=1.0), state)
    assert d.desired == 4 and "still starting" in d.reason
    d, _ = step(SLO, obs(4, rate=350.0, queue=100.0, p99_s=1.0),
                replace(state, last_pending_up=T0 - 11))
    assert d.desired == 8


# --------------------------------------------------------------------------------------------
# panic mode
# --------------------------------------------------------------------------------------------

def test_panic_entry_hold_and_exit() -> None:
    spec = replace(BARE, panic_threshold=2.0, stable_window_s=30.0)
    # 2 ready, the panic window wants 5: 5/2 >= 2 -> panic
    d, s = step(spec, obs(2, rate=200.0, rate_panic=500.0))
    assert d.panicking and d.desired == 5 and "panic:" in d.reason
    # load falls: no scale-down while panicking
    t = T0
    for dt in (10, 20, 29):
        d, s = step(spec, obs(5, rate=100.0, rate_panic=100.0), s, now=t + dt)
        assert d.panicking and d.desired == 5, dt
        assert "panic_hold" in d.clipped_by
    # a full stable window after the last moment over the threshold: panic over
    d, s = step(spec, obs(5, rate=100.0, rate_panic=100.0), s, now=t + 31)
    assert not d.panicking and d.desired == 1 and "panic over" in d.reason
    assert s.panic_since is None and s.max_panic == 0


def test_panic_is_extended_while_over_the_threshold() -> None:
    spec = replace(BARE, panic_threshold=2.0, stable_window_s=30.0)
    d, s = step(spec, obs(2, rate=500.0, rate_panic=500.0))
    d, s = step(spec, obs(5, ready=2, rate=500.0, rate_panic=500.0), s, now=T0 + 25)
    assert s.panic_last_over == T0 + 25
    d, s = step(spec, obs(5, rate=100.0), s, now=T0 + 50)
    assert d.panicking and d.desired == 5  # 25s after the last over: still panicking
    d, s = step(spec, obs(5, rate=100.0), s, now=T0 + 56)
    assert not d.panicking


def test_panic_never_goes_below_the_current_size() -> None:
    spec = replace(BARE, panic_threshold=2.0)
    d, _ = step(spec, obs(10, ready=2, rate=100.0, rate_panic=500.0))
    assert d.panicking and d.desired == 10


# --------------------------------------------------------------------------------------------
# rate limits and stabilization
# --------------------------------------------------------------------------------------------

def test_scale_up_rate_limit_counts_from_the_period_start() -> None:
    spec = replace(BARE, scale_up=RateLimit(period_s=10.0, pods=2))
    d, s = step(spec, obs(4, rate=1000.0))
    assert d.desired == 6 and "scale_up_rate" in d.clipped_by
    d, s = step(spec, obs(6, rate=1000.0), s, now=T0 + 5)
    assert d.desired == 6  # same period: 4 + 2 already used
    d, s = step(spec, obs(6, rate=1000.0), s, now=T0 + 10.5)
    assert d.desired == 8


@pytest.mark.parametrize(("limit", "current", "want"), [
    (RateLimit(period_s=10.0, pods=4, percent=100.0), 5, 10),   # percent allows more
    (RateLimit(period_s=10.0, pods=4, percent=10.0), 3, 7),     # pods allow more
    (RateLimit(period_s=10.0, percent=900.0), 0, 10),           # from zero: percent of 1
])
def test_scale_up_policies_select_the_most_permissive(limit: RateLimit, current: int,
                                                      want: int) -> None:
    d, _ = step(replace(BARE, scale_up=limit), obs(current, rate=5000.0, rate_panic=5000.0))
    assert d.desired == want, d.reason


def test_scale_down_rate_limit() -> None:
    spec = replace(BARE, scale_down=RateLimit(period_s=10.0, percent=50.0))
    d, s = step(spec, obs(10, rate=100.0))
    assert d.desired == 5 and "scale_down_rate" in d.clipped_by
    d, s = step(spec, obs(5, rate=100.0), s, now=T0 + 5)
    assert d.desired == 5
    d, s = step(spec, obs(5, rate=100.0), s, now=T0 + 11)
    assert d.desired == 2


def test_scale_down_stabilization_takes_the_highest_recent_recommendation() -> None:
    spec = replace(BARE, scale_down_stabilization_s=60.0, max_scale_down_stabilization_s=60.0)
    _, s = step(spec, obs(10, rate=1000.0))
    d, s = step(spec, obs(10, rate=300.0), s, now=T0 + 30)
    assert d.desired == 10 and "stabilization" in d.clipped_by
    d, s = step(spec, obs(10, rate=300.0), s, now=T0 + 50)
    assert d.desired == 10
    d, s = step(spec, obs(10, rate=300.0), s, now=T0 + 61)
    assert d.desired == 3


def test_backlog_driven_peaks_are_not_remembered() -> None:
    spec = replace(BARE, scale_down_stabilization_s=60.0, max_scale_down_stabilization_s=60.0)
    d, s = step(spec, obs(4, rate=400.0, queue=1000.0))
    assert d.desired == 20 and d.dominant == "queue"
    d, s = step(spec, obs(20, rate=400.0, queue=0.0), s, now=T0 + 20)
    assert d.desired == 4  # the drained backlog's replicas go without waiting the window


def test_a_flap_lengthens_the_stabilization_window_until_quiet() -> None:
    spec = replace(BARE, scale_down_stabilization_s=10.0, max_scale_down_stabilization_s=100.0)
    _, s = step(spec, obs(10, rate=1000.0))
    d, s = step(spec, obs(10, rate=100.0), s, now=T0 + 11)
    assert d.desired == 1
    d, s = step(spec, obs(1, rate=1000.0), s, now=T0 + 40)  # the burst is back
    assert d.desired == 10 and "flap" in d.reason and s.stabilization_s == 100.0
    d, s = step(spec, obs(10, rate=100.0), s, now=T0 + 90)
    assert d.desired == 10 and "stabilization 100s" in d.reason
    d, s = step(spec, obs(10, rate=100.0), s, now=T0 + 141)
    assert d.desired == 1
    # no flap for twice the max window: back to the short window
    _, s = step(spec, obs(1, rate=1000.0), s, now=T0 + 400)
    d, s = step(spec, obs(10, rate=100.0), s, now=T0 + 411)
    assert d.desired == 1


def test_small_moves_are_not_flaps() -> None:
    spec = replace(BARE, scale_down_stabilization_s=10.0, max_scale_down_stabilization_s=100.0)
    _, s = step(spec, obs(10, rate=1000.0))
    _, s = step(spec, obs(10, rate=900.0), s, now=T0 + 11)
    d, s = step(spec, obs(9, rate=1000.0), s, now=T0 + 20)
    assert d.desired == 10 and "flap" not in d.reason and s.last_flap is None


# --------------------------------------------------------------------------------------------
# scale to zero and activation
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("idle_s", "want", "why"), [
    (0.0, 1, "idle_grace"),
    (29.0, 1, "idle_grace"),
    (30.0, 0, ""),
    (300.0, 0, ""),
])
def test_idle_goes_to_zero_only_after_the_grace(idle_s: float, want: int, why: str) -> None:
    state = ScalerState(last_active=T0 - idle_s)
    d, _ = step(BARE, obs(1, rate=0.0, rate_panic=0.0), state)
    assert d.desired == want, d.reason
    assert (why in d.clipped_by) if why else d.desired == 0


def test_idle_after_grace_overrides_what_the_stable_window_remembers() -> None:
    state = ScalerState(last_active=T0 - 45)
    d, _ = step(BARE, obs(2, rate=40.0, rate_panic=0.0), state)
    assert d.desired == 0 and d.dominant == "idle"


def test_in_flight_work_is_activity() -> None:
    state = ScalerState(last_active=T0 - 100)
    d, s = step(BARE, obs(1, rate=0.0, queue=0.0, queue_panic=3.0), state)
    assert d.desired == 1 and s.last_active == T0


def test_first_arrival_activates_a_pool_at_zero() -> None:
    state = ScalerState(last_active=T0 - 600)
    d, _ = step(BARE, obs(0, rate=0.2, rate_panic=0.5), state)
    assert d.desired == 1, d.reason
    big, _ = step(BARE, obs(0, rate=50.0, rate_panic=450.0), state)
    assert big.desired == 5  # sized by the panic window at once


def test_a_pool_at_zero_stays_there_without_traffic() -> None:
    state = ScalerState(last_active=T0 - 600)
    d, _ = step(BARE, obs(0, rate=30.0, rate_panic=0.0), state)
    assert d.desired == 0


def test_min_replicas_forbids_zero() -> None:
    state = ScalerState(last_active=T0 - 600)
    d, _ = step(replace(BARE, min_replicas=1), obs(1, rate=0.0), state)
    assert d.desired == 1


# --------------------------------------------------------------------------------------------
# bounds: min, max, schedules, external floors
# --------------------------------------------------------------------------------------------

def berlin(day: int, hour: int, minute: int = 0) -> float:
    """Epoch of 2024-06-0<day> hour:minute in Berlin (June 3, 2024 is a Monday)."""
    return datetime(2024, 6, day, hour, minute, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()


BUSINESS = replace(BARE, schedules=(
    make_window("mon-fri", "08:00", "18:00", "Europe/Berlin", 3, "business hours"),
    make_window("fri", "22:00", "02:00", "Europe/Berlin", 5),
))


@pytest.mark.parametrize(("now", "want", "clip"), [
    (berlin(3, 9), 3, "schedule"),     # Monday 09:00
    (berlin(3, 7, 59), 1, ""),         # Monday before the window
    (berlin(3, 18), 1, ""),            # end is exclusive
    (berlin(8, 12), 1, ""),            # Saturday noon
    (berlin(7, 23), 5, "schedule"),    # Friday night
    (berlin(8, 1), 5, "schedule"),     # ...into Saturday morning
])
def test_schedule_floors(now: float, want: int, clip: str) -> None:
    d, _ = decide(BUSINESS, obs(1, rate=100.0), ScalerState(last_active=now), now)
    assert d.desired == want, d.reason
    if clip:
        assert clip in d.clipped_by


def test_max_and_external_floors() -> None:
    d, _ = step(replace(BARE, max_replicas=6), obs(4, rate=1000.0))
    assert d.desired == 6 and "max" in d.clipped_by
    d, _ = step(BARE, obs(2, rate=100.0, floors=(Floor(4, "split m: canary"),)))
    assert d.desired == 4 and "floor" in d.clipped_by and "split m: canary" in d.reason
