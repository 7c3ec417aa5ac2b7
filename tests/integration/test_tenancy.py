"""Auth, tenancy, quotas, priorities and shedding end to end: real Triton, the real
tritonclient (HTTP and gRPC), a real Redis for fleet-wide quotas.

Keys are given to the gateway as hashes (``--api-keys-file``); the plain keys live only here.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from gateway.pipeline.auth import hash_key
from servegate.local.launch import TritonProcess, start_triton
from tests.harness import GatewayProcess, start_gateway, wait_for

pytestmark = pytest.mark.integration

KEYS = {"acme": "acme-key-0123456789", "globex": "globex-key-0123456789",
        "batch": "batch-key-0123456789"}
ADMIN = "admin-token-0123456789"


def tenancy_config(triton: TritonProcess, **pool_extra: Any) -> dict[str, Any]:
    return {
        "pools": {"cpu": {"endpoints": [{"http": triton.http, "grpc": triton.grpc}],
                          **pool_extra}},
        "models": {"identity": {"pool": "cpu"}, "classifier": {"pool": "cpu"},
                   "sleeper": {"pool": "cpu"}},
        "auth": {"header": "authorization"},
        "tenants": {
            "acme": {"models": ["classifier", "identity", "sleeper"], "priority": "critical"},
            "globex": {"models": ["identity"], "requests_per_s": 5},
            "batch": {"priority": "sheddable"},
        },
    }


def write_keys(path: Path) -> Path:
    path.write_text(json.dumps({t: [hash_key(k)] for t, k in KEYS.items()}))
    return path


@pytest.fixture(scope="module")
def triton() -> Iterator[TritonProcess]:
    proc = start_triton(("identity", "classifier", "sleeper"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gw(triton: TritonProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("tenancy")
    keys = write_keys(work / "keys.json")
    (work / "admin").write_text(ADMIN)
    proc = start_gateway(tenancy_config(triton), work, "--api-keys-file", str(keys),
                         "--admin-token-file", str(work / "admin"))
    yield proc
    proc.stop()


def bearer(tenant: str | None = None, key: str | None = None) -> dict[str, str]:
    if tenant is None and key is None:
        return {}
    return {"authorization": f"Bearer {key or KEYS[tenant or '']}"}


def identity_inputs(mod: Any) -> list[Any]:
    inp = mod.InferInput("DATA", [1, 8], "FP32")
    inp.set_data_from_numpy(np.ones((1, 8), dtype=np.float32))
    return [inp]


def raw(gw: GatewayProcess, path: str, headers: dict[str, str] | None = None,
        body: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(gw.url + path, data=body, headers=headers or {},
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


INFER = json.dumps({"inputs": [{"name": "DATA", "shape": [1, 4], "datatype": "FP32",
                                "data": [1, 2, 3, 4]}]}).encode()


# ------------------------------------------------------------------ REST auth


def test_rest_no_key_wrong_key_other_model(gw: GatewayProcess) -> None:
    status, headers, doc = raw(gw, "/v2/models/identity/infer", body=INFER)
    assert status == 401 and "error" in doc and headers.get("www-authenticate") == "Bearer"
    status, _, doc = raw(gw, "/v2/models/identity/infer", bearer(key="nope"), INFER)
    assert status == 401 and doc == {"error": "invalid API key"}
    status, _, doc = raw(gw, "/v2/models/classifier/infer", bearer("globex"), INFER)
    assert status == 403 and "globex" in doc["error"] and "classifier" in doc["error"]
    # Metadata of a model the tenant may not call is refused too; its own works.
    assert raw(gw, "/v2/models/classifier", bearer("globex"))[0] == 403
    assert raw(gw, "/v2/models/identity", bearer("globex"))[0] == 200
    # Gateway-answered calls need a key; probes and metrics do not.
    assert raw(gw, "/v2/repository/index", body=b"{}")[0] == 401
    assert raw(gw, "/v2")[0] == 401
    assert raw(gw, "/v2", bearer("globex"))[0] == 200
    assert raw(gw, "/v2/health/ready")[0] == 200
    assert urllib.request.urlopen(gw.url + "/metrics", timeout=5).status == 200


def test_rest_tritonclient_with_a_key(gw: GatewayProcess) -> None:
    client = httpclient.InferenceServerClient(gw.http)
    result = client.infer("identity", identity_inputs(httpclient), headers=bearer("acme"))
    assert result.as_numpy("OUTPUT").shape == (1, 8)
    with pytest.raises(InferenceServerException) as err:
        client.infer("identity", identity_inputs(httpclient))
    assert "401" in str(err.value.status()) or "missing API key" in str(err.value)


def test_admin_api_wants_its_own_token(gw: GatewayProcess) -> None:
    assert raw(gw, "/admin/routes")[0] == 401
    assert raw(gw, "/admin/routes", bearer("acme"))[0] == 403  # a tenant key is not admin
    assert raw(gw, "/admin/routes", {"authorization": f"Bearer {ADMIN}"})[0] == 200
    # ... and the admin token is not an API key.
    assert raw(gw, "/v2/models/identity/infer", {"authorization": f"Bearer {ADMIN}"},
               INFER)[0] == 401


def test_keys_are_never_logged(gw: GatewayProcess) -> None:
    raw(gw, "/v2/models/identity/infer", bearer(key="leaked-looking-key"), INFER)
    log = gw.log()
    assert all(k not in log for k in KEYS.values()) and "leaked-looking-key" not in log


# ------------------------------------------------------------------ gRPC auth


def test_grpc_auth_statuses(gw: GatewayProcess) -> None:
    client = grpcclient.InferenceServerClient(gw.grpc)
    assert client.is_server_live()  # no key needed to probe
    cases = [(None, "identity", "StatusCode.UNAUTHENTICATED"),
             ({"authorization": "Bearer nope"}, "identity", "StatusCode.UNAUTHENTICATED"),
             (bearer("globex"), "classifier", "StatusCode.PERMISSION_DENIED")]
    for headers, model, status in cases:
        with pytest.raises(InferenceServerException) as err:
            client.infer(model, identity_inputs(grpcclient), headers=headers)
        assert err.value.status() == status, (headers, err.value)
    result = client.infer("identity", identity_inputs(grpcclient), headers=bearer("globex"))
    assert result.as_numpy("OUTPUT").shape == (1, 8)
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("classifier", headers=bearer("globex"))
    assert err.value.status() == "StatusCode.PERMISSION_DENIED"
    with pytest.raises(InferenceServerException) as err:
        client.get_server_metadata()
    assert err.value.status() == "StatusCode.UNAUTHENTICATED"


def test_priority_reaches_triton_on_both_protocols(gw: GatewayProcess) -> None:
    """acme is critical (Triton level 1), batch sheddable (level 3): the gateway writes the V2
    ``priority`` parameter into the request and Triton accepts it on REST and gRPC."""
    for tenant in ("acme", "batch"):
        res = httpclient.InferenceServerClient(gw.http).infer(
            "identity", identity_inputs(httpclient), headers=bearer(tenant))
        assert res.as_numpy("OUTPUT").shape == (1, 8)
        res = grpcclient.InferenceServerClient(gw.grpc).infer(
            "identity", identity_inputs(grpcclient), headers=bearer(tenant))
        assert res.as_numpy("OUTPUT").shape == (1, 8)
    assert gw.metric("servegate_priority_not_applied_total", model="identity") == 0


def test_critical_requests_overtake_queued_sheddable_ones_in_triton(gw: GatewayProcess) -> None:
    """Triton's priority queue sees the levels the gateway wrote: with the sleeper busy (batches
    of at most 4, 200 ms each) and sheddable requests queued, a critical request sent last
    finishes before most of them (first in, first out it would finish last)."""
    done: list[tuple[str, float]] = []
    lock = threading.Lock()

    def sleep_call(tenant: str) -> None:
        client = httpclient.InferenceServerClient(gw.http, network_timeout=60)
        inp = httpclient.InferInput("DELAY_MS", [1, 1], "INT32")
        inp.set_data_from_numpy(np.array([[200]], dtype=np.int32))
        client.infer("sleeper", [inp], headers=bearer(tenant))
        with lock:
            done.append((tenant, time.monotonic()))

    with ThreadPoolExecutor(max_workers=40) as ex:
        futures = [ex.submit(sleep_call, "batch") for _ in range(30)]
        wait_for(lambda: gw.metric("servegate_in_flight_requests", model="sleeper") >= 12,
                 10, "sheddable requests queued")
        critical = ex.submit(sleep_call, "acme")
        for f in [*futures, critical]:
            f.result(60)
    order = [t for t, _ in sorted(done, key=lambda d: d[1])]
    position = order.index("acme")
    assert position < len(order) // 2, order


def test_key_rotation_on_reload_and_a_bad_keys_file_keeps_the_old_keys(
        gw: GatewayProcess) -> None:
    keys_path = gw.config_path.parent / "keys.json"
    original = keys_path.read_text()
    infer = "/v2/models/identity/infer"
    try:
        reloads = gw.metric("servegate_config_reloads_total", result="failure")
        keys_path.write_text("acme: [not-a-hash]\n")
        gw.reload()
        wait_for(lambda: gw.metric("servegate_config_reloads_total", result="failure")
                 > reloads, 10, "the bad keys file refused")
        assert raw(gw, infer, bearer("acme"), INFER)[0] == 200  # old keys still in force
        # Rotation: acme gets a new key, the old one stops working.
        keys = json.loads(original)
        keys["acme"] = [hash_key("acme-rotated-key-0123456789")]
        keys_path.write_text(json.dumps(keys))
        gw.reload()
        wait_for(lambda: raw(gw, infer, bearer(key="acme-rotated-key-0123456789"),
                             INFER)[0] == 200, 10, "the rotated key accepted")
        assert raw(gw, infer, bearer("acme"), INFER)[0] == 401
    finally:
        keys_path.write_text(original)
        gw.reload()
        wait_for(lambda: raw(gw, infer, bearer("acme"), INFER)[0] == 200, 10, "keys restored")


def test_repository_index_lists_only_the_tenants_models(gw: GatewayProcess) -> None:
    status, _, doc = raw(gw, "/v2/repository/index", bearer("globex"), b"{}")
    assert status == 200 and [m["name"] for m in doc] == ["identity"]
    status, _, doc = raw(gw, "/v2/repository/index", bearer("acme"), b"{}")
    assert sorted(m["name"] for m in doc) == ["classifier", "identity", "sleeper"]
    index = grpcclient.InferenceServerClient(gw.grpc).get_model_repository_index(
        headers=bearer("globex"), as_json=True)
    assert [m["name"] for m in index["models"]] == ["identity"]
