"""Traffic management end to end: splits, sticky keys, pins, shadow diffing, rollouts, the
admin API and shared state through a real Redis — real Triton, real tritonclient."""

from __future__ import annotations

import json
import statistics
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servegate.local.launch import TritonProcess, start_triton
from tests.conftest import stop_all
from tests.harness import GatewayProcess, LoadDriver, start_gateway, start_redis, wait_for

pytestmark = pytest.mark.integration

TOKEN = "s3cret-admin-token"
BODY = json.dumps({"inputs": [{"name": "INPUT", "shape": [1, 16], "datatype": "FP32",
                               "data": [0.5] * 16}]}).encode()


@pytest.fixture(scope="module")
def variants() -> Iterator[dict[str, TritonProcess]]:
    """Classifier v2 (healthy), v2 failing 30% of batches, and v1 slowed to 300 ms."""
    from concurrent.futures import ThreadPoolExecutor

    specs = {
        "good": dict(models=("classifier",), classifier_version=2),
        "bad": dict(models=("classifier",), classifier_version=2,
                    extra_args=("--classifier-fail-rate", "0.3")),
        "slow": dict(models=("classifier",), classifier_version=1,
                     extra_args=("--classifier-delay-ms", "300")),
    }
    with ThreadPoolExecutor(3) as ex:
        futures = {k: ex.submit(start_triton, **v) for k, v in specs.items()}  # type: ignore[arg-type]
        procs = {k: f.result() for k, f in futures.items()}
    yield procs
    stop_all(list(procs.values()))


def split_config(stable: list[TritonProcess], canary: TritonProcess, *,
                 canary_weight: float = 10, shadow: dict[str, Any] | None = None,
                 shadow_target: TritonProcess | None = None) -> dict[str, Any]:
    def eps(procs: list[TritonProcess]) -> list[dict[str, str]]:
        return [{"http": t.http, "grpc": t.grpc} for t in procs]

    pools: dict[str, Any] = {"cpu": {"endpoints": eps(stable)},
                             "canary": {"endpoints": eps([canary])}}
    variants_cfg: dict[str, Any] = {"stable": {"weight": 100 - canary_weight},
                                    "canary": {"weight": canary_weight, "pool": "canary"}}
    split: dict[str, Any] = {"variants": variants_cfg, "sticky_header": "x-user-id",
                             "baseline": "stable"}
    if shadow_target is not None:
        pools["shadow"] = {"endpoints": eps([shadow_target])}
        variants_cfg["mirror"] = {"weight": 0, "pool": "shadow"}
        split["shadow"] = {"variant": "mirror", **(shadow or {"percent": 100})}
    return {"pools": pools, "models": {"classifier": {"pool": "cpu", "split": split}}}


