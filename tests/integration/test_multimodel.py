"""Model-managed pools against real Triton servers in explicit model-control mode.

Two ``tritonserver`` processes (the nvidia-pytriton wheel's binary) over a generated
repository of 30 small Python-backend models, nothing loaded at start; the gateway in front
with ``model_control: explicit`` and 4 models per endpoint. The "Done when" check of issue 16:
12 distinct models called at once (3 calls each) all answer 200, the first calls carry
``x-servegate-cold-start-ms``, the gateway's index never shows more than 8 READY, idle models
are unloaded after the grace. Also: one load per model (single flight), a failed load answers
with a clear 503 and backs off, and two gateways sharing Redis load a model once.
"""

from __future__ import annotations

import json
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from servegate.local.launch import TritonProcess
from servegate.local.zoo import start_zoo_triton, write_zoo, zoo_names
from tests.harness import GatewayProcess, RedisProcess, start_gateway, wait_for

MODELS = zoo_names(30)
BODY = json.dumps({"inputs": [{"name": "INPUT", "shape": [1, 16], "datatype": "FP32",
                               "data": [0.1 * i for i in range(16)]}]}).encode()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[TritonProcess]]:
    root = tmp_path_factory.mktemp("zoo")
    repo = write_zoo(root / "repo", MODELS)
    servers: list[TritonProcess] = []
    try:
        for i in range(2):
            servers.append(start_zoo_triton(repo, root / f"t{i}"))
        yield servers
    finally:
        for s in servers:
            s.stop()


def zoo_config(servers: list[TritonProcess], **residency: Any) -> dict[str, Any]:
    models: dict[str, Any] = {m: {"pool": "zoo"} for m in MODELS}
    models["zoo-missing"] = {"pool": "zoo"}  # routed, but not in the Triton repository
    return {
        "pools": {"zoo": {
            "endpoints": [{"http": s.http, "grpc": s.grpc} for s in servers],
            "health": {"probe_interval_s": 0.5},
            "model_control": "explicit",
            "capacity": {"models": 4},
            "residency": {"idle_grace_s": 4, "min_residency_s": 1, "index_interval_s": 0.5,
                          "tick_s": 0.5, "max_wait_s": 90, **residency},
        }},
        "models": models,
    }


def post(url: str, body: bytes = b"{}", timeout: float = 120) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def ready_zoo(gw: GatewayProcess) -> set[str]:
    status, _, body = post(gw.url + "/v2/repository/index")
    assert status == 200, body
    return {e["name"] for e in json.loads(body)
            if e["name"].startswith("zoo-") and e["state"] == "READY"}


def unload_all(servers: list[TritonProcess]) -> None:
    for s in servers:
        for m in MODELS:
            post(f"http://{s.http}/v2/repository/models/{m}/unload")


@pytest.fixture
def gateway(zoo: list[TritonProcess], tmp_path: Path) -> Iterator[GatewayProcess]:
    unload_all(zoo)
    gw = start_gateway(zoo_config(zoo), tmp_path / "gw")
    yield gw
    gw.stop()


def test_twelve_models_at_once_within_eight_slots(gateway: GatewayProcess) -> None:
    gw = gateway
    chosen = MODELS[:12]
    most_ready = 0
    stop = threading.Event()

    def watch_index() -> None:
        nonlocal most_ready
        while not stop.is_set():
            most_ready = max(most_ready, len(ready_zoo(gw)))
            stop.wait(0.05)

    watcher = threading.Thread(target=watch_index, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=36) as ex:
            results = list(ex.map(
                lambda m: (m, post(f"{gw.url}/v2/models/{m}/infer", BODY)),
                [m for m in chosen for _ in range(3)]))
    finally:
        stop.set()
        watcher.join(5)
    failed = [(m, s, b[:200]) for m, (s, _, b) in results if s != 200]
    assert not failed, failed
    for model, (_, _, body) in results:
        doc = json.loads(body)
        assert doc["model_name"] == model and len(doc["outputs"][0]["data"]) == 4
    cold = {m for m, (_, h, _) in results if "x-servegate-cold-start-ms" in h}
    assert cold == set(chosen), "every model's first calls waited for its load"
    assert most_ready <= 8, most_ready
    assert len(ready_zoo(gw)) <= 8
    assert gw.metric("servegate_model_loads_total", pool="zoo", result="ok") >= 12
    # 12 models through 8 slots: at least 4 made room (evicted, or unloaded idle first)
    assert gw.metric("servegate_model_unloads_total", pool="zoo") >= 4
    # a second round on a resident model is a hit: no wait, no load
    resident = sorted(ready_zoo(gw))[0]
    loads = gw.metric("servegate_model_loads_total", pool="zoo", result="ok")
    status, headers, _ = post(f"{gw.url}/v2/models/{resident}/infer", BODY)
    assert status == 200 and "x-servegate-cold-start-ms" not in headers
    assert gw.metric("servegate_model_loads_total", pool="zoo", result="ok") == loads
    assert gw.metric("servegate_model_hits_total", pool="zoo") >= 1
    # idle past the grace (4 s): everything is unloaded, on the servers too
    wait_for(lambda: not ready_zoo(gw), 30, "idle models unloaded after the grace")
    assert gw.metric("servegate_model_unloads_total", pool="zoo", reason="idle") >= 1
    index = json.loads(post(gw.url + "/v2/repository/index")[2])
    entry = next(e for e in index if e["name"] == "zoo-00")
    assert entry["state"] == "UNAVAILABLE" and entry["reason"] == "not loaded"


