"""router.residency (placement and eviction, pure) and the model-managed pool config."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import ConfigError, parse_config
from contracts.config import ResidencyConfig
from router.residency import FleetView, Load, NoRoom, Unload, place_load, plan, wanted_replicas

SPEC = ResidencyConfig(idle_grace_s=60, min_residency_s=10)


def view(held: dict[str, dict[str, float]], capacity: int = 2, **kw: Any) -> FleetView:
    return FleetView(endpoints=tuple(held), capacity=capacity, held=held, **kw)


# ------------------------------------------------------------------------------- place_load

def test_free_slot_on_the_emptiest_endpoint() -> None:
    v = view({"a": {"m1": 0.0}, "b": {}})
    assert place_load("m2", v, SPEC, now=100) == Load("b", "m2")


def test_loading_models_take_slots() -> None:
    v = view({"a": {}, "b": {}}, loading={"b": frozenset({"x"})})
    assert place_load("m", v, SPEC, now=0) == Load("a", "m")


def test_full_evicts_least_recently_used_idle_model() -> None:
    v = view({"a": {"m1": 0.0, "m2": 0.0}, "b": {"m3": 0.0, "m4": 0.0}},
             last_used={"m1": 50, "m2": 90, "m3": 30, "m4": 80})
    assert place_load("new", v, SPEC, now=100) == Load("b", "new", evict=("m3",))


def test_min_residency_prevents_thrash() -> None:
    v = view({"a": {"m1": 95.0, "m2": 95.0}}, last_used={"m1": 0, "m2": 0})
    out = place_load("new", v, SPEC, now=100)
    assert isinstance(out, NoRoom)
    assert "10s ago" in out.reason


def test_busy_model_is_never_evicted() -> None:
    v = view({"a": {"m1": 0.0, "m2": 0.0}}, last_used={"m1": 1, "m2": 99},
             busy=frozenset({"m1"}))
    assert place_load("new", v, SPEC, now=100) == Load("a", "new", evict=("m2",))


def test_spare_replica_goes_before_an_only_copy() -> None:
    v = view({"a": {"hot": 0.0, "solo": 0.0}, "b": {"hot": 0.0, "other": 0.0}},
             last_used={"hot": 99, "solo": 1, "other": 2})
    assert place_load("new", v, SPEC, now=100) == Load("a", "new", evict=("hot",))


def test_memory_limit_evicts_as_many_as_it_takes() -> None:
    v = FleetView(endpoints=("a",), capacity=None, memory=10, default_size=2,
                  sizes={"big": 7}, held={"a": {"s1": 0.0, "s2": 0.0, "s3": 0.0, "s4": 0.0}},
                  last_used={"s1": 40, "s2": 10, "s3": 30, "s4": 20})
    assert v.fits("a", "s5") and not v.fits("a", "big")
    # 8 of 10 bytes used: 7 more needs 5 freed, i.e. the three least recently used
    assert place_load("big", v, SPEC, now=100) == Load("a", "big", evict=("s2", "s4", "s3"))
    assert place_load("s5", v, SPEC, now=100) == Load("a", "s5")


def test_memory_and_count_limits_together() -> None:
    v = FleetView(endpoints=("a", "b"), capacity=2, memory=10, default_size=1,
                  sizes={"big": 9}, held={"a": {"big": 0.0}, "b": {"x": 0.0, "y": 0.0}},
                  last_used={"big": 99, "x": 10, "y": 20})
    assert place_load("z", v, SPEC, now=100) == Load("a", "z")  # a: 1 model, 9+1 bytes
    assert place_load("huge", FleetView(endpoints=("a",), capacity=None, memory=5,
                                        default_size=6, held={}), SPEC, now=0) == NoRoom(
        "no endpoint has room for it, counting only models not in use and loaded at least "
        "10s ago")


def test_no_endpoint() -> None:
    assert isinstance(place_load("m", view({}), SPEC, now=0), NoRoom)


# ------------------------------------------------------------------------------------- plan

def test_idle_past_grace_is_unloaded_everywhere() -> None:
    v = view({"a": {"old": 0.0, "new": 0.0}, "b": {"old": 0.0}},
             last_used={"old": 30, "new": 95})
    assert plan(v, SPEC, now=100) == [Unload("a", "old", "idle"), Unload("b", "old", "idle")]


def test_idle_but_busy_is_kept() -> None:
    v = view({"a": {"old": 0.0}}, last_used={"old": 0}, busy=frozenset({"old"}))
    assert plan(v, SPEC, now=100) == []


def test_hot_model_grows_into_free_slots_only() -> None:
    spec = ResidencyConfig(idle_grace_s=60, min_residency_s=10, rate_per_replica=10)
    v = view({"a": {"hot": 0.0}, "b": {}, "c": {"x": 0.0, "y": 0.0}},
             last_used={"hot": 99, "x": 99, "y": 99}, rate={"hot": 25})
    assert wanted_replicas("hot", v, spec) == 3
    assert plan(v, spec, now=100) == [Load("b", "hot")]


def test_cooled_model_gives_back_a_replica() -> None:
    spec = ResidencyConfig(idle_grace_s=60, min_residency_s=10, rate_per_replica=10)
    v = view({"a": {"m": 0.0}, "b": {"m": 0.0}}, last_used={"m": 99}, rate={"m": 3})
    assert plan(v, spec, now=100) == [Unload("b", "m", "spare")]
    young = view({"a": {"m": 0.0}, "b": {"m": 95.0}}, last_used={"m": 99}, rate={"m": 3})
    assert plan(young, spec, now=100) == [Unload("a", "m", "spare")]


def test_without_rate_per_replica_one_endpoint_per_model() -> None:
    v = view({"a": {"m": 0.0}, "b": {}}, last_used={"m": 99}, rate={"m": 1000})
    assert plan(v, SPEC, now=100) == []


# ----------------------------------------------------------------------------------- config

def managed(**pool: Any) -> dict[str, Any]:
    return {"pools": {"zoo": {"endpoints": ["127.0.0.1:8000"], **pool}},
            "models": {"zoo-00": {"pool": "zoo"}}}


def test_managed_pool_parses() -> None:
    cfg = parse_config(managed(model_control="explicit", capacity={"models": 4},
                               residency={"idle_grace_s": 5, "min_residency_s": 1}))
    pool = cfg.pools["zoo"]
    assert pool.managed and pool.capacity is not None and pool.capacity.models == 4
    assert pool.residency.idle_grace_s == 5
    assert not parse_config(managed()).pools["zoo"].managed


@pytest.mark.parametrize(("pool", "needle"), [
    ({"model_control": "explicit"}, "needs 'capacity'"),
    ({"capacity": {"models": 2}}, "capacity apply only to pools with model_control: explicit"),
    ({"residency": {"idle_grace_s": 3}}, "residency apply only"),
    ({"model_control": "explicit", "capacity": {"models": 0}}, "capacity.models"),
    ({"model_control": "poll"}, "model_control"),
    ({"model_control": "explicit", "capacity": {"models": 1},
      "residency": {"idle_grace_s": -1}}, "residency.idle_grace_s"),
    ({"model_control": "explicit", "capacity": {}}, "'models' (models per endpoint) and/or"),
    ({"model_control": "explicit", "capacity": {"memory_bytes": 1e9}}, "needs 'model_bytes'"),
    ({"model_control": "explicit", "capacity": {"memory_bytes": 1e9, "model_bytes": 1e8,
                                                "model_sizes": {"zoo-00": 2e9}}},
     "pools.zoo.capacity: model(s) larger than memory_bytes (1e+09): ['zoo-00']"),
])
def test_managed_pool_errors(pool: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(managed(**pool), "cfg.yaml")
    assert needle in str(info.value), str(info.value)
