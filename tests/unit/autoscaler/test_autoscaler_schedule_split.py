"""Schedule windows (days, times, zones, DST, past midnight) and split-aware planning."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest

from autoscaler.policy import Floor, Variant, make_window, merge_floors, plan_split
from autoscaler.policy.schedule import is_active, schedule_floor
from contracts.schedule import parse_clock, parse_days


def at(tz: str, *args: int) -> float:
    return datetime(*args, tzinfo=ZoneInfo(tz)).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(("text", "days"), [
    ("mon-fri", {0, 1, 2, 3, 4}), ("*", set(range(7))), ("sat,sun", {5, 6}),
    ("fri-mon", {4, 5, 6, 0}), ("Tuesday", {1}),
])
def test_parse_days(text: str, days: set[int]) -> None:
    assert parse_days(text) == frozenset(days)


@pytest.mark.parametrize("bad", ["funday", "mo", "mon-xyz", ""])
def test_bad_days(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_days(bad)


@pytest.mark.parametrize(("text", "want"), [("08:00", time(8)), ("23:59", time(23, 59)),
                                            ("24:00", time(0))])
def test_parse_clock(text: str, want: time) -> None:
    assert parse_clock(text) == want


@pytest.mark.parametrize("bad", ["8", "25:00", "08:60", "8:5", "ab:cd"])
def test_bad_clock(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_clock(bad)


def test_unknown_zone() -> None:
    with pytest.raises(ValueError, match="time zone"):
        make_window("*", "08:00", "09:00", "Mars/Olympus", 1)


def test_local_time_follows_daylight_saving() -> None:
    w = make_window("*", "08:00", "09:00", "Europe/Berlin", 2)
    # 08:30 local is 07:30 UTC in winter (CET) and 06:30 UTC in summer (CEST)
    assert is_active(w, at("UTC", 2024, 1, 15, 7, 30))
    assert not is_active(w, at("UTC", 2024, 1, 15, 6, 30))
    assert is_active(w, at("UTC", 2024, 7, 15, 6, 30))
    assert not is_active(w, at("UTC", 2024, 7, 15, 7, 30))


def test_window_past_midnight_belongs_to_its_start_day() -> None:
    w = make_window("fri", "22:00", "06:00", "UTC", 4)
    assert is_active(w, at("UTC", 2024, 6, 7, 23))       # Friday 23:00
    assert is_active(w, at("UTC", 2024, 6, 8, 5, 59))    # Saturday 05:59
    assert not is_active(w, at("UTC", 2024, 6, 8, 6))    # Saturday 06:00
    assert not is_active(w, at("UTC", 2024, 6, 6, 23))   # Thursday 23:00


def test_schedule_floor_takes_the_highest_active() -> None:
    ws = [make_window("*", "00:00", "24:00", "UTC", 1, "always"),
          make_window("mon-fri", "09:00", "17:00", "America/New_York", 6, "ny office")]
    assert schedule_floor(ws, at("America/New_York", 2024, 6, 4, 10)) == (6, "ny office")
    assert schedule_floor(ws, at("America/New_York", 2024, 6, 8, 10)) == (1, "always")
    assert schedule_floor([], 0.0) == (0, "")


# --------------------------------------------------------------------------------------------
# split-aware planning
# --------------------------------------------------------------------------------------------

CANARY = [Variant("stable-pool", 90, stable=True), Variant("canary-pool", 10)]


def test_shares_of_the_model_total() -> None:
    plan = plan_split("m", 20, CANARY, ready={"stable-pool": 20, "canary-pool": 2},
                      current={"stable-pool": 20, "canary-pool": 2})
    assert {p: f.replicas for p, f in plan.items()} == {"stable-pool": 18, "canary-pool": 2}
    assert "90%" in plan["stable-pool"].reason


def test_stable_is_not_reduced_before_the_canary_is_ready() -> None:
    plan = plan_split("m", 20, CANARY, ready={"stable-pool": 20, "canary-pool": 0},
                      current={"stable-pool": 20, "canary-pool": 2})
    assert plan["canary-pool"].replicas == 2  # the canary starts now, before its traffic
    assert plan["stable-pool"].replicas == 20
    assert "until canary-pool ready" in plan["stable-pool"].reason


def test_stable_keeps_only_what_it_has_while_waiting() -> None:
    plan = plan_split("m", 20, CANARY, ready={"canary-pool": 1},
                      current={"stable-pool": 19, "canary-pool": 2})
    assert plan["stable-pool"].replicas == 19


def test_any_traffic_share_gets_a_replica_and_zero_weight_none() -> None:
    variants = [Variant("a", 99, stable=True), Variant("b", 1), Variant("c", 0)]
    plan = plan_split("m", 10, variants, ready={"b": 1}, current={})
    assert {p: f.replicas for p, f in plan.items()} == {"a": 10, "b": 1, "c": 0}
    assert plan_split("m", 0, variants, {}, {})["a"].replicas == 0


def test_variants_on_one_pool_add_up_and_shadow_comes_on_top() -> None:
    variants = [Variant("p", 50, stable=True), Variant("p", 50),
                Variant("shadow-pool", 0.2, shadow=True)]
    plan = plan_split("m", 10, variants, ready={}, current={})
    assert plan["p"].replicas == 10 and plan["shadow-pool"].replicas == 2


def test_merge_floors_keeps_the_highest_per_pool() -> None:
    merged = merge_floors([{"a": Floor(2, "x"), "b": Floor(5, "y")}, {"a": Floor(3, "z")}])
    assert merged == {"a": Floor(3, "z"), "b": Floor(5, "y")}
