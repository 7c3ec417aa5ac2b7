"""Session fixtures: real Triton servers (PyTriton), the gateway in front, a real Redis."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from servegate.local.launch import TritonProcess, start_triton
from tests.harness import GatewayProcess, RedisProcess, start_gateway, start_redis


def start_tritons(n: int, models: tuple[str, ...] = ("classifier", "embedder", "identity"),
                  classifier_version: int = 1) -> list[TritonProcess]:
    with ThreadPoolExecutor(max_workers=n) as ex:
        futures = [ex.submit(start_triton, models, classifier_version) for _ in range(n)]
        started, errors = [], []
        for f in futures:
            try:
                started.append(f.result())
            except Exception as exc:
                errors.append(exc)
    if errors:
        for t in started:
            t.stop()
        raise errors[0]
    return started


def stop_all(procs: list[TritonProcess]) -> None:
    with ThreadPoolExecutor(max_workers=max(1, len(procs))) as ex:
        list(ex.map(lambda t: t.stop(), procs))


def pool_config(tritons: list[TritonProcess], *,
                models: Sequence[str] = ("classifier", "identity", "embedder"),
                **pool_extra: object) -> dict[str, Any]:
    """One pool ``cpu`` of ``tritons`` serving ``models`` (embedder with a 4 KiB body limit)."""
    routes: dict[str, dict[str, Any]] = {m: {"pool": "cpu"} for m in models}
    if "embedder" in routes:
        routes["embedder"]["max_body_bytes"] = 4096
    return {
        "pools": {"cpu": {
            "endpoints": [{"http": t.http, "grpc": t.grpc, "metrics": t.metrics} for t in tritons],
            "health": {"probe_interval_s": 0.5, "eject_after_failures": 2, "min_eject_s": 0.5},
            **pool_extra,
        }},
        "models": routes,
        "limits": {"max_body_bytes": 64 * 1024 * 1024},
    }


@pytest.fixture(scope="session")
def triton_pool() -> Iterator[list[TritonProcess]]:
    """Two real Triton servers serving classifier v1, embedder and identity."""
    procs = start_tritons(2)
    yield procs
    stop_all(procs)


@pytest.fixture(scope="session")
def gateway(triton_pool: list[TritonProcess],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = start_gateway(pool_config(triton_pool), tmp_path_factory.mktemp("gateway"))
    gw.extra["config"] = pool_config(triton_pool)
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    rp = start_redis(Path(tmp_path_factory.mktemp("redis")))
    yield rp
    rp.stop()
