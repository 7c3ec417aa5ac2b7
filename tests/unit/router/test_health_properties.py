"""router.health as a circuit breaker, property-style: random event sequences in synthetic time
keep the invariants the balancer relies on (one trial at a time, bounded backoff, no endpoint
left out for good)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import HealthConfig
from router import ADMITTED, Health, record_failure, record_probe, record_success
from router.health import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    available,
    begin_trial,
    circuit_state,
    end_trial,
)

EVENTS = st.sampled_from(
    ["fail", "success", "pick", "unsettled", "probe_ok", "probe_fail", "probe_timeout"])
STEPS = st.lists(st.tuples(EVENTS, st.floats(0.0, 20.0)), max_size=60)
POLICIES = st.builds(
    HealthConfig,
    eject_after_failures=st.integers(1, 4),
    min_eject_s=st.sampled_from([0.0, 0.5, 1.0, 5.0]),
    max_eject_s=st.sampled_from([0.5, 4.0, 30.0]),
)


@dataclass
class Trace:
    """A single-endpoint world: the requests the balancer let through, by kind."""

    h: Health = ADMITTED
    trials_in_flight: int = 0


def cap(policy: HealthConfig) -> float:
    return max(policy.max_eject_s, policy.min_eject_s)


def step(t: Trace, event: str, now: float, policy: HealthConfig) -> None:
    h = t.h
    if event == "pick":
        if available(h, now) and not h.admitted:
            if h.trial_at is None:
                t.trials_in_flight += 1
            t.h = begin_trial(h, now, policy)
        return
    if h.trial_at is not None and event in ("fail", "success", "unsettled"):
        t.trials_in_flight = 0  # the trial's outcome (or a request taken for it) arrived
    if event == "fail":
        t.h = record_failure(h, now, policy, "fail")
    elif event == "success":
        t.h = record_success(h)
    elif event == "unsettled":
        t.h = end_trial(h)
    else:
        ok, definite = event == "probe_ok", event != "probe_timeout"
        t.h = record_probe(h, ok, now, policy, event, definite)
        if t.h.admitted:
            t.trials_in_flight = 0


@settings(max_examples=300, deadline=None)
@given(POLICIES, STEPS)
def test_invariants_hold_along_any_history(policy: HealthConfig,
                                           steps: list[tuple[str, float]]) -> None:
    t = Trace()
    now = 0.0
    for event, dt in steps:
        now += dt
        before = t.h
        step(t, event, now, policy)
        h = t.h
        if h.admitted:
            # closed: nothing of an old ejection lingers, always pickable
            assert h.trial_at is None and h.ejected_at is None and h.open_s == 0.0
            assert available(h, now) and circuit_state(h, now) == CLOSED
            continue
        assert h.ejected_at is not None and h.ejected_at <= now
        # the open interval stays within [min(base, cap), cap]
        assert min(policy.min_eject_s, cap(policy)) <= h.open_s <= cap(policy)
        # liveness: an open endpoint is offered a trial within max_eject_s, whatever happened
        assert h.retry_at <= now + cap(policy)
        assert available(h, now + cap(policy))
        # at most one trial in flight, and none may start while it is
        assert t.trials_in_flight <= 1
        if h.trial_at is not None:
            assert circuit_state(h, now) == HALF_OPEN
            assert not available(h, now) or now >= h.trial_at + cap(policy)
        else:
            assert circuit_state(h, now) == (HALF_OPEN if now >= h.retry_at else OPEN)
        # a failed trial re-opens for twice as long, from the base, capped
        if event == "fail" and before.trial_at is not None and not before.admitted:
            expected = min(max(2 * before.open_s, policy.min_eject_s), cap(policy))
            assert h.open_s == expected and h.ejected_at == now and h.trial_at is None


@settings(max_examples=200, deadline=None)
@given(POLICIES, st.integers(1, 12), st.floats(0.0, 1.0))
def test_a_dead_endpoint_is_retried_ever_less_often(
        policy: HealthConfig, trials: int, latency: float) -> None:
    """Each trial fails: the gaps between trials never shrink and stop growing at the cap."""
    h = ADMITTED
    now = 0.0
    for _ in range(policy.eject_after_failures):
        h = record_failure(h, now, policy, "refused")
    gaps: list[float] = []
    last = now
    for _ in range(trials):
        now = h.retry_at
        assert available(h, now)
        h = begin_trial(h, now, policy)
        assert not available(h, now)
        gaps.append(now - last)
        now += latency
        h = record_failure(h, now, policy, "refused")
        last = now
    assert all(later >= earlier - 1e-9 for earlier, later in pairwise(gaps[1:]))
    assert all(g <= cap(policy) + 1e-9 for g in gaps)
