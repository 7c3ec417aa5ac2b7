"""gateway.pipeline.auth, gateway.pipeline.quota (local counting, no Redis),
gateway.pipeline.priority and gateway.pipeline.admission: keys stored hashed, 401/403, quotas,
in-flight caps, shedding, priority."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

import pytest
from tritonclient.grpc import service_pb2 as pb

from contracts import parse_config
from contracts.tenancy import TenantConfig
from gateway.errors import Forbidden, Overloaded, Unauthorized
from gateway.metrics import GatewayMetrics
from gateway.pipeline.admission import Admission
from gateway.pipeline.auth import KeyRing, KeysError, credential, hash_key, load_keys
from gateway.pipeline.priority import grpc_with_priority, rest_with_priority
from gateway.pipeline.quota import Quotas
from gateway.pipeline.runtime import Runtime


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ keys


def test_keys_are_stored_hashed_and_plain_keys_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"acme: ['{hash_key('k-acme')}']\nglobex: ['{hash_key('k-globex')}']\n")
    ring = load_keys(path)
    assert ring.tenant(b"k-acme") == "acme"
    assert ring.tenant(b"k-globex") == "globex"
    path.write_text("acme: ['k-plain-secret']\n")
    with pytest.raises(KeysError) as err:
        load_keys(path)
    assert "k-plain-secret" not in str(err.value)  # never echoed


def test_keys_from_env_and_errors() -> None:
    ring = load_keys(None, {"SERVEGATE_API_KEYS": f'{{"a": ["{hash_key("x")}"]}}'})
    assert ring.tenant(b"x") == "a"
    assert len(load_keys(None, {})) == 0
    with pytest.raises(KeysError):
        load_keys(None, {"SERVEGATE_API_KEYS": "- just a list"})
    same = hash_key("shared")
    with pytest.raises(KeysError, match="also a key of"):
        KeyRing.parse({"a": [same], "b": [same]}, "doc")


def test_missing_or_wrong_key_is_unauthorized() -> None:
    ring = KeyRing.parse({"a": [hash_key("right")]}, "doc")
    with pytest.raises(Unauthorized, match="missing"):
        ring.tenant(None)
    with pytest.raises(Unauthorized, match="invalid"):
        ring.tenant(b"wrong")


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hit or miss, the final check goes through hmac.compare_digest on 32-byte digests."""
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    ring = KeyRing.parse({"a": [hash_key("right")]}, "doc")
    ring.tenant(b"right")
    with pytest.raises(Unauthorized):
        ring.tenant(b"righ")
    assert calls == [(32, 32), (32, 32)]


def test_credential_extraction() -> None:
    assert credential(b"Bearer abc ", True) == b"abc"
    assert credential(b"bearer abc", True) == b"abc"
    assert credential(b"Basic abc", True) is None
    assert credential(b"Bearer ", True) is None
    assert credential(b"abc", False) == b"abc"
    assert credential(None, False) is None


# ------------------------------------------------------------------ quotas (local)


def test_rate_quota_slides_over_windows() -> None:
    clock = Clock(1000.0)
    quotas = Quotas("r1", clock=clock)
    cfg = TenantConfig(requests_per_s=5)
    for _ in range(5):
        quotas.acquire("a", cfg)
        quotas.release("a")
    with pytest.raises(Overloaded) as err:
        quotas.acquire("a", cfg)
    assert err.value.reason == "rate" and err.value.retry_after_s >= 1
    clock.now = 1001.5  # half the previous window still counts: 2.5 + 0 -> 2 more fit
    quotas.acquire("a", cfg)
    quotas.acquire("a", cfg)
    with pytest.raises(Overloaded):
        quotas.acquire("a", cfg)
    clock.now = 1003.0  # two windows later nothing counts
    quotas.acquire("a", cfg)


def test_concurrency_quota_counts_in_and_out() -> None:
    quotas = Quotas("r1", clock=Clock())
    cfg = TenantConfig(max_concurrency=2)
    quotas.acquire("a", cfg)
    quotas.acquire("a", cfg)
    with pytest.raises(Overloaded) as err:
        quotas.acquire("a", cfg)
    assert err.value.reason == "concurrency"
    quotas.acquire("b", cfg)  # another tenant is not affected
    quotas.release("a")
    quotas.acquire("a", cfg)
    assert quotas.in_flight("a") == 2


def test_without_fresh_shared_counts_a_replica_takes_its_share() -> None:
    clock = Clock()
    quotas = Quotas("r1", redis_url="redis://unused", clock=clock)
    quotas.replicas = 2  # as last seen in Redis
    cfg = TenantConfig(requests_per_s=10)
    admitted = 0
    for _ in range(20):
        try:
            quotas.acquire("a", cfg)
            admitted += 1
        except Overloaded:
            pass
    assert admitted == 5


# ------------------------------------------------------------------ priority


