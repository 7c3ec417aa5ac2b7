"""router.health: passive ejection, active-probe re-admission and the half-open circuit breaker
(one trial request, exponential backoff), with synthetic clocks."""

from __future__ import annotations

import pytest

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

POLICY = HealthConfig(eject_after_failures=3, min_eject_s=5.0, max_eject_s=30.0)


def fail_n(h: Health, n: int, start: float = 100.0, policy: HealthConfig = POLICY) -> Health:
    for i in range(n):
        h = record_failure(h, start + i, policy, f"fail {i + 1}")
    return h


def opened(at: float, failures: int, reason: str, open_s: float = 5.0) -> Health:
    """The state right after the circuit opened at ``at`` for ``open_s``."""
    return Health(admitted=False, consecutive_failures=failures, ejected_at=at, reason=reason,
                  open_s=open_s, retry_at=at + open_s)


def ejected(at: float = 100.0, failures: int = 3) -> Health:
    return opened(at, failures, "x")


def test_initial_state() -> None:
    assert Health() == ADMITTED
    assert ADMITTED.admitted and ADMITTED.consecutive_failures == 0
    assert ADMITTED.ejected_at is None and ADMITTED.reason == ""
    assert ADMITTED.trial_at is None and circuit_state(ADMITTED, 0.0) == CLOSED


@pytest.mark.parametrize("threshold", [1, 2, 3, 5])
def test_ejection_after_consecutive_failures(threshold: int) -> None:
    policy = HealthConfig(eject_after_failures=threshold)
    h = ADMITTED
    for i in range(1, threshold):
        h = record_failure(h, float(i), policy, f"r{i}")
        assert h.admitted, i
        assert h.consecutive_failures == i
        assert h.ejected_at is None
        assert h.reason == f"r{i}"
    h = record_failure(h, 50.0, policy, "last")
    assert h == opened(50.0, threshold, "last", open_s=policy.min_eject_s)


def test_failures_while_ejected_keep_the_ejection_time() -> None:
    h = fail_n(ADMITTED, 3, start=10.0)  # ejected at 12.0
    assert h.ejected_at == 12.0
    h = record_failure(h, 30.0, POLICY, "again")  # not a trial: a request sent before ejection
    assert h == opened(12.0, 4, "again")


@pytest.mark.parametrize("before", [1, 2])
def test_success_resets_streak(before: int) -> None:
    h = fail_n(ADMITTED, before)
    h = record_success(h)
    assert h.admitted and h.consecutive_failures == 0
    # a fresh streak is needed to eject
    h = fail_n(h, 2, start=200.0)
    assert h.admitted
    assert not fail_n(h, 1, start=300.0).admitted


def test_success_without_streak_is_identity() -> None:
    assert record_success(ADMITTED) is ADMITTED
    h = Health(reason="old")
    assert record_success(h) is h


def test_success_that_is_not_the_trial_does_not_readmit() -> None:
    h = record_success(ejected())
    assert not h.admitted
    assert h.consecutive_failures == 0
    assert h.ejected_at == 100.0


@pytest.mark.parametrize("streak", [0, 1, 2])
def test_definite_probe_failure_ejects_at_once(streak: int) -> None:
    h = fail_n(ADMITTED, streak)
    h = record_probe(h, False, 500.0, POLICY, "connection refused")
    assert h == opened(500.0, streak + 1, "connection refused")


def test_definite_is_the_default() -> None:
    h = record_probe(ADMITTED, False, 1.0, POLICY, "not ready")
    assert not h.admitted


def test_indefinite_probe_failure_counts_like_passive() -> None:
    h = ADMITTED
    passive = ADMITTED
    for i in range(1, 5):
        h = record_probe(h, False, float(i), POLICY, "timeout", definite=False)
        passive = record_failure(passive, float(i), POLICY, "timeout")
        assert h == passive
        assert h.admitted == (i < POLICY.eject_after_failures)
    assert h.ejected_at == 3.0


