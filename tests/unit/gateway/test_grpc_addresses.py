"""A config whose pools list no gRPC address while the gRPC front is on: a warning at load,
naming the pool; pools with gRPC addresses, discovered pools and empty pools are not named."""

from __future__ import annotations

import logging

import pytest

from contracts import parse_config
from gateway.server import pools_without_grpc, warn_missing_grpc

CONFIG = {
    "pools": {
        "rest-only": {"endpoints": ["127.0.0.1:8000"]},
        "both": {"endpoints": [{"http": "127.0.0.1:9000", "grpc": "127.0.0.1:9001"}]},
        "some": {"endpoints": ["127.0.0.1:9100",
                               {"http": "127.0.0.1:9200", "grpc": "127.0.0.1:9201"}]},
        "discovered": {"discovery": {"type": "local", "url": "http://127.0.0.1:9096"}},
    },
    "models": {"a": {"pool": "rest-only"}, "b": {"pool": "both"}, "c": {"pool": "some"},
               "d": {"pool": "discovered"}},
}


def test_only_static_pools_without_any_grpc_address_are_named() -> None:
    assert pools_without_grpc(parse_config(CONFIG)) == ["rest-only"]


def test_the_warning_names_the_pool_and_the_consequence(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="servegate"):
        warn_missing_grpc(parse_config(CONFIG))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "rest-only" in messages[0] and "UNAVAILABLE" in messages[0]