def test_one_load_per_model_and_index_says_loading(gateway: GatewayProcess) -> None:
    gw = gateway
    seen_loading = threading.Event()

    def watch() -> None:
        for _ in range(200):
            index = json.loads(post(gw.url + "/v2/repository/index")[2])
            if any(e["name"] == "zoo-20" and e.get("reason") == "loading" for e in index):
                seen_loading.set()
                return
            if seen_loading.wait(0.02):
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with ThreadPoolExecutor(max_workers=10) as ex:
        results = list(ex.map(lambda _: post(f"{gw.url}/v2/models/zoo-20/infer", BODY),
                              range(10)))
    watcher.join(10)
    assert [s for s, _, _ in results] == [200] * 10
    assert gw.metric("servegate_model_loads_total", pool="zoo", result="ok") == 1
    assert gw.metric("servegate_model_misses_total", pool="zoo") == 1
    assert seen_loading.is_set(), "the index showed zoo-20 as loading"


def test_failed_load_is_a_clear_503_and_backs_off(gateway: GatewayProcess) -> None:
    gw = gateway
    status, headers, body = post(f"{gw.url}/v2/models/zoo-missing/infer", BODY)
    assert status == 503, body
    assert "zoo-missing" in json.loads(body)["error"]
    assert "could not be loaded" in json.loads(body)["error"]
    assert "retry-after" in headers
    # within the backoff: answered at once, no second load
    status, _, body = post(f"{gw.url}/v2/models/zoo-missing/infer", BODY)
    assert status == 503 and "next attempt in" in json.loads(body)["error"]
    assert gw.metric("servegate_model_loads_total", pool="zoo", result="failed") == 1
    # REST readiness of a model no endpoint holds: not ready, and no load
    req = urllib.request.Request(f"{gw.url}/v2/models/zoo-29/ready")
    with pytest.raises(urllib.error.HTTPError) as not_ready:
        urllib.request.urlopen(req, timeout=10)
    assert not_ready.value.code == 503 and b"'zoo-29' is not loaded" in not_ready.value.read()
    assert gw.metric("servegate_model_misses_total", pool="zoo") == 1
    index = json.loads(post(gw.url + "/v2/repository/index")[2])
    entry = next(e for e in index if e["name"] == "zoo-missing")
    assert entry["state"] == "UNAVAILABLE" and "last load failed" in entry["reason"]


def test_two_gateways_sharing_redis_load_once(
        zoo: list[TritonProcess], redis_server: RedisProcess, tmp_path: Path) -> None:
    unload_all(zoo)
    config = zoo_config(zoo)
    gws = [start_gateway(config, tmp_path / f"gw{i}", "--redis-url", redis_server.url)
           for i in range(2)]
    try:
        with ThreadPoolExecutor(max_workers=8) as ex:
            results = list(ex.map(
                lambda i: post(f"{gws[i % 2].url}/v2/models/zoo-25/infer", BODY), range(8)))
        assert [s for s, _, _ in results] == [200] * 8
        loads = sum(gw.metric("servegate_model_loads_total", pool="zoo", result="ok")
                    for gw in gws)
        assert loads == 1
        wait_for(lambda: all("zoo-25" in ready_zoo(gw) for gw in gws), 10,
                 "both gateways see zoo-25 READY")
        # idle past the grace: the leader alone unloads it, both see it go
        wait_for(lambda: not any("zoo-25" in ready_zoo(gw) for gw in gws), 30,
                 "zoo-25 unloaded after the grace")
        unloads = [gw.metric("servegate_model_unloads_total", pool="zoo", reason="idle")
                   for gw in gws]
        assert sorted(unloads) == [0.0, 1.0], unloads
    finally:
        for gw in gws:
            gw.stop()


def test_grpc_call_loads_on_demand_and_grpc_index_agrees(gateway: GatewayProcess) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(gateway.grpc)
    try:
        before = {m.name: m for m in client.get_model_repository_index().models}
        assert before["zoo-15"].state == "UNAVAILABLE"
        assert not client.is_model_ready("zoo-15")  # a readiness check loads nothing
        assert before["zoo-15"].reason == "not loaded"
        x = grpcclient.InferInput("INPUT", [1, 16], "FP32")
        x.set_data_from_numpy(np.full((1, 16), 0.5, dtype=np.float32))
        probs = client.infer("zoo-15", [x], client_timeout=120).as_numpy("PROBS")
        assert probs.shape == (1, 4) and abs(float(probs.sum()) - 1.0) < 1e-4
        after = {m.name: m for m in client.get_model_repository_index().models}
        assert after["zoo-15"].state == "READY"
        assert client.is_model_ready("zoo-15")
        assert gateway.metric("servegate_model_loads_total", pool="zoo", result="ok") == 1
        # streams hold one backend per pool, which cannot follow models: a clear refusal
        answers: queue.Queue[Any] = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put(error))
        client.async_stream_infer("zoo-15", [x])
        error = answers.get(timeout=30)
        assert error is not None and "model-managed pool 'zoo' is not supported" in str(error)
        client.stop_stream()
    finally:
        client.close()
