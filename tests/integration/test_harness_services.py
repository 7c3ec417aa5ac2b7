"""The harness's own services are real and private: Redis on a free port, Triton processes
that leave nothing behind when stopped."""

from __future__ import annotations

import subprocess

import pytest
import redis

from servegate.local.launch import start_triton
from tests.harness import RedisProcess, http_get, wait_for

pytestmark = pytest.mark.integration


def test_redis_fixture_is_a_private_real_server(redis_server: RedisProcess) -> None:
    assert redis_server.port != 6379
    client = redis.Redis.from_url(redis_server.url)
    client.set("servegate:probe", b"ok")
    assert client.get("servegate:probe") == b"ok"
    assert client.info("server")["tcp_port"] == redis_server.port


def test_stopped_triton_leaves_no_process_behind() -> None:
    tp = start_triton(models=("identity",))
    assert http_get(f"http://{tp.http}/v2/health/ready")[0] == 200
    group = tp.proc.pid
    tp.stop()

    def group_empty() -> bool:
        out = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True)
        return out.stdout.strip() == ""

    wait_for(group_empty, 15, "Triton's process group to exit")
    assert http_get(f"http://{tp.http}/v2/health/ready")[0] == 0
