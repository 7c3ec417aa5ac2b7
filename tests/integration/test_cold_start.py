"""Scale from zero end to end: real gateway, real autoscaler with the local actuator, real
Triton started on demand, real tritonclient. A pool at zero holds requests, activates at once,
serves them all once Triton is ready, returns to zero after the idle grace, and does it again."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from servegate.local.launch import free_port
from tests.harness import GatewayProcess, LocalAutoscaler, start_gateway, wait_for

pytestmark = pytest.mark.integration

BODY = json.dumps({"inputs": [{"name": "INPUT", "shape": [1, 16], "datatype": "FP32",
                               "data": [0.25] * 16}]}).encode()


def config(status_port: int, max_queue: int = 1000) -> dict[str, Any]:
    return {
        "pools": {"cold": {
            "discovery": {"type": "local", "url": f"http://127.0.0.1:{status_port}"},
            "cold_start": {"enabled": True, "max_wait_s": 120, "max_queue": max_queue},
            "health": {"probe_interval_s": 0.5},
        }},
        "models": {"cold-classifier": {"pool": "cold"}},
        "autoscaling": {
            "signals": {"gateways": [], "scrape_interval_s": 0.5, "stale_after_s": 5},
            "pools": {"cold": {
                "min_replicas": 0, "max_replicas": 1,
                "targets": {"rate_per_replica": 500},
                "scale_to_zero_grace_s": 4, "stable_window_s": 2, "panic_window_s": 1,
                "local": {"models": ["cold-classifier"]},
            }},
            "controller": {"tick_s": 0.25},
        },
    }


def autoscaler(cfg: dict[str, Any], workdir: Path, gateway_url: str) -> LocalAutoscaler:
    """The local autoscaler for ``cfg``'s pool ``cold``, reading ``gateway_url``'s metrics."""
    port = int(cfg["pools"]["cold"]["discovery"]["url"].rsplit(":", 1)[1])
    cfg = json.loads(json.dumps(cfg))
    cfg["autoscaling"]["signals"]["gateways"] = [gateway_url]
    return LocalAutoscaler(cfg, workdir, port, "cold")


@pytest.fixture
def cold_env(tmp_path: Path) -> Iterator[tuple[GatewayProcess, LocalAutoscaler]]:
    status_port = free_port()
    cfg = config(status_port)
    gw = start_gateway(cfg, tmp_path / "gw", "--autoscaler-url",
                       f"http://127.0.0.1:{status_port}")
    scaler = autoscaler(cfg, tmp_path, gw.url)
    try:
        yield gw, scaler
    finally:
        scaler.stop()
        gw.stop()
        print(scaler.log.read_text()[-3000:])


def post(gw: GatewayProcess, timeout_ms: int | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"x-servegate-timeout-ms": str(timeout_ms)} if timeout_ms else {}
    req = urllib.request.Request(gw.url + "/v2/models/cold-classifier/infer", data=BODY,
                                 headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=180) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def burst(gw: GatewayProcess, n: int) -> list[tuple[int, dict[str, str], bytes]]:
    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(lambda _: post(gw), range(n)))


def test_zero_to_one_and_back_twice(cold_env: tuple[GatewayProcess, LocalAutoscaler]) -> None:
    gw, scaler = cold_env
    assert scaler.endpoints() == []
    for round_ in (1, 2):
        t0 = time.monotonic()
        results = burst(gw, 50)
        statuses = [s for s, _, _ in results]
        assert statuses == [200] * 50, [(s, b[:200]) for s, _, b in results if s != 200]
        waited = [int(h["x-servegate-cold-start-ms"]) for _, h, _ in results
                  if "x-servegate-cold-start-ms" in h]
        assert waited, "no response says it waited for the cold start"
        assert all(json.loads(b)["model_name"] == "cold-classifier" for _, _, b in results)
        assert gw.metric("servegate_pool_activations_total", pool="cold") == round_
        assert gw.metric("servegate_queued_requests", pool="cold") == 0
        print(f"round {round_}: 50 requests in {time.monotonic() - t0:.1f}s, "
              f"max wait {max(waited)} ms")
        # Idle: back to zero after the grace, and the gateway sees the pool empty.
        wait_for(lambda: scaler.endpoints() == [], 60, "scale to zero after the idle grace",
                 every=0.5)
        wait_for(lambda: gw.metric("servegate_endpoint_healthy", pool="cold") == 0, 10,
                 "gateway to drop the stopped replica", every=0.2)


def test_overflow_and_short_deadlines_are_answered_at_once(tmp_path: Path) -> None:
    status_port = free_port()
    cfg = config(status_port, max_queue=5)
    gw = start_gateway(cfg, tmp_path / "gw", "--autoscaler-url",
                       f"http://127.0.0.1:{status_port}")
    scaler = autoscaler(cfg, tmp_path, gw.url)
    try:
        # The first cold start teaches the gateway how long this pool takes to start.
        assert post(gw)[0] == 200
        wait_for(lambda: scaler.endpoints() == [], 60, "scale to zero", every=0.5)
        wait_for(lambda: gw.metric("servegate_endpoint_healthy", pool="cold") == 0, 10,
                 "gateway to drop the stopped replica", every=0.2)
        t0 = time.monotonic()
        status, headers, body = post(gw, timeout_ms=200)  # far shorter than a cold start
        assert time.monotonic() - t0 < 1.0
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert b"after this request's deadline" in body
        results = burst(gw, 12)  # 5 fit the queue
        statuses = sorted(s for s, _, _ in results)
        assert statuses.count(200) >= 5 and set(statuses) <= {200, 503}
        for s, h, b in results:
            if s == 503:
                assert "retry-after" in h and b"queue is full" in b
    finally:
        scaler.stop()
        gw.stop()
