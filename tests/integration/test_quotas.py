"""Admission under load: fleet-wide rate quotas through a real Redis (and the fallback when
it is down), concurrency quotas, per-model in-flight caps and shedding by priority class —
real Triton (the ``sleeper`` model holds requests in flight), real tritonclient."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gateway.pipeline.auth import hash_key
from servegate.local.launch import TritonProcess, start_triton
from tests.harness import GatewayProcess, LoadDriver, start_gateway, start_redis, wait_for

pytestmark = pytest.mark.integration

KEYS = {t: f"{t}-key-0123456789" for t in ("gold", "std", "batch", "noisy", "quiet", "pair")}


@pytest.fixture(scope="module")
def triton() -> Iterator[TritonProcess]:
    proc = start_triton(("identity", "sleeper"))
    yield proc
    proc.stop()


def config(triton: TritonProcess, **extra: Any) -> dict[str, Any]:
    return {
        "pools": {"cpu": {"endpoints": [{"http": triton.http, "grpc": triton.grpc}],
                          "shedding": {"sheddable_at": 3, "standard_at": 8}}},
        "models": {"identity": {"pool": "cpu"},
                   "sleeper": {"pool": "cpu", "max_in_flight": 12}},
        "auth": {},
        "tenants": {
            "gold": {"priority": "critical"},
            "std": {"priority": "standard"},
            "batch": {"priority": "sheddable", "max_concurrency": 2},
            "noisy": {"requests_per_s": 20},
            "quiet": {},
            "pair": {"requests_per_s": 10},
        },
        **extra,
    }


def gateway(triton: TritonProcess, work: Path, *args: str) -> GatewayProcess:
    keys = work / "keys.json"
    work.mkdir(parents=True, exist_ok=True)
    keys.write_text(json.dumps({t: [hash_key(k)] for t, k in KEYS.items()}))
    return start_gateway(config(triton), work, "--api-keys-file", str(keys), *args)


@pytest.fixture(scope="module")
def gw(triton: TritonProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = gateway(triton, tmp_path_factory.mktemp("quotas"))
    yield proc
    proc.stop()


def call(gw: GatewayProcess, tenant: str, model: str = "identity",
         delay_ms: int = 0) -> tuple[int, dict[str, str], dict[str, Any]]:
    if model == "sleeper":
        inputs = [{"name": "DELAY_MS", "shape": [1, 1], "datatype": "INT32", "data": [delay_ms]}]
    else:
        inputs = [{"name": "DATA", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
    req = urllib.request.Request(
        f"{gw.url}/v2/models/{model}/infer", data=json.dumps({"inputs": inputs}).encode(),
        headers={"authorization": f"Bearer {KEYS[tenant]}"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_rate_quota_answers_429_with_retry_after(gw: GatewayProcess) -> None:
    results = [call(gw, "noisy") for _ in range(60)]
    statuses = Counter(status for status, _, _ in results)
    assert set(statuses) == {200, 429}, statuses
    assert 10 <= statuses[200] <= 45, statuses  # 20/s over the burst's one or two windows
    _, headers, doc = next(r for r in results if r[0] == 429)
    assert int(headers["retry-after"]) >= 1
    assert "noisy" in doc["error"] and "rate quota" in doc["error"]
    assert gw.metric("servegate_admission_rejections_total", tenant="noisy", model="identity",
                     reason="rate") == statuses[429]


def test_noisy_tenant_is_limited_while_another_is_served(gw: GatewayProcess) -> None:
    with LoadDriver(gw.http, "identity", concurrency=6,
                    headers={"authorization": f"Bearer {KEYS['noisy']}"}) as noisy:
        # Over a few windows: some requests admitted, the rest refused.
        wait_for(lambda: len(noisy.errors) >= 50 and noisy.ok >= 20, 20,
                 "the noisy tenant limited")
        quiet = [call(gw, "quiet")[0] for _ in range(40)]
    assert quiet == [200] * 40, quiet
    assert noisy.ok > 0, noisy.errors[:3]
    rejected = gw.metric("servegate_admission_rejections_total", tenant="noisy",
                         model="identity", reason="rate")
    # every error the noisy tenant saw was its quota
    assert rejected >= len(noisy.errors), (rejected, len(noisy.errors), noisy.errors[-3:])


def _concurrent(gw: GatewayProcess, calls: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Fire sleeper calls at once: (tenant, delay_ms) -> (tenant, status), in call order."""
    with ThreadPoolExecutor(max_workers=len(calls)) as ex:
        futures = [ex.submit(call, gw, tenant, "sleeper", delay) for tenant, delay in calls]
        return [(tenant, f.result()[0]) for (tenant, _), f in zip(calls, futures, strict=True)]


