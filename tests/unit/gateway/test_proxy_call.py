"""gateway.pipeline.proxy.Proxy.call (pick, count, retry only what never left) and the gRPC front's
pure helpers (metadata to forward, the upstream deadline)."""

from __future__ import annotations

from collections import namedtuple
from random import Random
from typing import Any

import pytest

from contracts import parse_config
from gateway.errors import (
    Unavailable,
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatus,
)
from gateway.grpc.service import client_metadata, deadline
from gateway.pipeline.pools import Endpoint
from gateway.pipeline.proxy import Proxy
from gateway.pipeline.runtime import Runtime
from router import NoEndpoint


def make_proxy(endpoints: int = 2) -> Proxy:
    config = parse_config({
        "pools": {"cpu": {"endpoints": [
            {"http": f"10.0.0.{i}:8000", "grpc": f"10.0.0.{i}:8001"} for i in range(endpoints)
        ]}},
        "models": {"m": {"pool": "cpu"}},
    })
    return Proxy(Runtime(config), upstream=None, rng=Random(1), clock=lambda: 100.0)  # type: ignore[arg-type]


async def call(proxy: Proxy, send: Any) -> tuple[Any, Endpoint]:
    route = proxy.route("m", "")
    return await proxy.call(route, lambda pool: pool.grpc_endpoints, send)


async def test_success_counts_in_and_out() -> None:
    proxy = make_proxy()
    seen: list[tuple[int, int]] = []

    async def send(ep: Endpoint) -> str:
        seen.append((ep.outstanding, proxy.in_flight["m"]))
        return "ok"

    result, ep = await call(proxy, send)
    assert result == "ok" and seen == [(1, 1)]
    assert ep.outstanding == 0 and proxy.in_flight["m"] == 0


async def test_connect_failure_is_retried_on_another_endpoint() -> None:
    proxy = make_proxy()
    tried: list[Endpoint] = []

    async def send(ep: Endpoint) -> str:
        tried.append(ep)
        if len(tried) == 1:
            raise UpstreamConnectError(ep.address, "refused")
        return "ok"

    result, ep = await call(proxy, send)
    assert result == "ok" and ep is tried[1] and tried[0] is not tried[1]
    assert tried[0].health.consecutive_failures == 1 and tried[0].outstanding == 0


async def test_every_endpoint_refusing_is_unavailable() -> None:
    proxy = make_proxy(3)

    async def send(ep: Endpoint) -> str:
        raise UpstreamConnectError(ep.address, "refused")

    with pytest.raises(Unavailable, match="3 tried"):
        await call(proxy, send)
    assert proxy.in_flight["m"] == 0


@pytest.mark.parametrize(("error", "reported"), [
    (UpstreamBroken("h:1", "reset"), True),
    (UpstreamStatus("h:1", "INVALID_ARGUMENT", "bad input"), False),
])
async def test_other_errors_are_not_retried(error: Exception, reported: bool) -> None:
    proxy = make_proxy()
    tried: list[Endpoint] = []

    async def send(ep: Endpoint) -> str:
        tried.append(ep)
        raise error

    with pytest.raises(type(error)):
        await call(proxy, send)
    assert len(tried) == 1 and tried[0].outstanding == 0
    assert tried[0].health.consecutive_failures == (1 if reported else 0)
    assert isinstance(error, UpstreamError) is reported


async def test_no_admitted_endpoint() -> None:
    proxy = make_proxy(1)
    ep = proxy.runtime.state.pools["cpu"].endpoints[0]
    ep.probed(False, 100.0, proxy.runtime.state.pools["cpu"].config.health, "down", True)

    async def send(ep: Endpoint) -> str:
        raise AssertionError("not called")

    with pytest.raises(NoEndpoint):
        await call(proxy, send)


Metadatum = namedtuple("Metadatum", "key value")


class Context:
    """The two methods of grpc.aio.ServicerContext the helpers read."""

    def __init__(self, metadata: list[tuple[str, Any]], remaining: float | None) -> None:
        self._metadata = tuple(Metadatum(k, v) for k, v in metadata)
        self._remaining = remaining

    def invocation_metadata(self) -> tuple[Metadatum, ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return self._remaining


def test_client_metadata_drops_connection_level_keys() -> None:
    forward, headers = client_metadata(Context([  # type: ignore[arg-type]
        ("user-agent", "grpc-python/1.0"), ("x-tenant", "acme"), ("grpc-trace-bin", b"\x01"),
        ("x-ray-bin", b"\x00\x01"), ("authorization", "Bearer t"), (":authority", "gw"),
    ], None))
    assert forward == (("x-tenant", "acme"), ("x-ray-bin", b"\x00\x01"),
                       ("authorization", "Bearer t"))
    assert headers == {"x-tenant": "acme", "authorization": "Bearer t"}


@pytest.mark.parametrize(("remaining", "expected"), [
    (None, (60.0, False)),     # no client deadline: the route's read_s
    (120.0, (60.0, False)),    # a longer one: still the route's
    (2.5, (2.5, True)),        # a shorter one: the client's own
    (-0.1, (0.0, True)),       # already past
])
def test_deadline(remaining: float | None, expected: tuple[float, bool]) -> None:
    assert deadline(Context([], remaining), 60.0) == expected  # type: ignore[arg-type]
