"""Endpoints that leave every pool are forgotten: their metric series (a cold start brings a
new address each time, which would otherwise grow /metrics without bound) and gRPC channels."""

from __future__ import annotations

import asyncio

from contracts import parse_config
from gateway.grpc.upstream import GrpcChannels
from gateway.metrics import GatewayMetrics
from gateway.pipeline.runtime import Runtime


def test_series_of_gone_endpoints_are_dropped() -> None:
    runtime = Runtime(parse_config({"pools": {"p": {"endpoints": ["127.0.0.1:1"]}},
                                    "models": {"m": {"pool": "p"}}}))
    metrics = GatewayMetrics(runtime, dict)
    metrics.observe("m", "127.0.0.1:1", "http", 200, 0.01)
    metrics.observe("m", "127.0.0.1:2", "http", 200, 0.01)
    metrics.observe("m", "", "http", 404, 0.01)  # answered by the gateway: no endpoint
    metrics.upstream_error("p", "127.0.0.1:2", "connect")
    text = metrics.render().decode()
    assert 'endpoint="127.0.0.1:2"' in text
    assert metrics.forget_endpoints({"127.0.0.1:1"}) == 2
    text = metrics.render().decode()
    assert 'endpoint="127.0.0.1:2"' not in text
    assert 'endpoint="127.0.0.1:1"' in text and 'endpoint=""' in text
    metrics.observe("m", "127.0.0.1:2", "http", 200, 0.01)  # seen again: recorded afresh
    assert 'endpoint="127.0.0.1:2"' in metrics.render().decode()


def test_channels_of_gone_addresses_are_closed() -> None:
    async def main() -> None:
        channels = GrpcChannels()
        kept, gone = channels.get("127.0.0.1:1"), channels.get("127.0.0.1:2")
        assert await channels.forget({"127.0.0.1:1"}, grace=0.1) == 1
        assert channels.get("127.0.0.1:1") is kept
        assert channels.get("127.0.0.1:2") is not gone  # a new channel if it comes back
        await channels.aclose()

    asyncio.run(main())
