"""The circuit breaker against real Triton, with active probes off: a killed endpoint is
ejected, gets half-open trial requests that are refused (and retried on the other endpoint, so
no request is lost), and comes back through a successful trial once a Triton listens on its
ports again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servegate.local.launch import TritonProcess, start_triton
from tests.conftest import pool_config
from tests.harness import LoadDriver, http_get, start_gateway, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def victim() -> Iterator[list[TritonProcess]]:
    """One Triton serving identity; the test kills it and starts another on its ports (the
    list holds whichever runs, so teardown stops it)."""
    procs = [start_triton(("identity",))]
    yield procs
    for p in procs:
        p.stop()


def test_ejected_endpoint_comes_back_through_a_half_open_trial(
        triton_pool: list[TritonProcess], victim: list[TritonProcess], tmp_path: Path) -> None:
    survivor, dead = triton_pool[0], victim[0]
    config = pool_config([survivor, dead], models=("identity",))
    # No probes: only the circuit breaker's trials can bring the endpoint back. Short open
    # intervals (0.5 s, doubling to 1 s) keep the test fast.
    config["pools"]["cpu"]["health"] = {
        "active_probes": False, "eject_after_failures": 2, "min_eject_s": 0.5, "max_eject_s": 1.0}
    gw = start_gateway(config, tmp_path / "gw")

    def circuit(ep: str) -> float:
        return gw.metric("servegate_endpoint_circuit_state", endpoint=ep)

    def served_by(ep: str) -> float:
        return gw.metric("servegate_requests_total", model="identity", endpoint=ep)

    try:
        with LoadDriver(gw.http, concurrency=4) as load:
            wait_for(lambda: served_by(dead.http) > 20, 20, "both endpoints in use")
        assert load.errors == []
        # Killed while idle: every later request sent there is refused at connect.
        dead.kill()
        assert http_get(f"http://{dead.http}/v2/health/ready")[0] == 0
        with LoadDriver(gw.http, concurrency=4) as load:
            wait_for(lambda: gw.metric("servegate_endpoint_healthy", endpoint=dead.http) == 0,
                     10, "ejection of the killed endpoint")
            assert circuit(dead.http) in (1, 2)
            # Trials go out (one at a time, backing off) and are refused: ejected again.
            wait_for(lambda: gw.log().count("trial failed, ejected again") >= 2, 10,
                     "two refused half-open trials")
        assert load.errors == [], load.errors[:5]  # refused trials were retried elsewhere
        assert gw.metric("servegate_endpoint_healthy", endpoint=dead.http) == 0
        assert gw.metric("servegate_upstream_errors_total", endpoint=dead.http,
                         kind="connect") >= 4
        # A Triton on the same ports, started with no load running (a Triton that listens
        # before its models are loaded would answer a trial with 400 and still close it).
        victim[0] = start_triton(
            ("identity",), ports=(dead.http_port, dead.grpc_port, dead.metrics_port))
        with LoadDriver(gw.http, concurrency=4) as load:
            wait_for(lambda: gw.metric("servegate_endpoint_healthy", endpoint=dead.http) == 1,
                     10, "re-admission through a trial")
            assert circuit(dead.http) == 0
            back = served_by(dead.http)
            wait_for(lambda: served_by(dead.http) > back + 20, 20, "traffic to the endpoint")
        assert load.errors == [], load.errors[:5]
        # the trial brought it back, nothing else (probes are off)
        log = gw.log()
        assert log.count("re-admitted") == log.count("re-admitted: trial request succeeded") == 1
    finally:
        gw.stop()
