"""The unmodified tritonclient (HTTP, sync and aio) against the gateway vs direct Triton."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from tritonclient.utils import InferenceServerException

from servegate.local.launch import TritonProcess
from servegate.local.models import classify, embed
from tests.harness import GatewayProcess, http_get

pytestmark = pytest.mark.integration


def _classifier_input(x: np.ndarray, binary: bool) -> httpclient.InferInput:
    inp = httpclient.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return inp


@pytest.mark.parametrize("binary", [False, True])
def test_classifier_same_answer_as_direct(gateway: GatewayProcess,
                                          triton_pool: list[TritonProcess], binary: bool) -> None:
    x = np.random.default_rng(1).random((3, 16), dtype=np.float32)
    outputs = [httpclient.InferRequestedOutput("PROBS", binary_data=binary),
               httpclient.InferRequestedOutput("LABEL", binary_data=binary)]
    via = httpclient.InferenceServerClient(gateway.http).infer(
        "classifier", [_classifier_input(x, binary)], outputs=outputs, request_id="req-7")
    direct = httpclient.InferenceServerClient(triton_pool[0].http).infer(
        "classifier", [_classifier_input(x, binary)], outputs=outputs, request_id="req-7")
    np.testing.assert_array_equal(via.as_numpy("PROBS"), direct.as_numpy("PROBS"))
    np.testing.assert_allclose(via.as_numpy("PROBS"), classify(x, 1), rtol=1e-5)
    np.testing.assert_array_equal(via.as_numpy("LABEL")[:, 0], classify(x, 1).argmax(axis=1))
    assert via.get_response()["id"] == "req-7"
    assert via.get_response()["model_name"] == "classifier"


def test_large_binary_tensor_round_trips(gateway: GatewayProcess) -> None:
    data = np.random.default_rng(2).random((1, 2_000_000), dtype=np.float32)  # 8 MB each way
    inp = httpclient.InferInput("DATA", list(data.shape), "FP32")
    inp.set_data_from_numpy(data, binary_data=True)
    res = httpclient.InferenceServerClient(gateway.http, network_timeout=60).infer(
        "identity", [inp], outputs=[httpclient.InferRequestedOutput("OUTPUT", binary_data=True)])
    np.testing.assert_array_equal(res.as_numpy("OUTPUT"), data)


def test_bytes_tensor_binary_and_json(gateway: GatewayProcess) -> None:
    client = httpclient.InferenceServerClient(gateway.http)
    texts = np.array([[b"hello triton"], [b"gateway in front"]], dtype=object)
    for binary in (False, True):
        inp = httpclient.InferInput("TEXT", [2, 1], "BYTES")
        inp.set_data_from_numpy(texts, binary_data=binary)
        res = client.infer("embedder", [inp])
        np.testing.assert_allclose(res.as_numpy("EMBEDDING"), embed([t[0] for t in texts]),
                                   rtol=1e-6)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_and_response(gateway: GatewayProcess, algorithm: str) -> None:
    x = np.random.default_rng(3).random((4, 16), dtype=np.float32)
    res = httpclient.InferenceServerClient(gateway.http).infer(
        "classifier", [_classifier_input(x, True)],
        request_compression_algorithm=algorithm, response_compression_algorithm=algorithm)
    np.testing.assert_allclose(res.as_numpy("PROBS"), classify(x, 1), rtol=1e-5)


async def test_aio_client_concurrent(gateway: GatewayProcess) -> None:
    client = aiohttpclient.InferenceServerClient(gateway.http)
    try:
        xs = [np.full((1, 16), i / 10, dtype=np.float32) for i in range(40)]

        async def one(x: np.ndarray) -> np.ndarray:
            inp = aiohttpclient.InferInput("INPUT", [1, 16], "FP32")
            inp.set_data_from_numpy(x)
            return (await client.infer("classifier", [inp])).as_numpy("PROBS")

        results = await asyncio.gather(*(one(x) for x in xs))
        for x, probs in zip(xs, results, strict=True):
            np.testing.assert_allclose(probs, classify(x, 1), rtol=1e-5)
        assert await client.is_server_ready()
        assert await client.is_model_ready("classifier")
    finally:
        await client.close()


def test_metadata_config_and_readiness(gateway: GatewayProcess,
                                       triton_pool: list[TritonProcess]) -> None:
    via = httpclient.InferenceServerClient(gateway.http)
    direct = httpclient.InferenceServerClient(triton_pool[0].http)
    assert via.is_server_live() and via.is_server_ready()
    assert via.is_model_ready("classifier") and via.is_model_ready("classifier", "1")
    assert not via.is_model_ready("classifier", "7")
    assert via.get_model_metadata("classifier") == direct.get_model_metadata("classifier")
    assert via.get_model_metadata("classifier", "1") == direct.get_model_metadata("classifier", "1")
    via_cfg, direct_cfg = via.get_model_config("embedder"), direct.get_model_config("embedder")
    via_cfg.pop("parameters"), direct_cfg.pop("parameters")  # per-server workspace path
    assert via_cfg == direct_cfg and via_cfg["name"] == "embedder"
    meta = via.get_server_metadata()
    assert meta["name"] == "servegate" and "binary_tensor_data" in meta["extensions"]


def test_repository_index_from_routing_table(gateway: GatewayProcess) -> None:
    index = httpclient.InferenceServerClient(gateway.http).get_model_repository_index()
    assert {m["name"]: m["state"] for m in index} == {
        "classifier": "READY", "embedder": "READY", "identity": "READY"}


def test_statistics_are_summed_over_the_pool(gateway: GatewayProcess,
                                             triton_pool: list[TritonProcess]) -> None:
    client = httpclient.InferenceServerClient(gateway.http)
    x = np.zeros((1, 16), dtype=np.float32)
    for _ in range(20):
        client.infer("classifier", [_classifier_input(x, False)])

    def counts() -> tuple[int, int]:
        via = client.get_inference_statistics("classifier")["model_stats"][0]["inference_count"]
        direct = sum(
            httpclient.InferenceServerClient(t.http).get_inference_statistics("classifier")
            ["model_stats"][0]["inference_count"] for t in triton_pool)
        return int(via), int(direct)

    via, direct = counts()
    assert via == direct and via >= 20
    all_stats = client.get_inference_statistics()
    assert {s["name"] for s in all_stats["model_stats"]} >= {"classifier", "embedder", "identity"}


def test_load_is_spread_across_the_pool(gateway: GatewayProcess,
                                        triton_pool: list[TritonProcess]) -> None:
    def per_endpoint() -> list[int]:
        return [int(httpclient.InferenceServerClient(t.http).get_inference_statistics(
            "identity")["model_stats"][0]["inference_count"]) for t in triton_pool]

    before = per_endpoint()

    async def drive() -> None:
        client = aiohttpclient.InferenceServerClient(gateway.http)
        try:
            async def one() -> None:
                inp = aiohttpclient.InferInput("DATA", [1, 8], "FP32")
                inp.set_data_from_numpy(np.ones((1, 8), dtype=np.float32))
                await client.infer("identity", [inp])

            await asyncio.gather(*(one() for _ in range(200)))
        finally:
            await client.close()

    asyncio.run(drive())
    delta = [a - b for a, b in zip(per_endpoint(), before, strict=True)]
    assert sum(delta) == 200
    assert min(delta) >= 50, f"unbalanced: {delta}"


def _raw(gateway: GatewayProcess, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict[str, object]]:
    req = urllib.request.Request(gateway.url + path, data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, hdrs, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, dict(e.headers), e.read()
    return status, {k.lower(): v for k, v in hdrs.items()}, json.loads(raw) if raw else {}


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), [
    ("POST", "/v2/models/nope/infer", b"{}", 404, "unknown model"),
    ("POST", "/v2/models/classifier/versions/abc/infer", b"{}", 400, "version"),
    ("GET", "/v2/models/classifier/infer", None, 405, "Method Not Allowed"),
    ("DELETE", "/v2/health/ready", None, 405, "Method Not Allowed"),
    ("GET", "/v2/nothing/here", None, 404, "Not Found"),
    ("POST", "/v2/models/classifier/bogus", b"{}", 404, "Not Found"),
    ("POST", "/v2/models/embedder/infer", b"x" * 5000, 413, "exceeds the limit"),
    ("POST", "/v2/repository/models/classifier/load", b"{}", 501, "not available"),
])
def test_bad_requests_get_v2_errors(gateway: GatewayProcess, method: str, path: str,
                                    body: bytes | None, status: int, fragment: str) -> None:
    got, headers, doc = _raw(gateway, method, path, body)
    assert got == status
    assert isinstance(doc.get("error"), str) and fragment.lower() in doc["error"].lower()
    if status == 405:
        assert "allow" in headers


def test_unknown_model_through_tritonclient(gateway: GatewayProcess) -> None:
    client = httpclient.InferenceServerClient(gateway.http)
    with pytest.raises(InferenceServerException) as err:
        client.infer("nope", [_classifier_input(np.zeros((1, 16), np.float32), False)])
    assert err.value.status() == "404"


@pytest.mark.parametrize("bad", [
    json.dumps({"inputs": [{"name": "WRONG", "shape": [1, 16], "datatype": "FP32",
                            "data": [0.0] * 16}]}).encode(),
    b"{not json",  # Triton answers malformed JSON itself; the gateway does not parse bodies
    b'{"inputs": []}',
])
def test_backend_errors_pass_through_unchanged(gateway: GatewayProcess,
                                               triton_pool: list[TritonProcess],
                                               bad: bytes) -> None:
    status, _, doc = _raw(gateway, "POST", "/v2/models/classifier/infer", bad)
    req = urllib.request.Request(f"http://{triton_pool[0].http}/v2/models/classifier/infer",
                                 data=bad, method="POST")
    with pytest.raises(urllib.error.HTTPError) as direct:
        urllib.request.urlopen(req, timeout=10)
    assert status == direct.value.code and status >= 400
    assert doc == json.loads(direct.value.read()) and "error" in doc


def test_metrics_are_exported(gateway: GatewayProcess) -> None:
    httpclient.InferenceServerClient(gateway.http).infer(
        "classifier", [_classifier_input(np.zeros((1, 16), np.float32), False)])
    text = gateway.metrics()
    assert 'servegate_requests_total{code_class="2xx"' in text
    assert "servegate_request_duration_seconds_bucket" in text
    assert "servegate_endpoint_healthy" in text and "servegate_in_flight_requests" in text
    assert gateway.metric("servegate_requests_total", model="classifier", code_class="2xx") > 0
    assert http_get(gateway.url + "/metrics")[0] == 200