def post(gw: GatewayProcess, headers: dict[str, str] | None = None,
         body: bytes = BODY) -> tuple[int, dict[str, str], dict[str, Any]]:
    req = urllib.request.Request(gw.url + "/v2/models/classifier/infer", data=body,
                                 headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


def admin(gw: GatewayProcess, method: str, path: str, body: Any = None,
          token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(gw.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def gateway_with(config: dict[str, Any], workdir: Path, *args: str) -> GatewayProcess:
    token_file = workdir / "admin-token"
    workdir.mkdir(parents=True, exist_ok=True)
    token_file.write_text(TOKEN + "\n")
    return start_gateway(config, workdir, "--admin-token-file", str(token_file),
                         "--traffic-tick-s", "0.5", *args)


@pytest.fixture
def split_gw(triton_pool: list[TritonProcess], variants: dict[str, TritonProcess],
             tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = gateway_with(split_config(triton_pool, variants["good"]), tmp_path / "gw")
    yield gw
    gw.stop()


def test_weighted_split_with_variant_header(split_gw: GatewayProcess) -> None:
    seen: Counter[str] = Counter()
    for _ in range(300):
        status, headers, doc = post(split_gw)
        assert status == 200
        seen[headers["x-servegate-variant"]] += 1
        assert doc["model_version"] == ("2" if headers["x-servegate-variant"] == "canary" else "1")
    assert set(seen) == {"stable", "canary"}
    assert 0.03 <= seen["canary"] / 300 <= 0.20, seen  # 10% weight, 300 draws
    assert split_gw.metric("servegate_variant_requests_total", variant="canary") == seen["canary"]


def test_sticky_key_keeps_a_user_on_one_variant(split_gw: GatewayProcess) -> None:
    by_user = {}
    for user in range(60):
        served = {post(split_gw, {"x-user-id": f"user-{user}"})[1]["x-servegate-variant"]
                  for _ in range(3)}
        assert len(served) == 1, f"user-{user} moved between {served}"
        by_user[user] = served.pop()
    assert "stable" in by_user.values()


def test_header_pin_and_unknown_variant(split_gw: GatewayProcess) -> None:
    for _ in range(5):
        status, headers, doc = post(split_gw, {"x-servegate-variant": "canary"})
        assert status == 200 and headers["x-servegate-variant"] == "canary"
        assert doc["model_version"] == "2"
    status, _, doc = post(split_gw, {"x-servegate-variant": "blue"})
    assert status == 400
    assert "unknown variant 'blue'" in doc["error"] and "canary" in doc["error"]


def test_admin_api_auth_and_weights(split_gw: GatewayProcess) -> None:
    assert admin(split_gw, "GET", "/admin/routes", token=None)[0] == 401
    assert admin(split_gw, "GET", "/admin/routes", token="wrong")[0] == 403
    status, routes = admin(split_gw, "GET", "/admin/routes")
    assert status == 200
    (clf,) = [r for r in routes if r["model"] == "classifier"]
    assert {v["name"]: v["weight"] for v in clf["split"]["variants"]} == {
        "stable": 90, "canary": 10}
    status, doc = admin(split_gw, "PUT", "/admin/models/classifier/weights",
                        {"weights": {"canary": 100, "stable": 0}})
    assert status == 200 and doc["weights"] == {"stable": 0, "canary": 100}
    assert all(post(split_gw)[1]["x-servegate-variant"] == "canary" for _ in range(20))
    assert admin(split_gw, "POST", "/admin/models/classifier/drain",
                 {"variant": "canary"})[0] == 400  # would leave no variant with weight
    assert admin(split_gw, "POST", "/admin/models/classifier/pin", {"variant": "stable"})[0] == 200
    assert all(post(split_gw)[1]["x-servegate-variant"] == "stable" for _ in range(20))
    assert admin(split_gw, "PUT", "/admin/models/classifier/weights",
                 {"weights": {"nope": 1}})[0] == 400
    assert admin(split_gw, "PUT", "/admin/models/classifier/weights", {"w": 1})[0] == 400
    assert admin(split_gw, "GET", "/admin/models/nomodel/rollout")[0] == 404
    assert split_gw.metric("servegate_split_weight", model="classifier", variant="stable") == 100


def _latencies(gw: GatewayProcess, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert post(gw, {"x-servegate-variant": "stable"})[0] == 200
        out.append(time.perf_counter() - t0)
    return out


def test_slow_shadow_never_slows_the_client(
        triton_pool: list[TritonProcess], variants: dict[str, TritonProcess],
        tmp_path: Path) -> None:
    plain = gateway_with(split_config(triton_pool, variants["good"]), tmp_path / "plain")
    mirrored = gateway_with(
        split_config(triton_pool, variants["good"], shadow_target=variants["slow"],
                     shadow={"percent": 100, "max_concurrency": 2}), tmp_path / "mirrored")
    try:
        _latencies(plain, 5), _latencies(mirrored, 5)  # warm connections
        base, with_shadow = [], []
        for _ in range(4):  # interleave so both see the same machine load
            base += _latencies(plain, 10)
            with_shadow += _latencies(mirrored, 10)
        slow_s = 0.3
        assert statistics.median(with_shadow) < statistics.median(base) + slow_s / 3, (
            statistics.median(base), statistics.median(with_shadow))
        wait_for(lambda: mirrored.metric("servegate_shadow_requests_total", result="dropped") > 0,
                 5, "saturated shadow drops")
        wait_for(lambda: mirrored.metric("servegate_shadow_comparisons_total",
                                         variant="mirror", agree="true") > 0,
                 10, "shadow comparisons (same model, same outputs)")
        assert mirrored.metric("servegate_shadow_comparisons_total", agree="false") == 0
    finally:
        plain.stop()
        mirrored.stop()


def test_different_shadow_model_shows_disagreement(
        triton_pool: list[TritonProcess], variants: dict[str, TritonProcess],
        tmp_path: Path) -> None:
    gw = gateway_with(split_config(triton_pool, variants["good"], canary_weight=0,
                                   shadow_target=variants["good"],
                                   shadow={"percent": 100, "max_concurrency": 64}),
                      tmp_path / "gw")
    try:
        rng = np.random.default_rng(5)
        for _ in range(40):
            x = rng.random(16).tolist()
            body = json.dumps({"inputs": [{"name": "INPUT", "shape": [1, 16],
                                           "datatype": "FP32", "data": x}]}).encode()
            assert post(gw, body=body)[0] == 200
        wait_for(lambda: gw.metric("servegate_shadow_comparisons_total",
                                   variant="mirror") >= 40, 10, "40 comparisons")
        assert gw.metric("servegate_shadow_comparisons_total", agree="false") > 0
        assert gw.metric("servegate_shadow_max_abs_error_count", variant="mirror") >= 40
        assert gw.metric("servegate_shadow_latency_delta_seconds_count") >= 40
    finally:
        gw.stop()


@pytest.mark.parametrize(("canary", "outcome", "reason"), [
    ("bad", "rolled_back", "error rate"),
    ("good", "promoted", ""),
])
def test_rollout(triton_pool: list[TritonProcess], variants: dict[str, TritonProcess],
                 tmp_path: Path, canary: str, outcome: str, reason: str) -> None:
    gw = gateway_with(split_config(triton_pool, variants[canary], canary_weight=0),
                      tmp_path / "gw")
    try:
        status, doc = admin(gw, "POST", "/admin/models/classifier/rollout", {
            "canary": "canary", "steps": [30, 60, 100], "interval_s": 1.5,
            "min_samples": 40, "max_p99_ratio": 100})
        assert status == 200 and doc["weights"] == {"canary": 30, "stable": 70}, doc
        with LoadDriver(gw.http, model="classifier", concurrency=6):
            wait_for(lambda: admin(gw, "GET", "/admin/models/classifier/rollout")[1]["status"]
                     != "running", 40, f"rollout to end ({outcome})", every=0.25)
        doc = admin(gw, "GET", "/admin/models/classifier/rollout")[1]
        assert doc["status"] == outcome, doc["history"]
        assert reason in doc["history"][-1]["reason"]
        expected = {"canary": 0.0, "stable": 100.0} if outcome == "rolled_back" else {
            "canary": 100.0, "stable": 0.0}
        assert doc["weights"] == expected
        served = {post(gw)[1]["x-servegate-variant"] for _ in range(10)}
        assert served == {"stable" if outcome == "rolled_back" else "canary"}
    finally:
        gw.stop()


def test_two_gateways_share_weights_through_redis(
        triton_pool: list[TritonProcess], variants: dict[str, TritonProcess],
        tmp_path: Path) -> None:
    redis_server = start_redis(tmp_path / "redis")  # its own: this test stops it
    config = split_config(triton_pool, variants["good"], canary_weight=50)
    args = ("--redis-url", redis_server.url)
    a = gateway_with(config, tmp_path / "a", *args, "--replica-id", "a")
    b = gateway_with(config, tmp_path / "b", *args, "--replica-id", "b")
    try:
        for user in range(30):
            key = {"x-user-id": f"user-{user}"}
            assert post(a, key)[1]["x-servegate-variant"] == post(b, key)[1][
                "x-servegate-variant"]
        changed = time.monotonic()
        assert admin(a, "PUT", "/admin/models/classifier/weights",
                     {"weights": {"canary": 0, "stable": 100}})[0] == 200
        wait_for(lambda: b.metric("servegate_split_weight", variant="canary") == 0, 1.0,
                 "replica b to apply the change within 1 s")
        assert time.monotonic() - changed < 1.0
        assert all(post(b)[1]["x-servegate-variant"] == "stable" for _ in range(20))
        redis_server.stop()  # Redis goes away: both keep serving with the last weights
        assert all(post(x)[0] == 200 for x in (a, b) for _ in range(10))
        assert b.metric("servegate_split_weight", variant="stable") == 100
    finally:
        a.stop()
        b.stop()
        redis_server.stop()


def test_grpc_calls_are_split_and_name_their_variant(split_gw: GatewayProcess) -> None:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name="classifier")
    tensor = request.inputs.add(name="INPUT", datatype="FP32", shape=[1, 16])
    del tensor
    request.raw_input_contents.append(np.full((1, 16), 0.5, np.float32).tobytes())
    with grpc.insecure_channel(split_gw.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response, call = stub.ModelInfer.with_call(
            request, metadata=(("x-servegate-variant", "canary"),), timeout=10)
        assert response.model_version == "2"
        assert dict(call.trailing_metadata())["x-servegate-variant"] == "canary"
        seen = Counter()
        for _ in range(100):
            response, call = stub.ModelInfer.with_call(request, timeout=10)
            variant = dict(call.trailing_metadata())["x-servegate-variant"]
            assert response.model_version == ("2" if variant == "canary" else "1")
            seen[variant] += 1
        assert seen["stable"] > seen["canary"] > 0 or seen["stable"] == 100
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, metadata=(("x-servegate-variant", "blue"),), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown variant 'blue'" in (err.value.details() or "")
