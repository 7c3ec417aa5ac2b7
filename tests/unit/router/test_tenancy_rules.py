"""router.tenancy: the config sections and the pure admission decisions (rate windows,
concurrency, shedding order, class resolution)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import ConfigError, parse_config
from contracts.tenancy import TenantConfig
from router.tenancy import (
    SheddingConfig,
    concurrency_allows,
    local_share,
    queue_per_endpoint,
    rate_allows,
    resolve_priority,
    retry_after_s,
    should_shed,
    window_estimate,
    window_of,
)

BASE = {"pools": {"p": {"endpoints": ["127.0.0.1:1"]}}, "models": {"m": {"pool": "p"}}}


def test_sections_parse_with_defaults() -> None:
    cfg = parse_config({
        **BASE,
        "auth": {"header": "X-Api-Key"},
        "tenants": {"acme": {"models": ["m", "emb*"], "priority": "critical",
                             "requests_per_s": 10, "max_concurrency": 2}},
        "models": {"m": {"pool": "p", "priority": "sheddable", "max_in_flight": 4}},
        "pools": {"p": {"endpoints": ["127.0.0.1:1"],
                        "shedding": {"sheddable_at": 2, "standard_at": 8}}},
    })
    assert cfg.auth is not None and cfg.auth.header == "x-api-key" and not cfg.auth.bearer
    acme = cfg.tenants["acme"]
    assert acme.allows("m") and acme.allows("embedder") and not acme.allows("other")
    assert cfg.models["m"].max_in_flight == 4
    assert cfg.priorities.level("critical") == 1 and cfg.priorities.level("standard") == 0
    assert cfg.pools["p"].shedding.sheddable_at == 2


@pytest.mark.parametrize("bad, where", [
    ({"auth": {}}, "auth"),  # keys on, nobody to own them
    ({"auth": {"header": "bad header"}, "tenants": {"a": {}}}, "auth.header"),
    ({"tenants": {"a": {"priority": "urgent"}}}, "tenants.a.priority"),
    ({"tenants": {"a": {"requests_per_s": 0}}}, "tenants.a.requests_per_s"),
    ({"tenants": {"a": {"max_concurrency": 0}}}, "tenants.a.max_concurrency"),
])
def test_bad_sections_name_the_key(bad: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, **bad})
    assert where in str(err.value)


def test_tenant_allows_everything_by_default() -> None:
    assert TenantConfig().allows("anything")
    assert not TenantConfig(models=[]).allows("anything")


def test_priority_resolution_order() -> None:
    assert resolve_priority("critical", "sheddable") == "critical"
    assert resolve_priority(None, "sheddable") == "sheddable"
    assert resolve_priority(None, None) == "standard"


def test_shedding_order_sheddable_first_critical_never() -> None:
    cfg = SheddingConfig(sheddable_at=2, standard_at=5)
    assert [should_shed(p, 1, cfg) for p in ("sheddable", "standard", "critical")] == \
        [False, False, False]
    assert [should_shed(p, 3, cfg) for p in ("sheddable", "standard", "critical")] == \
        [True, False, False]
    assert [should_shed(p, 99, cfg) for p in ("sheddable", "standard", "critical")] == \
        [True, True, False]
    # Only a standard threshold: sheddable goes at the same point, not never.
    assert should_shed("sheddable", 5, SheddingConfig(standard_at=5))
    assert not should_shed("sheddable", 99, SheddingConfig())


def test_queue_per_ready_endpoint() -> None:
    assert queue_per_endpoint(8, 0, 4) == 2
    assert queue_per_endpoint(0, 3, 0) == 3  # a pool at zero counts as one


def test_window_of_and_estimate() -> None:
    assert window_of(10.25, 1.0) == (10, 0.25)
    index, elapsed = window_of(7.5, 2.0)
    assert index == 3 and elapsed == pytest.approx(0.75)
    assert window_estimate(10, 4, 0.25) == pytest.approx(11.5)


def test_rate_allows_exactly_the_limit_in_a_fresh_window() -> None:
    admitted = 0
    for _ in range(20):
        if rate_allows(10, 0, admitted, 0.5):
            admitted += 1
    assert admitted == 10


@given(st.floats(0, 100), st.floats(0, 100), st.floats(0, 0.999), st.floats(1, 50))
def test_retry_after_is_enough(previous: float, current: float, elapsed: float,
                               limit: float) -> None:
    if rate_allows(limit, previous, current, elapsed):
        return
    wait = retry_after_s(limit, previous, current, elapsed, 1.0)
    assert wait >= 1
    later = elapsed + wait
    if later < 1:  # still in this window: the previous window's share has slid out enough
        assert rate_allows(limit, previous, current, later)
    else:  # never more than to the start of the next window
        assert wait == max(1, -int(-(1 - elapsed) // 1))


def test_concurrency_and_local_share() -> None:
    assert concurrency_allows(3, 1, 1)
    assert not concurrency_allows(3, 2, 1)
    assert local_share(9, 3) == 3
    assert local_share(9, 0) == 9