def test_probe_and_passive_failures_share_the_streak() -> None:
    h = record_failure(ADMITTED, 1.0, POLICY, "reset")
    h = record_probe(h, False, 2.0, POLICY, "timeout", definite=False)
    assert h.admitted and h.consecutive_failures == 2
    h = record_failure(h, 3.0, POLICY, "reset")
    assert not h.admitted and h.ejected_at == 3.0


def test_definite_probe_failure_while_ejected_keeps_ejection_time() -> None:
    h = record_probe(ejected(at=100.0), False, 104.0, POLICY, "refused")
    assert h == opened(100.0, 4, "refused")


@pytest.mark.parametrize(
    ("now", "readmitted"),
    [
        (100.0, False),
        (101.0, False),
        (104.999, False),
        (105.0, True),  # exactly min_eject_s later
        (105.001, True),
        (1000.0, True),
    ],
)
def test_readmission_only_after_min_eject(now: float, readmitted: bool) -> None:
    h = ejected(at=100.0)
    after = record_probe(h, True, now, POLICY)
    if readmitted:
        assert after == ADMITTED
    else:
        assert after is h


def test_readmission_with_zero_min_eject() -> None:
    policy = HealthConfig(min_eject_s=0)
    h = record_probe(ADMITTED, False, 7.0, policy, "refused")
    assert record_probe(h, True, 7.0, policy) == ADMITTED


def test_ejected_without_timestamp_is_readmitted() -> None:
    h = Health(admitted=False, consecutive_failures=1, ejected_at=None, reason="?")
    assert record_probe(h, True, 0.0, POLICY) == ADMITTED


def test_full_cycle() -> None:
    h = fail_n(ADMITTED, 3, start=10.0)  # ejected at 12
    assert not h.admitted
    h = record_probe(h, True, 13.0, POLICY)  # too early
    assert not h.admitted
    h = record_probe(h, False, 14.0, POLICY, "still down")  # stays out, same ejection time
    assert not h.admitted and h.ejected_at == 12.0
    h = record_probe(h, True, 17.0, POLICY)  # 5 s after ejection
    assert h == ADMITTED
    # a fresh streak of N is needed again
    assert fail_n(h, 2, start=20.0).admitted
    assert not fail_n(h, 3, start=20.0).admitted


@pytest.mark.parametrize("streak", [0, 1, 2])
def test_probe_success_on_admitted_clears_streak(streak: int) -> None:
    h = fail_n(ADMITTED, streak)
    after = record_probe(h, True, 1.0, POLICY)
    assert after.admitted
    assert after.consecutive_failures == 0
    if streak == 0:
        assert after is h


def test_health_is_immutable() -> None:
    h = Health()
    with pytest.raises(AttributeError):
        h.admitted = False  # type: ignore[misc]
    fail_n(h, 3)
    assert h == ADMITTED  # recording returns new values


# --- the circuit breaker: open -> half-open -> one trial -> closed, or open for longer ---

@pytest.mark.parametrize(
    ("now", "state"),
    [(100.0, OPEN), (104.999, OPEN), (105.0, HALF_OPEN), (1e6, HALF_OPEN)],
)
def test_open_becomes_half_open_after_the_open_interval(now: float, state: int) -> None:
    h = ejected(at=100.0)
    assert circuit_state(h, now) == state
    assert available(h, now) == (state == HALF_OPEN)


def test_closed_is_always_available() -> None:
    h = fail_n(ADMITTED, 2)  # a streak, still closed
    assert available(h, 0.0) and available(h, 1e9)
    assert circuit_state(h, 0.0) == CLOSED


def test_exactly_one_trial_at_a_time() -> None:
    h = begin_trial(ejected(at=100.0), 106.0, POLICY)
    assert h.trial_at == 106.0 and not h.admitted
    assert circuit_state(h, 106.0) == HALF_OPEN
    for now in (106.0, 110.0, 135.999):
        assert not available(h, now), now  # the trial is in flight: no second one
    # a trial whose outcome never arrives blocks the next one for max_eject_s at most
    assert available(h, 136.0)


