"""router.cost: attribution maths (the per-pool invariant, idle share, fractions), prices,
windows and the ledger. Synthetic time only."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import ConfigError, parse_config
from router.cost import (
    IDLE,
    CostConfig,
    DemandState,
    Ledger,
    PoolInterval,
    attribute,
    gpu_fraction,
    group_rows,
    parse_window,
    report_rows,
)

A, B = ("classifier", "acme"), ("classifier", "globex")


def interval(dt: float = 1.0, ready: int = 2, gpus: float = 1.0, busy: float = 0.0,
             demand: dict[tuple[str, str], float] | None = None, share: float = 1.0
             ) -> PoolInterval:
    return PoolInterval(dt, ready, gpus, busy, demand or {}, share)


def total(charges: object) -> float:
    return sum(c.gpu_s for c in charges.rows.values())  # type: ignore[attr-defined]


def test_busy_split_by_demand_and_idle_by_decayed_demand() -> None:
    # 2 replicas x 1 GPU x 10 s = 20 GPU-s; endpoints busy 8 s in all; A sent 3x B's time.
    ch, state = attribute(interval(10, 2, 1, 8, {A: 3.0, B: 1.0}), DemandState(), 600)
    assert ch.provisioned_s == 20 and ch.busy_s == 8
    assert ch.rows[A].gpu_s - ch.rows[A].idle_s == pytest.approx(6)
    assert ch.rows[B].gpu_s - ch.rows[B].idle_s == pytest.approx(2)
    assert ch.rows[A].idle_s == pytest.approx(9) and ch.rows[B].idle_s == pytest.approx(3)
    assert total(ch) == pytest.approx(20)
    assert state.weights == {A: 3.0, B: 1.0}


def test_idle_with_no_demand_ever_is_its_own_row() -> None:
    ch, _ = attribute(interval(5, 3, 0.5), DemandState(), 600)
    assert ch.rows == {(IDLE, IDLE): ch.rows[(IDLE, IDLE)]}
    assert ch.rows[(IDLE, IDLE)].gpu_s == ch.rows[(IDLE, IDLE)].idle_s == pytest.approx(7.5)


def test_idle_between_bursts_goes_to_recent_users_and_fades() -> None:
    _, state = attribute(interval(1, 1, 1, 0.5, {A: 0.5}), DemandState(), 10)
    ch, state = attribute(interval(10, 1, 1), state, 10)  # quiet: A pays for the idle pool
    assert ch.rows[A].gpu_s == pytest.approx(10) and ch.rows[A].idle_s == pytest.approx(10)
    assert state.weights[A] == pytest.approx(0.25)  # one half-life later
    for _ in range(40):  # many half-lives later nobody is charged any more
        ch, state = attribute(interval(10, 1, 1), state, 10)
    assert set(ch.rows) == {(IDLE, IDLE)}


def test_half_life_zero_charges_idle_only_to_this_ticks_demand() -> None:
    _, state = attribute(interval(1, 1, 1, 0.5, {A: 0.5}), DemandState(), 0)
    ch, _ = attribute(interval(1, 1, 1, 0.2, {B: 0.2}), state, 0)
    assert set(ch.rows) == {B} and ch.rows[B].gpu_s == pytest.approx(1)


def test_fractional_gpus_scale_provisioned_and_busy() -> None:
    whole, _ = attribute(interval(4, 2, 1.0, 4, {A: 1}), DemandState(), 600)
    mig, _ = attribute(interval(4, 2, 1 / 7, 4, {A: 1}), DemandState(), 600)
    assert mig.provisioned_s == pytest.approx(whole.provisioned_s / 7)
    assert mig.busy_s == pytest.approx(whole.busy_s / 7)
    assert total(mig) == pytest.approx(8 / 7)


def test_busy_never_exceeds_provisioned_and_a_pool_at_zero_costs_nothing() -> None:
    ch, _ = attribute(interval(1, 1, 1, busy=50, demand={A: 50}), DemandState(), 600)
    assert ch.busy_s == 1 and total(ch) == pytest.approx(1)
    zero, _ = attribute(interval(1, 0, 1, busy=0.3, demand={A: 0.3}), DemandState(), 600)
    assert zero.provisioned_s == 0 and total(zero) == 0


def test_gateway_share_divides_the_pool_between_replicas() -> None:
    ch, _ = attribute(interval(10, 2, 1, 4, {A: 1}, share=0.25), DemandState(), 600)
    assert ch.provisioned_s == pytest.approx(5) and total(ch) == pytest.approx(5)


keys = st.tuples(st.sampled_from(["m1", "m2", "m3"]), st.sampled_from(["t1", "t2", "_shadow"]))


@settings(max_examples=300, deadline=None)
@given(ticks=st.lists(st.tuples(
    st.floats(0, 30), st.integers(0, 8), st.sampled_from([1.0, 0.25, 1 / 7, 2.0]),
    st.floats(0, 300), st.dictionaries(keys, st.floats(0, 100), max_size=6)), min_size=1,
    max_size=20), half_life=st.sampled_from([0.0, 5.0, 600.0]))
def test_invariant_sum_of_charges_is_provisioned_at_every_tick(
        ticks: list[tuple[float, int, float, float, dict[tuple[str, str], float]]],
        half_life: float) -> None:
    state = DemandState()
    for dt, ready, gpus, busy, demand in ticks:
        ch, state = attribute(interval(dt, ready, gpus, busy, demand), state, half_life)
        assert math.isclose(total(ch), ch.provisioned_s, rel_tol=1e-9, abs_tol=1e-9)
        assert all(c.gpu_s >= 0 and 0 <= c.idle_s <= c.gpu_s + 1e-12 for c in ch.rows.values())
        assert 0 <= ch.busy_s <= ch.provisioned_s + 1e-9


def test_gpu_fraction_of_resource_names() -> None:
    assert gpu_fraction("nvidia.com/gpu") == 1.0
    assert gpu_fraction("nvidia.com/mig-1g.10gb") == pytest.approx(1 / 7)
    assert gpu_fraction("nvidia.com/mig-3g.40gb") == pytest.approx(3 / 7)
    assert gpu_fraction("nvidia.com/gpu.shared") is None


def test_cost_config_fraction_and_price() -> None:
    assert CostConfig().gpus == 1.0 and CostConfig().price == 0.0
    assert CostConfig(gpu_resource="nvidia.com/mig-2g.20gb").gpus == pytest.approx(2 / 7)
    assert CostConfig(gpu_resource="nvidia.com/mig-1g.10gb", gpus_per_resource=2).gpus == \
        pytest.approx(2 / 7)
    assert CostConfig(gpus_per_replica=0.25, gpu_resource="nvidia.com/gpu.shared").gpus == 0.25
    spot = CostConfig(capacity="spot", price_per_gpu_hour=4.0, spot_price_per_gpu_hour=1.5)
    assert spot.price == 1.5
    assert CostConfig(price_per_gpu_hour=4.0, spot_price_per_gpu_hour=1.5).price == 4.0


@pytest.mark.parametrize(("cost", "problem"), [
    ({"gpu_resource": "nvidia.com/gpu.shared"}, "set gpus_per_replica"),
    ({"capacity": "spot"}, "needs spot_price_per_gpu_hour"),
    ({"gpus_per_replica": 0}, "greater than 0"),
    ({"price_per_gpu_hour": -1}, "greater than or equal to 0"),
    ({"gpus": 1}, "Extra inputs"),
])
def test_bad_cost_config_names_the_path(cost: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"pools": {"gpu": {"cost": cost}}, "models": {"m": {"pool": "gpu"}}})
    assert "pools.gpu.cost" in str(info.value) and problem in str(info.value)


def test_reserved_tenant_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="reserved for cost"):
        parse_config({"pools": {"p": {}}, "models": {"m": {"pool": "p"}},
                      "tenants": {"_idle": {}}})


@pytest.mark.parametrize(("text", "seconds"), [
    ("1h", 3600), ("15m", 900), ("90s", 90), ("90", 90), ("1d", 86400), ("0.5h", 1800)])
def test_parse_window(text: str, seconds: float) -> None:
    assert parse_window(text, 86400) == seconds


@pytest.mark.parametrize("text", ["", "1w", "h", "-5m", "0s", "2d", "1h30m", "abc"])
def test_parse_window_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="window"):
        parse_window(text, 86400)


def test_ledger_window_sums_buckets_and_rows_report_per_1k() -> None:
    ledger = Ledger(bucket_s=60, retention_s=3600)
    base = 60.0 * 16_667
    for minute in range(10):
        now = base + minute * 60.0 + 59  # each tick ends late in its minute
        ch, _ = attribute(interval(60, 1, 1, 30, {A: 20.0, B: 10.0}), DemandState(), 0)
        ledger.add(now, 60, "gpu", ch, 3.6, {A: 200, B: 100})
        ledger.tick_done(now, 60)
    rows, pools, covered = ledger.window(base + 9 * 60.0 + 59, 300)
    assert covered == 300 and pools["gpu"].gpu_s == pytest.approx(300)
    docs = {(r["model"], r["tenant"]): r for r in report_rows(rows)}
    a = docs[A]
    assert a["requests"] == 1000 and a["gpu_seconds"] == pytest.approx(200)
    assert a["dollars"] == pytest.approx(0.2) and a["dollars_per_1k"] == pytest.approx(0.2)
    assert a["idle_share"] == pytest.approx(0.5)
    by_tenant = {r["tenant"]: r for r in group_rows(report_rows(rows), "tenant")}
    assert by_tenant["acme"]["gpu_seconds"] == pytest.approx(200)
    with pytest.raises(ValueError, match="group by"):
        group_rows([], "region")


def test_a_window_shorter_than_a_bucket_still_sees_the_current_one() -> None:
    ledger = Ledger(bucket_s=60, retention_s=3600)
    ch, _ = attribute(interval(1, 1, 1), DemandState(), 0)
    ledger.add(6000.0 + 50, 1, "gpu", ch, 0, {})
    _, pools, _ = ledger.window(6000.0 + 55, 30)
    assert pools["gpu"].gpu_s == pytest.approx(1)


def test_ledger_forgets_buckets_past_retention() -> None:
    ledger = Ledger(bucket_s=60, retention_s=600)
    ch, _ = attribute(interval(60, 1, 1), DemandState(), 0)
    ledger.add(0.0, 60, "gpu", ch, 0, {})
    ledger.add(10_000.0, 60, "gpu", ch, 0, {})
    _rows, pools, _ = ledger.window(10_000.0, 86400)
    assert pools["gpu"].gpu_s == pytest.approx(60)
