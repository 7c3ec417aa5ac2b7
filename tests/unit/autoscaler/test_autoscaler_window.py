"""autoscaler.policy.window.Window: bucketed averages in synthetic time."""

from __future__ import annotations

import pytest

from autoscaler.policy import NoData, Window


def test_empty_window_is_no_data() -> None:
    w = Window(60.0)
    assert isinstance(w.average(100.0, 60.0), NoData)


def test_average_over_buckets_with_data() -> None:
    w = Window(60.0)
    for t in range(1, 61):
        w.record(float(t), float(t))
    assert w.average(60.0, 60.0) == pytest.approx(30.5)
    assert w.average(60.0, 6.0) == pytest.approx(57.5)  # 55..60
    both = w.windowed(60.0, 60.0, 6.0)
    assert (both.stable, both.panic) == (pytest.approx(30.5), pytest.approx(57.5))


def test_values_in_one_bucket_are_averaged() -> None:
    w = Window(10.0)
    w.record(5.1, 10.0)
    w.record(5.6, 20.0)
    w.record(6.0, 40.0)
    assert w.average(6.0, 2.0) == pytest.approx((15.0 + 40.0) / 2)


def test_missing_buckets_are_left_out_not_zero() -> None:
    w = Window(60.0)
    w.record(10.0, 8.0)
    w.record(40.0, 4.0)  # nothing recorded in between (failed scrapes)
    assert w.average(40.0, 60.0) == pytest.approx(6.0)


def test_old_samples_fall_out_and_staleness_is_no_data() -> None:
    w = Window(30.0, stale_after_s=5.0)
    w.record(1.0, 100.0)
    w.record(50.0, 2.0)
    assert w.average(50.0, 30.0) == pytest.approx(2.0)
    stale = w.average(60.0, 30.0)
    assert isinstance(stale, NoData) and "stale" in stale.reason


def test_long_runs_keep_exact_averages_after_trimming() -> None:
    w = Window(60.0)
    for t in range(1, 5001):
        w.record(float(t), float(t % 7))
    expected = sum(t % 7 for t in range(4941, 5001)) / 60
    assert w.average(5000.0, 60.0) == pytest.approx(expected)


def test_out_of_order_samples_are_refused() -> None:
    w = Window(60.0)
    w.record(10.0, 1.0)
    with pytest.raises(ValueError):
        w.record(5.0, 1.0)
