"""router.table.RouteTable: (model, version) -> pool, timeouts, body limit."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import ConfigError, TimeoutConfig, parse_config
from router import Route, RouteTable, UnknownModel

DOC: dict[str, Any] = {
    "pools": {
        "cpu": {"endpoints": ["c:1"], "timeouts": {"connect_s": 1, "read_s": 30}},
        "gpu": {"endpoints": ["g:1"], "timeouts": {"connect_s": 0.25, "read_s": 120}},
        "default": {"endpoints": ["d:1"]},  # timeouts left at their defaults (1, 60)
    },
    "models": {
        "plain": {"pool": "cpu"},
        "versioned": {"pool": "cpu", "versions": {"2": {"pool": "gpu"}, "3": {"pool": "cpu"}}},
        "read_override": {
            "pool": "gpu", "timeouts": {"read_s": 5}, "versions": {"7": {"pool": "cpu"}},
        },
        "connect_override": {"pool": "default", "timeouts": {"connect_s": 3}},
        "both_override": {"pool": "cpu", "timeouts": {"connect_s": 2, "read_s": 4}},
        "big": {"pool": "cpu", "max_body_bytes": 10, "versions": {"1": {"pool": "gpu"}}},
    },
    "limits": {"max_body_bytes": 1000},
}


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return RouteTable(parse_config(DOC))


@pytest.mark.parametrize(
    ("model", "version", "route_version", "pool"),
    [
        ("plain", "", "", "cpu"),
        ("plain", "1", "1", "cpu"),  # no override for v1: the default pool, version kept
        ("versioned", "", "", "cpu"),
        ("versioned", "2", "2", "gpu"),
        ("versioned", "3", "3", "cpu"),
        ("versioned", "4", "4", "cpu"),
        ("read_override", "7", "7", "cpu"),
        ("big", "1", "1", "gpu"),
    ],
)
def test_lookup_pool(
    table: RouteTable, model: str, version: str, route_version: str, pool: str
) -> None:
    route = table.lookup(model, version)
    assert isinstance(route, Route)
    assert (route.model, route.version, route.pool) == (model, route_version, pool)


def test_lookup_default_version_argument(table: RouteTable) -> None:
    assert table.lookup("versioned") == table.lookup("versioned", "")


@pytest.mark.parametrize(
    ("model", "version", "connect_s", "read_s"),
    [
        ("plain", "", 1.0, 30.0),  # the pool's timeouts
        ("versioned", "2", 0.25, 120.0),  # the version's pool's timeouts
        ("read_override", "", 0.25, 5.0),  # model read_s over the gpu pool's
        ("read_override", "7", 1.0, 5.0),  # model read_s over the version's (cpu) pool's
        ("connect_override", "", 3.0, 60.0),  # model connect_s over defaults
        ("both_override", "", 2.0, 4.0),
        ("big", "1", 0.25, 120.0),
    ],
)
def test_timeouts_merge(
    table: RouteTable, model: str, version: str, connect_s: float, read_s: float
) -> None:
    assert table.lookup(model, version).timeouts == TimeoutConfig(connect_s=connect_s,
                                                                  read_s=read_s)


@pytest.mark.parametrize(
    ("model", "version", "limit"),
    [
        ("plain", "", 1000),  # limits default
        ("versioned", "2", 1000),
        ("big", "", 10),  # per-model limit
        ("big", "1", 10),  # per-model limit applies to its version routes too
        ("big", "9", 10),
    ],
)
def test_max_body_bytes(table: RouteTable, model: str, version: str, limit: int) -> None:
    assert table.lookup(model, version).max_body_bytes == limit


def test_max_body_bytes_global_default() -> None:
    cfg = parse_config({"pools": {"p": {}}, "models": {"m": {"pool": "p"}}})
    assert RouteTable(cfg).lookup("m").max_body_bytes == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("model", "version", "message"),
    [
        ("nope", "", "Request for unknown model: 'nope' is not routed by this gateway"),
        ("nope", "2", "Request for unknown model: 'nope' version 2 is not routed by this gateway"),
        ("", "", "Request for unknown model: '' is not routed by this gateway"),
        ("Plain", "", "Request for unknown model: 'Plain' is not routed by this gateway"),
    ],
)
def test_unknown_model(table: RouteTable, model: str, version: str, message: str) -> None:
    with pytest.raises(UnknownModel) as info:
        table.lookup(model, version)
    assert str(info.value) == message
    assert (info.value.model, info.value.version) == (model, version)


def test_routes_ordering(table: RouteTable) -> None:
    keys = [(r.model, r.version) for r in table.routes()]
    assert keys == [
        ("big", ""), ("big", "1"),
        ("both_override", ""),
        ("connect_override", ""),
        ("plain", ""),
        ("read_override", ""), ("read_override", "7"),
        ("versioned", ""), ("versioned", "2"), ("versioned", "3"),
    ]
    # the listed routes are exactly what lookup returns
    for route in table.routes():
        assert table.lookup(route.model, route.version) is route


def test_routes_of_empty_config() -> None:
    table = RouteTable(parse_config({"pools": {}, "models": {}}))
    assert table.routes() == []
    with pytest.raises(UnknownModel):
        table.lookup("m")


def test_route_is_frozen(table: RouteTable) -> None:
    route = table.lookup("plain")
    with pytest.raises(AttributeError):
        route.pool = "gpu"  # type: ignore[misc]


def test_table_needs_a_validated_config() -> None:
    with pytest.raises(ConfigError):
        RouteTable(parse_config({"pools": {}, "models": {"m": {"pool": "missing"}}}))
