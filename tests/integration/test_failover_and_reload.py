"""Failure and change under load: a Triton endpoint killed mid-run, dead endpoints in the
config, and config hot reload (SIGHUP and --watch, good and bad files) losing nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from servegate.local.launch import TritonProcess, free_port
from tests.conftest import pool_config, start_tritons, stop_all
from tests.harness import GatewayProcess, LoadDriver, start_gateway, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def own_pool() -> Iterator[list[TritonProcess]]:
    procs = start_tritons(2, models=("identity",))
    yield procs
    stop_all(procs)


def _identity_ok(gw: GatewayProcess) -> bool:
    inp = httpclient.InferInput("DATA", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), np.float32))
    res = httpclient.InferenceServerClient(gw.http).infer("identity", [inp])
    return bool((res.as_numpy("OUTPUT") == 1).all())


def test_killed_endpoint_is_ejected_and_traffic_continues(
        own_pool: list[TritonProcess], tmp_path: Path) -> None:
    gw = start_gateway(pool_config(own_pool), tmp_path / "gw")
    victim, survivor = own_pool
    try:
        with LoadDriver(gw.http, concurrency=8) as load:
            wait_for(lambda: load.ok > 200, 20, "steady load")
            killed_at = time.monotonic()
            victim.kill()
            wait_for(lambda: gw.metric("servegate_endpoint_healthy", endpoint=victim.http) == 0,
                     10, "ejection of the killed endpoint")
            ejected_at = time.monotonic()
            ok_at_ejection = load.ok
            wait_for(lambda: load.ok > ok_at_ejection + 300, 20, "traffic after ejection")
        # Only requests in flight when the endpoint died may fail: at most one per client loop.
        assert len(load.errors) <= load.concurrency, load.errors
        assert all(start <= ejected_at for start, _, _ in load.errors), load.errors
        assert all(end >= killed_at for _, end, _ in load.errors), load.errors
        assert gw.metric("servegate_endpoint_healthy", endpoint=survivor.http) == 1
        assert _identity_ok(gw)
    finally:
        gw.stop()


def test_connect_refused_is_retried_on_another_endpoint(
        triton_pool: list[TritonProcess], tmp_path: Path) -> None:
    config = pool_config(triton_pool[:1])
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    config["pools"]["cpu"]["endpoints"].insert(0, {"http": dead})
    # Keep the dead endpoint admitted so every request may be sent to it first.
    config["pools"]["cpu"]["health"] = {"active_probes": False, "eject_after_failures": 10**6}
    gw = start_gateway(config, tmp_path / "gw")
    try:
        with LoadDriver(gw.http, concurrency=4) as load:
            wait_for(lambda: load.ok > 300, 30, "requests")
        assert load.errors == []
        assert gw.metric("servegate_upstream_errors_total", endpoint=dead, kind="connect") > 0
    finally:
        gw.stop()


def test_hot_reload_under_load_loses_nothing(
        triton_pool: list[TritonProcess], tmp_path: Path) -> None:
    first, second = triton_pool
    config = pool_config(triton_pool)
    gw = start_gateway(config, tmp_path / "gw", "--watch")

    def served_by(ep: TritonProcess) -> float:
        return gw.metric("servegate_requests_total", model="identity", endpoint=ep.http)

    try:
        with LoadDriver(gw.http, concurrency=8) as load:
            # 1. SIGHUP with a valid change: the pool shrinks to its first endpoint.
            only_first = pool_config([first])
            gw.write_config(only_first)
            gw.reload()
            wait_for(lambda: gw.metric("servegate_config_reloads_total", result="success") >= 1,
                     10, "reload applied")
            applied_at = time.monotonic()
            # Requests sent before the swap may still finish on the removed endpoint.
            wait_for(lambda: load.all_started_after(applied_at), 10, "pre-reload requests done")
            before = served_by(second)
            ok_before = load.ok
            wait_for(lambda: load.ok > ok_before + 200, 20, "load after reload")
            assert served_by(second) == before, "a removed endpoint still got new requests"

            # 2. A broken file is rejected and the running config keeps serving.
            gw.config_path.write_text("pools: [this is: not valid\n")
            gw.reload()
            wait_for(lambda: gw.metric("servegate_config_reloads_total", result="failure") >= 1,
                     10, "bad reload rejected")
            ok_before = load.ok
            wait_for(lambda: load.ok > ok_before + 200, 20, "load after bad reload")

            # 3. --watch picks the file up without a signal: both endpoints again.
            applied = gw.metric("servegate_config_reloads_total", result="success")
            gw.write_config(config)
            wait_for(lambda: gw.metric("servegate_config_reloads_total", result="success")
                     > applied,
                     10, "watched file reloaded")
            wait_for(lambda: served_by(second) > before + 50, 20, "second endpoint back in use")
        assert load.errors == [], load.errors[:5]
        assert load.ok > 400
        assert "config reload rejected" in gw.log()
    finally:
        gw.stop()