def test_grpc_priority_entry_is_a_valid_map_entry_that_wins() -> None:
    request = pb.ModelInferRequest(model_name="m", id="7")
    request.parameters["priority"].uint64_param = 9
    request.parameters["timeout"].int64_param = 5
    out = pb.ModelInferRequest.FromString(grpc_with_priority(request.SerializeToString(), 300))
    assert out.parameters["priority"].uint64_param == 300
    assert out.parameters["timeout"].int64_param == 5
    assert out.model_name == "m" and out.id == "7"


def test_rest_priority_keeps_other_parameters_and_binary_data() -> None:
    head = b'{"parameters":{"timeout":5},"inputs":[]}'
    binary = b"\x00\x01\x02"
    headers = [(b"inference-header-content-length", str(len(head)).encode()),
               (b"content-type", b"application/octet-stream")]
    result = rest_with_priority(head + binary, headers, 3)
    assert result is not None
    body, new_headers = result
    hlen = int(dict(new_headers)[b"inference-header-content-length"])
    import json
    assert json.loads(body[:hlen]) == {"parameters": {"timeout": 5, "priority": 3}, "inputs": []}
    assert body[hlen:] == binary


@pytest.mark.parametrize("body, headers", [
    (b'{"inputs": []}', [(b"content-encoding", b"gzip")]),
    (b"[1, 2]", []),
    (b"not json", []),
    (b'{"parameters": 5}', []),
    (b"{}", [(b"inference-header-content-length", b"99")]),
])
def test_rest_priority_leaves_what_it_cannot_rewrite(body: bytes, headers: Any) -> None:
    assert rest_with_priority(body, headers, 1) is None


# ------------------------------------------------------------------ admission


def admission(extra: dict[str, Any], pool: dict[str, Any] | None = None) -> Admission:
    config = parse_config({
        "pools": {"p": {"endpoints": ["127.0.0.1:1", "127.0.0.1:2"], **(pool or {})}},
        "models": {"m": {"pool": "p"}, "other": {"pool": "p"}},
        **extra,
    })
    runtime = Runtime(config)
    metrics = GatewayMetrics(runtime, dict)
    return Admission(runtime, Quotas("r1", clock=Clock()), metrics)


def test_open_gateway_admits_without_a_ticket() -> None:
    adm = admission({})
    assert adm.authenticate(None) is None
    assert adm.admit(None, adm.runtime.state.table.lookup("m")) is None


def test_tenant_model_allowlist_is_403_even_for_metadata() -> None:
    adm = admission({"auth": {}, "tenants": {"a": {"models": ["m"]}}})
    adm.keys = KeyRing.parse({"a": [hash_key("ka")]}, "doc")
    tenant = adm.authenticate(b"Bearer ka")
    assert tenant == "a"
    with pytest.raises(Unauthorized):
        adm.authenticate(b"Bearer nope")
    table = adm.runtime.state.table
    ticket = adm.admit(tenant, table.lookup("m"))
    assert ticket is not None and ticket.priority == "standard" and ticket.level == 0
    adm.release(ticket)
    with pytest.raises(Forbidden):
        adm.admit(tenant, table.lookup("other"))
    with pytest.raises(Forbidden):
        adm.admit(tenant, table.lookup("other"), infer=False)


def test_max_in_flight_per_model() -> None:
    adm = admission({"models": {"m": {"pool": "p", "max_in_flight": 2}, "other": {"pool": "p"}}})
    route = adm.runtime.state.table.lookup("m")
    tickets = [adm.admit(None, route), adm.admit(None, route)]
    with pytest.raises(Overloaded) as err:
        adm.admit(None, route)
    assert err.value.reason == "max_in_flight"
    adm.release(tickets[0])
    assert adm.admit(None, route) is not None


def test_shedding_drops_sheddable_before_standard_and_never_critical() -> None:
    adm = admission({
        "models": {"m": {"pool": "p", "priority": "sheddable"}, "other": {"pool": "p"}},
        "tenants": {"gold": {"priority": "critical"}, "std": {"priority": "standard"}},
    }, {"shedding": {"sheddable_at": 1, "standard_at": 3}})
    pool = adm.runtime.state.pools["p"]
    route = adm.runtime.state.table.lookup("m")

    def outcome(tenant: str | None) -> str:
        try:
            adm.release(adm.admit(tenant, route))
            return "ok"
        except Overloaded:
            return "shed"

    assert [outcome(t) for t in (None, "std", "gold")] == ["ok", "ok", "ok"]
    pool.endpoints[0].outstanding = 2  # 1 per ready endpoint
    assert [outcome(t) for t in (None, "std", "gold")] == ["shed", "ok", "ok"]
    pool.endpoints[1].outstanding = 4  # 3 per ready endpoint
    assert [outcome(t) for t in (None, "std", "gold")] == ["shed", "shed", "ok"]
    ticket = adm.admit("gold", route)
    assert ticket is not None and ticket.level == 1  # critical -> Triton level 1
