"""router.health: passive ejection and active-probe re-admission, with synthetic clocks."""

from __future__ import annotations

import pytest

from router import ADMITTED, Health, HealthConfig, record_failure, record_probe, record_success

POLICY = HealthConfig(eject_after_failures=3, min_eject_s=5.0)


def fail_n(h: Health, n: int, start: float = 100.0, policy: HealthConfig = POLICY) -> Health:
    for i in range(n):
        h = record_failure(h, start + i, policy, f"fail {i + 1}")
    return h


def ejected(at: float = 100.0, failures: int = 3) -> Health:
    return Health(admitted=False, consecutive_failures=failures, ejected_at=at, reason="x")


def test_initial_state() -> None:
    assert Health() == ADMITTED
    assert ADMITTED.admitted and ADMITTED.consecutive_failures == 0
    assert ADMITTED.ejected_at is None and ADMITTED.reason == ""


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
    assert h == Health(admitted=False, consecutive_failures=threshold, ejected_at=50.0,
                       reason="last")


def test_failures_while_ejected_keep_the_ejection_time() -> None:
    h = fail_n(ADMITTED, 3, start=10.0)  # ejected at 12.0
    assert h.ejected_at == 12.0
    h = record_failure(h, 30.0, POLICY, "again")
    assert h == Health(admitted=False, consecutive_failures=4, ejected_at=12.0, reason="again")


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


def test_success_does_not_readmit() -> None:
    h = record_success(ejected())
    assert not h.admitted
    assert h.consecutive_failures == 0
    assert h.ejected_at == 100.0


@pytest.mark.parametrize("streak", [0, 1, 2])
def test_definite_probe_failure_ejects_at_once(streak: int) -> None:
    h = fail_n(ADMITTED, streak)
    h = record_probe(h, False, 500.0, POLICY, "connection refused")
    assert h == Health(admitted=False, consecutive_failures=streak + 1, ejected_at=500.0,
                       reason="connection refused")


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
    assert not h.admitted
    assert h.ejected_at == 100.0
    assert h.consecutive_failures == 4
    assert h.reason == "refused"


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
