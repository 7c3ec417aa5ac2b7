"""router.balance.pick_endpoint with circuit state: half-open endpoints get exactly one trial."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from random import Random

import pytest

from contracts import HealthConfig
from router import ADMITTED, Health, pick_endpoint, record_failure, record_success
from router.health import begin_trial

POLICY = HealthConfig(eject_after_failures=1, min_eject_s=5.0, max_eject_s=30.0)


@dataclass(eq=False)
class Ep:
    name: str
    health: Health = ADMITTED
    outstanding: int = 0

    @property
    def admitted(self) -> bool:
        return self.health.admitted


class NoHealth:
    """An admitted endpoint whose health must never be read."""

    outstanding = 0
    admitted = True

    @property
    def health(self) -> Health:
        raise AssertionError("health read for an admitted endpoint")


def ejected_at(t: float) -> Health:
    return record_failure(ADMITTED, t, POLICY, "refused")  # open until t + 5


def test_without_now_only_admitted_endpoints_are_candidates() -> None:
    pool = [Ep("a", ejected_at(0.0)), Ep("b")]
    for seed in range(50):
        assert pick_endpoint(pool, Random(seed)) is pool[1]


@pytest.mark.parametrize(("now", "candidate"), [(4.999, False), (5.0, True), (500.0, True)])
def test_half_open_endpoint_is_a_candidate_once_due(now: float, candidate: bool) -> None:
    only = [Ep("a", ejected_at(0.0))]
    assert (pick_endpoint(only, Random(0), now=now) is only[0]) == candidate


def test_trial_in_flight_is_not_a_candidate() -> None:
    ep = Ep("a", begin_trial(ejected_at(0.0), 6.0, POLICY))
    assert pick_endpoint([ep], Random(0), now=7.0) is None
    assert pick_endpoint([ep], Random(0), now=36.0) is ep  # the lost-trial lease ran out


def test_exclude_applies_to_half_open_endpoints() -> None:
    pool = [Ep("a", ejected_at(0.0)), Ep("b")]
    assert pick_endpoint(pool, Random(0), [pool[1]], now=10.0) is pool[0]
    assert pick_endpoint(pool, Random(0), [pool[0]], now=10.0) is pool[1]
    assert pick_endpoint(pool, Random(0), pool, now=10.0) is None


def test_admitted_endpoints_never_read_health() -> None:
    pool = [NoHealth(), NoHealth(), NoHealth()]
    for seed in range(20):
        assert pick_endpoint(pool, Random(seed), now=1.0) in pool
        assert pick_endpoint(pool, Random(seed), pool[:1], now=1.0) in pool[1:]


def test_one_trial_among_many_picks_then_traffic_returns() -> None:
    """The gateway's loop: pick, start a trial when the pick is not closed; many requests
    arrive while the trial is in flight; the dead endpoint gets exactly one of them."""
    pool = [Ep("dead", ejected_at(0.0)), Ep("b"), Ep("c")]
    rng = Random(3)
    now = 10.0
    seen: Counter[str] = Counter()
    for _ in range(3000):
        ep = pick_endpoint(pool, rng, now=now)
        assert ep is not None
        if not ep.admitted:
            ep.health = begin_trial(ep.health, now, POLICY)
        seen[ep.name] += 1
    assert seen["dead"] == 1
    # the trial succeeds: the endpoint is closed and shares the load again
    pool[0].health = record_success(pool[0].health)
    seen.clear()
    for _ in range(3000):
        ep = pick_endpoint(pool, rng, now=now)
        assert ep is not None
        seen[ep.name] += 1
    assert min(seen.values()) > 700, seen
