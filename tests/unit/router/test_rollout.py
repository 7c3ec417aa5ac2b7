"""Rollout verdicts and the step state machine, in synthetic time."""

from __future__ import annotations

import pytest

from router.rollout import RolloutSpec, WindowStats, advance, judge, operator, start

SPEC = RolloutSpec(steps=(5, 25, 100), interval_s=30, min_samples=100)
GOOD = WindowStats(requests=1000, errors=2, p99_s=0.020)
BASE = WindowStats(requests=10_000, errors=20, p99_s=0.020)


@pytest.mark.parametrize(("canary", "action", "fragment"), [
    (WindowStats(50, 0, 0.01), "hold", "50/100"),
    (WindowStats(1000, 300, 0.02), "rollback", "error rate 30.00%"),
    (WindowStats(1000, 12, 0.02), "promote", "error rate"),  # exactly +1.0 point: allowed
    (WindowStats(1000, 40, 0.02), "rollback", "error rate"),
    (WindowStats(1000, 0, 0.045), "rollback", "p99"),
    (WindowStats(1000, 0, 0.029), "promote", ""),
    (WindowStats(1000, 0, 0.02, agreement=0.90), "rollback", "agreement"),
    (WindowStats(1000, 0, 0.02, agreement=0.995), "promote", ""),
    (WindowStats(1000, 0, None), "promote", ""),
])
def test_judge(canary: WindowStats, action: str, fragment: str) -> None:
    verdict = judge(SPEC, canary, BASE)
    assert verdict.action == action
    assert fragment in verdict.reason


def test_healthy_canary_is_promoted_step_by_step() -> None:
    state = start("clf", "canary", "stable", SPEC, now=0)
    assert state.weights() == {"canary": 5, "stable": 95}
    state = advance(state, GOOD, BASE, now=10)
    assert state.step == 0, "no step before the interval is over"
    state = advance(state, GOOD, BASE, now=31)
    assert state.weights() == {"canary": 25, "stable": 75}
    state = advance(state, GOOD, BASE, now=62)
    assert state.canary_weight == 100 and state.status == "running"
    state = advance(state, GOOD, BASE, now=93)
    assert state.status == "promoted" and state.weights() == {"canary": 100, "stable": 0}
    assert [h.action for h in state.history] == ["start", "step", "step", "promoted"]
    assert advance(state, WindowStats(1000, 999), BASE, now=200) is state


def test_failing_canary_is_rolled_back_at_once_with_the_reason() -> None:
    state = start("clf", "canary", "stable", SPEC, now=0)
    state = advance(state, WindowStats(150, 45, 0.02), BASE, now=5)
    assert state.status == "rolled_back" and state.weights() == {"canary": 0, "stable": 100}
    last = state.history[-1]
    assert last.action == "rollback" and "error rate 30.00%" in last.reason


def test_too_few_samples_holds() -> None:
    state = start("clf", "canary", "stable", SPEC, now=0)
    assert advance(state, WindowStats(10, 5), BASE, now=1000).step == 0


def test_operator_abort_and_promote() -> None:
    state = start("clf", "canary", "stable", SPEC, now=0)
    aborted = operator(state, "abort", now=3)
    assert aborted.status == "aborted" and aborted.canary_weight == 0
    promoted = operator(state, "promote", now=3)
    assert promoted.status == "promoted" and promoted.canary_weight == 100
    assert operator(aborted, "promote", now=4) is aborted
