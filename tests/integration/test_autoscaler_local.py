"""``servegate autoscaler --actuator local`` end to end: a pool at zero is activated, a real
Triton replica starts and is listed, then it is stopped after the idle grace; SIGTERM leaves
no process behind. Signals come from a real gateway's /metrics (its own, idle: no traffic
from other tests can reach it)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from servegate.local.launch import free_port
from tests.harness import GatewayProcess, http_get, start_gateway, wait_for

pytestmark = pytest.mark.integration

GRACE_S = 3.0


def config(gateway_url: str) -> dict[str, Any]:
    return {
        "pools": {"demo": {"endpoints": []}},
        "models": {"identity": {"pool": "demo"}},
        "autoscaling": {
            "signals": {"gateways": [gateway_url], "scrape_interval_s": 0.5},
            "controller": {"tick_s": 0.25, "history": 10000},  # keep every decision
            "pools": {"demo": {
                "min_replicas": 0, "max_replicas": 1,
                "targets": {"concurrency_per_replica": 4},
                "stable_window_s": 3, "panic_window_s": 1,
                "scale_to_zero_grace_s": GRACE_S,
                "local": {"models": ["identity"], "start_timeout_s": 60, "drain_s": 0.2},
            }},
        },
    }


def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, json.loads(r.read())


def endpoints(base: str, version: int | None = None, wait_s: float = 0) -> dict[str, Any]:
    query = "" if version is None else f"?version={version}&wait_s={wait_s}"
    status, body = http_get(f"{base}/pools/demo/endpoints{query}", timeout=wait_s + 5)
    assert status == 200, body
    doc: dict[str, Any] = json.loads(body)
    return doc


def workers(http_port: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if "servegate.local.triton_worker" in cmd and http_port in cmd:
            found.append(p)
    return found


@pytest.fixture()
def idle_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = start_gateway({"pools": {"demo": {"endpoints": []}},
                        "models": {"identity": {"pool": "demo"}}}, tmp_path / "gateway")
    yield gw
    gw.stop()


@pytest.fixture()
def autoscaler(idle_gateway: GatewayProcess, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    gateway = idle_gateway
    path = tmp_path / "servegate.yaml"
    path.write_text(yaml.safe_dump(config(gateway.url)))
    port = free_port()
    log = open(tmp_path / "autoscaler.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "servegate.cli", "autoscaler", "--config", str(path),
         "--actuator", "local", "--host", "127.0.0.1", "--status-port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or http_get(base + "/healthz")[0] == 200,
                 20, "autoscaler up")
        assert proc.poll() is None, (tmp_path / "autoscaler.log").read_text()
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def test_activation_starts_a_replica_and_idle_stops_it(autoscaler: tuple[str, Any]) -> None:
    base, proc = autoscaler
    first = endpoints(base)
    assert first["endpoints"] == []
    assert post(base + "/activate", {"pool": "demo"}) == (202, {"pool": "demo",
                                                                "activated": True})
    up = endpoints(base, first["version"], wait_s=60)
    assert len(up["endpoints"]) == 1, up
    ready_at = time.monotonic()
    ep = up["endpoints"][0]
    assert http_get(f"http://{ep['http']}/v2/health/ready")[0] == 200  # a real Triton
    assert http_get(f"http://{ep['http']}/v2/models/identity/ready")[0] == 200
    http_port = ep["http"].rsplit(":", 1)[1]
    assert len(workers(http_port)) == 1

    down = endpoints(base, up["version"], wait_s=30)
    idle_for = time.monotonic() - ready_at
    assert down["endpoints"] == [], down
    assert GRACE_S - 0.5 <= idle_for <= GRACE_S + 8, idle_for
    wait_for(lambda: not workers(http_port), 30, "the stopped replica's process to exit")

    doc = json.loads(http_get(base + "/status?history=1000")[1])
    acted = [d for d in doc["pools"]["demo"]["decisions"] if d["acted"]]
    assert [(d["current"], d["desired"]) for d in acted] == [(0, 1), (1, 0)], acted
    assert acted[0]["dominant"] == "activation"
    assert acted[1]["at"] - acted[0]["at"] >= GRACE_S
    metrics = http_get(base + "/metrics")[1].decode()
    assert 'servegate_autoscaler_activations_total{pool="demo",source="http"} 1.0' in metrics

    # again, and this time stop the autoscaler while the replica runs: nothing stays behind
    post(base + "/activate", {"pool": "demo"})
    again = endpoints(base, down["version"], wait_s=60)
    assert len(again["endpoints"]) == 1
    port2 = again["endpoints"][0]["http"].rsplit(":", 1)[1]
    assert workers(port2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    wait_for(lambda: not workers(port2), 10, "no worker left after SIGTERM")


def test_a_replica_never_outlives_a_killed_autoscaler(autoscaler: tuple[str, Any]) -> None:
    """SIGKILL (an OOM kill, a crashed node agent): the autoscaler cannot stop its replicas,
    so the kernel's parent-death signal must; no worker, tritonserver or stub is left."""
    base, proc = autoscaler
    first = endpoints(base)
    post(base + "/activate", {"pool": "demo"})
    up = endpoints(base, first["version"], wait_s=60)
    assert len(up["endpoints"]) == 1, up
    descendants = psutil.Process(proc.pid).children(recursive=True)
    assert any("tritonserver" in command(p) for p in descendants), descendants
    proc.kill()
    proc.wait(10)
    wait_for(lambda: not alive(descendants), 10, "every process the autoscaler started to exit")


def command(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:  # gone, or a zombie
        return ""


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie waiting for its reaper has exited)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out