def test_trial_success_closes_the_circuit() -> None:
    h = begin_trial(ejected(), 106.0, POLICY)
    assert record_success(h) == ADMITTED


def test_begin_trial_on_a_closed_endpoint_changes_nothing() -> None:
    h = fail_n(ADMITTED, 1)
    assert begin_trial(h, 1.0, POLICY) is h


def test_failed_trials_back_off_exponentially_up_to_the_cap() -> None:
    h = fail_n(ADMITTED, 3, start=0.0)  # opened at 2.0 for min_eject_s
    intervals = [h.open_s]
    now = 2.0
    for _ in range(6):
        now = h.retry_at
        assert available(h, now) and not available(h, now - 0.001)
        h = begin_trial(h, now, POLICY)
        h = record_failure(h, now + 0.5, POLICY, "refused")  # the trial failed
        assert h.trial_at is None and h.ejected_at == now + 0.5
        assert h.retry_at == now + 0.5 + h.open_s
        intervals.append(h.open_s)
    assert intervals == [5.0, 10.0, 20.0, 30.0, 30.0, 30.0, 30.0]
    # success of the next trial closes it, and a later ejection starts from the base again
    h = record_success(begin_trial(h, h.retry_at, POLICY))
    assert h == ADMITTED
    assert fail_n(h, 3, start=1000.0).open_s == POLICY.min_eject_s


def test_trial_failure_reason_and_count() -> None:
    h = begin_trial(ejected(failures=3), 106.0, POLICY)
    h = record_failure(h, 107.0, POLICY, "connect failed")
    assert h == opened(107.0, 4, "connect failed", open_s=10.0)


def test_unsettled_trial_lets_the_next_request_try() -> None:
    h = begin_trial(ejected(at=100.0), 106.0, POLICY)
    assert not available(h, 106.5)
    after = end_trial(h)
    assert after.trial_at is None and available(after, 106.5)
    assert after.open_s == h.open_s and after.ejected_at == h.ejected_at
    assert end_trial(after) is after
    assert end_trial(ADMITTED) is ADMITTED


def test_probe_success_closes_during_a_trial_and_after_backoff() -> None:
    h = begin_trial(ejected(at=100.0), 106.0, POLICY)
    assert record_probe(h, True, 106.1, POLICY) == ADMITTED
    # after a failed trial the open interval is 10 s, but a probe needs only min_eject_s
    h = record_failure(h, 107.0, POLICY, "refused")
    assert h.open_s == 10.0
    assert record_probe(h, True, 111.0, POLICY) is h
    assert record_probe(h, True, 112.0, POLICY) == ADMITTED


@pytest.mark.parametrize("definite", [True, False])
def test_probe_failure_during_a_trial_is_no_trial_verdict(definite: bool) -> None:
    h = begin_trial(ejected(at=100.0), 106.0, POLICY)
    after = record_probe(h, False, 106.5, POLICY, "timeout", definite)
    assert after.trial_at == 106.0 and after.open_s == 5.0 and after.ejected_at == 100.0
    assert after.consecutive_failures == 4 and after.reason == "timeout"
    # the trial's own outcome still decides
    assert record_success(after) == ADMITTED


def test_cap_never_below_the_base() -> None:
    policy = HealthConfig(eject_after_failures=1, min_eject_s=8.0, max_eject_s=2.0)
    h = record_failure(ADMITTED, 0.0, policy, "x")
    assert h.open_s == 8.0
    h = record_failure(begin_trial(h, 8.0, policy), 8.0, policy, "x")
    assert h.open_s == 8.0 and h.retry_at == 16.0


def test_zero_base_allows_a_trial_at_once() -> None:
    policy = HealthConfig(eject_after_failures=1, min_eject_s=0.0)
    h = record_failure(ADMITTED, 5.0, policy, "x")
    assert circuit_state(h, 5.0) == HALF_OPEN and available(h, 5.0)
    h = begin_trial(h, 5.0, policy)
    assert not available(h, 5.0)  # still only one at a time
