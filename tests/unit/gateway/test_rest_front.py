"""The REST front in-process: the gateway as ``servegate gateway`` wires it (``Gateway``), its
ASGI app driven through ``httpx.ASGITransport``, against a scripted upstream standing in for
Triton. One test per branch of the request path: forward, auth, split and pin, admission,
cold-start wait, retry on a refused connect, each error, streams. The same paths against real
Triton are the integration tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts import EndpointConfig, parse_config
from gateway.adapters.upstream import Headers, UpstreamResponse
from gateway.errors import UpstreamBroken, UpstreamConnectError, UpstreamError, UpstreamTimeout
from gateway.pipeline.auth import hash_key
from gateway.server import Gateway
from gateway.settings import GatewaySettings, ServerSettings

BODY = json.dumps({"inputs": [{"name": "INPUT", "shape": [1, 2], "datatype": "FP32",
                               "data": [1.0, 2.0]}]}).encode()


@dataclass
class Sent:
    endpoint: str
    method: bytes
    target: bytes
    headers: Headers
    body: bytes


@dataclass
class Scripted:
    """Stands in for Triton: records what it is sent and answers with ``answer(sent)``, which
    may raise an :class:`UpstreamError` (a connect refused, a reset, a timeout)."""

    answer: Callable[[Sent], UpstreamResponse] = field(
        default=lambda sent: UpstreamResponse(200, [(b"content-type", b"application/json")],
                                              b'{"outputs":[]}'))
    sent: list[Sent] = field(default_factory=list)
    gate: asyncio.Event | None = None  # when set: every request waits for it
    chunks: list[bytes] = field(default_factory=list)

    async def request(self, host: str, port: int, method: bytes, target: bytes,
                      headers: Headers, body: bytes, connect_timeout: float,
                      read_timeout: float) -> UpstreamResponse:
        sent = Sent(f"{host}:{port}", method, target, headers, body)
        self.sent.append(sent)
        if self.gate is not None:
            await self.gate.wait()
        return self.answer(sent)

    async def stream(self, host: str, port: int, method: bytes, target: bytes,
                     headers: Headers, body: bytes, connect_timeout: float,
                     read_timeout: float) -> _Stream:
        self.sent.append(Sent(f"{host}:{port}", method, target, headers, body))
        return _Stream(self.chunks)

    async def aclose(self) -> None:
        return None


class _Stream:
    status = 200
    headers: Headers = [(b"content-type", b"text/event-stream")]

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    def close(self) -> None:
        return None


def make(config: dict[str, Any], upstream: Scripted, tmp_path: Path,
         keys: dict[str, list[str]] | None = None) -> tuple[Gateway, httpx.AsyncClient]:
    keys_file = None
    if keys is not None:
        keys_file = tmp_path / "keys.json"
        keys_file.write_text(json.dumps({t: [hash_key(k) for k in ks] for t, ks in keys.items()}))
    settings = GatewaySettings(tmp_path / "servegate.yaml", ServerSettings(grpc_port=0),
                               api_keys_file=keys_file)
    cfg = parse_config(config)
    gw = Gateway(cfg, settings, upstream=upstream)
    gw.admission.keys = gw.load_keys(cfg)
    gw.ready = True
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app),
                               base_url="http://gateway")
    return gw, client


def pool(*addresses: str, **extra: Any) -> dict[str, Any]:
    return {"endpoints": list(addresses), **extra}


BASIC = {"pools": {"cpu": pool("10.0.0.1:8000")}, "models": {"m": {"pool": "cpu"}}}


async def test_infer_is_forwarded_byte_for_byte_with_end_to_end_headers(tmp_path: Path) -> None:
    up = Scripted()
    _, client = make(BASIC, up, tmp_path)
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = await client.post("/v2/models/m/infer", content=BODY,
                          headers={"traceparent": tp, "connection": "keep-alive"})
    assert r.status_code == 200 and r.json() == {"outputs": []}
    (sent,) = up.sent
    assert (sent.endpoint, sent.method, sent.target, sent.body) == (
        "10.0.0.1:8000", b"POST", b"/v2/models/m/infer", BODY)
    headers = dict(sent.headers)
    assert headers[b"traceparent"] == tp.encode()  # W3C trace context passes untouched
    assert b"connection" not in headers and b"host" not in headers


async def test_api_keys_401_403_and_the_key_is_never_forwarded(tmp_path: Path) -> None:
    config = {**BASIC, "auth": {}, "tenants": {"acme": {"models": ["m"]},
                                               "other": {"models": ["x*"]}},
              "models": {"m": {"pool": "cpu"}, "x1": {"pool": "cpu"}}}
    up = Scripted()
    _, client = make(config, up, tmp_path, keys={"acme": ["k-acme"], "other": ["k-other"]})
    assert (await client.post("/v2/models/m/infer", content=BODY)).status_code == 401
    wrong = await client.post("/v2/models/m/infer", content=BODY,
                              headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "error" in wrong.json()
    forbidden = await client.post("/v2/models/m/infer", content=BODY,
                                  headers={"authorization": "Bearer k-other"})
    assert forbidden.status_code == 403
    ok = await client.post("/v2/models/m/infer", content=BODY,
                           headers={"authorization": "Bearer k-acme"})
    assert ok.status_code == 200
    assert len(up.sent) == 1 and b"authorization" not in dict(up.sent[0].headers)


SPLIT = {
    "pools": {"cpu": pool("10.0.0.1:8000"), "canary": pool("10.0.0.2:8000")},
    "models": {"m": {"pool": "cpu", "split": {
        "variants": {"stable": {"weight": 100}, "canary": {"weight": 0, "pool": "canary"}},
        "pin_header": "x-servegate-variant"}}},
}


async def test_split_weights_pins_and_an_unknown_pin(tmp_path: Path) -> None:
    up = Scripted()
    _, client = make(SPLIT, up, tmp_path)
    r = await client.post("/v2/models/m/infer", content=BODY)
    assert r.headers["x-servegate-variant"] == "stable" and up.sent[-1].endpoint.startswith(
        "10.0.0.1")
    pinned = await client.post("/v2/models/m/infer", content=BODY,
                               headers={"x-servegate-variant": "canary"})
    assert pinned.headers["x-servegate-variant"] == "canary"
    assert up.sent[-1].endpoint == "10.0.0.2:8000"
    bad = await client.post("/v2/models/m/infer", content=BODY,
                            headers={"x-servegate-variant": "nope"})
    assert bad.status_code == 400 and "nope" in bad.json()["error"]


async def test_max_in_flight_refuses_with_429_and_retry_after(tmp_path: Path) -> None:
    config = {"pools": {"cpu": pool("10.0.0.1:8000")},
              "models": {"m": {"pool": "cpu", "max_in_flight": 1}}}
    up = Scripted(gate=asyncio.Event())
    _, client = make(config, up, tmp_path)
    first = asyncio.create_task(client.post("/v2/models/m/infer", content=BODY))
    async with asyncio.timeout(2):
        while not up.sent:
            await asyncio.sleep(0.005)
    second = await client.post("/v2/models/m/infer", content=BODY)
    assert second.status_code == 429 and "retry-after" in second.headers
    assert up.gate is not None
    up.gate.set()
    assert (await first).status_code == 200
    assert len(up.sent) == 1  # the refused one never left


async def test_a_pool_at_zero_holds_the_call_until_an_endpoint_comes(tmp_path: Path) -> None:
    config = {"pools": {"cold": {"discovery": {"type": "local", "url": "http://127.0.0.1:1"},
                                 "cold_start": {"enabled": True, "max_wait_s": 5}}},
              "models": {"m": {"pool": "cold"}}}
    up = Scripted()
    gw, client = make(config, up, tmp_path)
    call = asyncio.create_task(client.post("/v2/models/m/infer", content=BODY))
    async with asyncio.timeout(2):
        while not gw.coldstart.queued().get("cold"):
            await asyncio.sleep(0.005)
    assert not up.sent
    gw.runtime.set_endpoints("cold", [EndpointConfig(http="10.0.0.9:8000")])
    gw.coldstart.notify("cold")
    r = await call
    assert r.status_code == 200 and int(r.headers["x-servegate-cold-start-ms"]) >= 0
    assert up.sent[0].endpoint == "10.0.0.9:8000"


async def test_a_refused_connect_is_retried_on_another_endpoint(tmp_path: Path) -> None:
    def answer(sent: Sent) -> UpstreamResponse:
        if sent.endpoint == "10.0.0.1:8000":
            raise UpstreamConnectError(sent.endpoint, "connect failed: refused")
        return UpstreamResponse(200, [], b"{}")

    config = {"pools": {"cpu": pool("10.0.0.1:8000", "10.0.0.2:8000")},
              "models": {"m": {"pool": "cpu"}}}
    up = Scripted(answer)
    _, client = make(config, up, tmp_path)
    for _ in range(6):
        assert (await client.post("/v2/models/m/infer", content=BODY)).status_code == 200
    assert up.sent[-1].endpoint == "10.0.0.2:8000"


@pytest.mark.parametrize(("error", "status"), [
    (UpstreamBroken("ep", "reset mid-response"), 502),
    (UpstreamTimeout("ep", "no response within 1s"), 504),
    (UpstreamConnectError("ep", "refused"), 503),
])
async def test_transport_failures_map_to_v2_errors(tmp_path: Path, error: UpstreamError,
                                                   status: int) -> None:
    def answer(sent: Sent) -> UpstreamResponse:
        raise error

    _, client = make(BASIC, Scripted(answer), tmp_path)
    r = await client.post("/v2/models/m/infer", content=BODY)
    assert r.status_code == status and r.json()["error"]


async def test_routing_errors_are_v2_errors(tmp_path: Path) -> None:
    _, client = make(BASIC, Scripted(), tmp_path)
    unknown = await client.post("/v2/models/nope/infer", content=BODY)
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    wrong = await client.get("/v2/models/m/infer")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    version = await client.post("/v2/models/m/versions/x/infer", content=BODY)
    assert version.status_code == 400


async def test_backend_answers_pass_through_unchanged(tmp_path: Path) -> None:
    def answer(sent: Sent) -> UpstreamResponse:
        return UpstreamResponse(400, [(b"content-type", b"application/json")],
                                b'{"error":"unexpected shape"}')

    _, client = make(BASIC, Scripted(answer), tmp_path)
    r = await client.post("/v2/models/m/infer", content=BODY)
    assert r.status_code == 400 and r.json() == {"error": "unexpected shape"}


async def test_generate_stream_relays_every_event(tmp_path: Path) -> None:
    up = Scripted(chunks=[b"data: {\"i\":0}\n\n", b"data: {\"i\":1}\n\n"])
    gw, client = make(BASIC, up, tmp_path)
    r = await client.post("/v2/models/m/generate_stream", content=b"{}")
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    assert r.content == b"data: {\"i\":0}\n\ndata: {\"i\":1}\n\n"
    assert up.sent[0].target == b"/v2/models/m/generate_stream"
    assert gw.load.in_flight["m"] == 0


async def test_tracing_spans_the_pipeline_phases_under_the_callers_trace(
        tmp_path: Path) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from gateway.settings import TracingSettings
    from gateway.tracing import Tracing

    exporter = InMemorySpanExporter()
    up = Scripted()
    gw, client = make(BASIC, up, tmp_path)
    assert gw.pipeline.tracing is None  # off by default: the pipeline does nothing for it
    tracing = Tracing(TracingSettings(enabled=True), exporter=exporter)
    gw.pipeline.tracing = tracing
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = await client.post("/v2/models/m/infer", content=BODY, headers={"traceparent": tp})
    assert r.status_code == 200
    assert dict(up.sent[0].headers)[b"traceparent"] == tp.encode()  # untouched upstream
    missing = await client.post("/v2/models/nope/infer", content=BODY)
    assert missing.status_code == 404
    tracing.force_flush()
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name.startswith("servegate http")]
    assert len(roots) == 2
    ok = next(s for s in roots if s.context.trace_id == int("0af7651916cd43dd8448eb211c80319c",
                                                             16))
    assert ok.parent is not None and ok.parent.span_id == int("b7ad6b7169203331", 16)
    phases = sorted(s.name for s in spans if s.parent is not None
                    and s.parent.span_id == ok.context.span_id)
    assert phases == ["admit", "auth", "route", "upstream"]
    tracing.shutdown()