def test_sheddable_is_shed_before_standard_and_critical_never(gw: GatewayProcess) -> None:
    """One endpoint: with 5 standard calls held in flight (queue 5 >= sheddable_at 3),
    sheddable calls get 429 while standard ones are still admitted; at 8 (>= standard_at 8)
    standard is shed too, and critical still goes through."""
    with ThreadPoolExecutor(max_workers=16) as ex:
        held = [ex.submit(call, gw, "std", "sleeper", 2500) for _ in range(5)]
        wait_for(lambda: gw.metric("servegate_in_flight_requests", model="sleeper") >= 5, 10,
                 "standard calls in flight")
        shed = call(gw, "batch", "sleeper", 1)  # answered at once, without waiting
        assert shed[0] == 429 and "shed" in shed[2]["error"], shed
        # Standard calls are still admitted at this queue depth: three more get in.
        held += [ex.submit(call, gw, "std", "sleeper", 2500) for _ in range(3)]
        wait_for(lambda: gw.metric("servegate_in_flight_requests", model="sleeper") >= 8, 10,
                 "eight standard calls in flight")
        assert call(gw, "std", "sleeper", 1)[0] == 429
        assert call(gw, "gold", "sleeper", 1)[0] == 200
        assert [f.result()[0] for f in held] == [200] * 8
    assert gw.metric("servegate_admission_rejections_total", tenant="batch", model="sleeper",
                     reason="shed") >= 1


def test_concurrency_quota_and_model_in_flight_cap(gw: GatewayProcess) -> None:
    # batch: max_concurrency 2 (no shedding at an idle pool)
    results = _concurrent(gw, [("batch", 800)] * 5)
    assert Counter(s for _, s in results) == {200: 2, 429: 3}, results
    # sleeper: max_in_flight 12 for everyone together; critical traffic is bounded by it too
    results = _concurrent(gw, [("gold", 800)] * 16)
    assert Counter(s for _, s in results) == {200: 12, 429: 4}, results


def test_rate_quota_is_fleet_wide_through_redis_and_falls_back_without_it(
        triton: TritonProcess, tmp_path: Path) -> None:
    """Two replicas share tenant pair's 10 requests/s through Redis; with Redis stopped each
    replica keeps to its share (5/s) and serving continues; restarted, sharing resumes."""
    redis = start_redis(tmp_path / "redis")
    replicas = [gateway(triton, tmp_path / f"gw{i}", "--redis-url", redis.url,
                        "--replica-id", f"r{i}") for i in range(2)]
    try:
        def admitted_over(seconds: float) -> tuple[int, int]:
            ok = errors = 0
            end = time.monotonic() + seconds
            i = 0
            while time.monotonic() < end:
                status = call(replicas[i % 2], "pair")[0]
                i += 1
                ok += status == 200
                errors += status not in (200, 429)
            return ok, errors

        wait_for(lambda: replicas[0].metric("servegate_admission_rejections_total",
                                            tenant="pair", model="identity",
                                            reason="rate") >= 0, 5, "metrics")
        admitted_over(1.0)  # let both replicas see each other
        ok, errors = admitted_over(4.0)
        assert errors == 0
        assert 25 <= ok <= 60, ok  # ~10/s fleet-wide, not 20/s (one replica alone: 40)
        redis.stop()
        ok, errors = admitted_over(4.0)
        assert errors == 0  # Redis down: still serving, within each replica's share
        assert 20 <= ok <= 60, ok
        redis = start_redis(tmp_path / "redis", port=redis.port)
        wait_for(lambda: all("quota counts in Redis is back after" in gw.log() for gw in replicas),
                 15, "both replicas syncing again")
        ok, errors = admitted_over(4.0)
        assert errors == 0
        assert 25 <= ok <= 60, ok
    finally:
        for gw in replicas:
            gw.stop()
        redis.stop()
