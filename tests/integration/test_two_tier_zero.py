"""Two-tier zero: a model-managed pool whose replicas the autoscaler's local actuator starts.

Tier one: a model idle past its grace is unloaded while its server stays up (it comes back in
about a load, seconds). Tier two: the pool goes to zero replicas only once no model has
demand, and a call to any model then brings back a server AND loads the model, held in one
bounded wait. The replicas are real ``tritonserver`` processes in explicit model-control mode
(``servegate.local.zoo_worker``), the autoscaler is ``servegate autoscaler --actuator local``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servegate.local.launch import free_port
from servegate.local.zoo import zoo_names
from tests.harness import GatewayProcess, LocalAutoscaler, start_gateway, wait_for

pytestmark = pytest.mark.integration

MODELS = zoo_names(4)
MODEL_GRACE_S = 3.0
POOL_GRACE_S = 12.0
BODY = json.dumps({"inputs": [{"name": "INPUT", "shape": [1, 16], "datatype": "FP32",
                               "data": [0.25] * 16}]}).encode()


def config(status_port: int, gateway_url: str = "") -> dict[str, Any]:
    return {
        "pools": {"zoo": {
            "discovery": {"type": "local", "url": f"http://127.0.0.1:{status_port}"},
            "cold_start": {"enabled": True, "max_wait_s": 120},
            "health": {"probe_interval_s": 0.5},
            "model_control": "explicit",
            "capacity": {"models": 2},
            "residency": {"idle_grace_s": MODEL_GRACE_S, "min_residency_s": 0.5,
                          "index_interval_s": 0.5, "tick_s": 0.25},
        }},
        "models": {m: {"pool": "zoo"} for m in MODELS},
        "autoscaling": {
            "signals": {"gateways": [gateway_url] if gateway_url else [],
                        "scrape_interval_s": 0.5, "stale_after_s": 5},
            "pools": {"zoo": {
                "min_replicas": 0, "max_replicas": 1,
                "targets": {"rate_per_replica": 500},
                "scale_to_zero_grace_s": POOL_GRACE_S, "stable_window_s": 2,
                "panic_window_s": 1,
                "local": {"module": "servegate.local.zoo_worker", "models": MODELS,
                          "start_timeout_s": 60, "drain_s": 0.2},
            }},
            "controller": {"tick_s": 0.25},
        },
    }


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[GatewayProcess, LocalAutoscaler]]:
    status_port = free_port()
    gw = start_gateway(config(status_port), tmp_path / "gw", "--autoscaler-url",
                       f"http://127.0.0.1:{status_port}")
    scaler = None
    try:
        scaler = LocalAutoscaler(config(status_port, gw.url), tmp_path, status_port, "zoo")
        yield gw, scaler
    finally:
        if scaler is not None:
            scaler.stop()
        gw.stop()


def infer(gw: GatewayProcess, model: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"{gw.url}/v2/models/{model}/infer", data=BODY, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=180) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def state(gw: GatewayProcess, model: str) -> tuple[str, str]:
    req = urllib.request.Request(gw.url + "/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        entry = next(e for e in json.loads(r.read()) if e["name"] == model)
    return entry["state"], entry.get("reason", "")


def test_model_unloads_on_a_warm_server_then_the_pool_goes_to_zero(
        env: tuple[GatewayProcess, LocalAutoscaler]) -> None:
    gw, scaler = env
    assert scaler.endpoints() == []
    # from zero: a server starts and the model loads, in one held call
    status, headers, body = infer(gw, "zoo-00")
    assert status == 200, body
    assert json.loads(body)["model_name"] == "zoo-00"
    assert "x-servegate-cold-start-ms" in headers
    last_call = time.monotonic()
    # tier one: the model goes (unloaded), the server stays
    wait_for(lambda: state(gw, "zoo-00") == ("UNAVAILABLE", "not loaded"), 30,
             "zoo-00 unloaded after its grace")
    assert time.monotonic() - last_call >= MODEL_GRACE_S - 0.5
    assert len(scaler.endpoints()) == 1, "the server outlives its idle model"
    # back on the warm server: only a load, no server start
    status, headers, _ = infer(gw, "zoo-01")
    assert status == 200 and "x-servegate-cold-start-ms" in headers
    assert int(headers["x-servegate-cold-start-ms"]) < 30_000
    assert gw.metric("servegate_pool_activations_total", pool="zoo") == 1
    last_call = time.monotonic()
    # tier two: no model has demand, so the pool goes to zero after its own grace
    wait_for(lambda: scaler.endpoints() == [], POOL_GRACE_S + 40, "the pool back at zero")
    assert time.monotonic() - last_call >= POOL_GRACE_S - 1
    assert gw.metric("servegate_model_unloads_total", pool="zoo", reason="idle") >= 1
