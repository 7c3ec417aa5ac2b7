"""The gRPC front in-process: the gateway as ``servegate gateway`` wires it (``Gateway``), its
servicer on an in-process ``grpc.aio`` server, in front of a scripted "Triton" (a ``grpc.aio``
server whose generic handler answers ModelInfer with canned bytes and records what it got),
called with the real ``tritonclient.grpc.aio``. Branches: forward, split and pin, auth,
admission, errors, a pool without gRPC addresses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from contracts import parse_config
from gateway.grpc import build_server
from gateway.pipeline.auth import hash_key
from gateway.server import Gateway
from gateway.settings import GatewaySettings, ServerSettings

Recorder = list[tuple[str, pb.ModelInferRequest, dict[str, str]]]


class FakeTriton:
    """ModelInfer answers OUTPUT = the first input's name; an ``error`` status per call when
    ``fail`` says so. ``seen`` records (server name, request, metadata)."""

    def __init__(self, name: str, seen: Recorder,
                 fail: Callable[[pb.ModelInferRequest], grpc.StatusCode | None] = lambda r: None
                 ) -> None:
        self.name = name
        self.seen = seen
        self.fail = fail
        self.server = grpc.aio.server()
        self.port = 0

    async def start(self) -> FakeTriton:
        async def infer(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            request = pb.ModelInferRequest.FromString(raw)
            self.seen.append((self.name, request, dict(context.invocation_metadata() or ())))
            code = self.fail(request)
            if code is not None:
                await context.abort(code, f"{self.name} says no")
            response = pb.ModelInferResponse(model_name=request.model_name,
                                             model_version=request.model_version or "1",
                                             id=self.name)
            return bytes(response.SerializeToString())

        handler = grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(infer)})
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


Make = Callable[..., Awaitable[tuple[Gateway, grpcaio.InferenceServerClient]]]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    cleanup: list[Callable[[], Awaitable[Any]]] = []

    async def _make(config: dict[str, Any], keys: dict[str, list[str]] | None = None
                    ) -> tuple[Gateway, grpcaio.InferenceServerClient]:
        keys_file = None
        if keys is not None:
            keys_file = tmp_path / "keys.json"
            keys_file.write_text(json.dumps({t: [hash_key(k) for k in ks]
                                             for t, ks in keys.items()}))
        cfg = parse_config(config)
        gw = Gateway(cfg, GatewaySettings(tmp_path / "c.yaml", ServerSettings(grpc_port=1),
                                          api_keys_file=keys_file))
        gw.admission.keys = gw.load_keys(cfg)
        gw.ready = True
        server = build_server(gw.grpc, 64 * 1024 * 1024)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        client = grpcaio.InferenceServerClient(f"127.0.0.1:{port}")
        cleanup.extend([client.close, lambda: server.stop(0), gw.grpc_channels.aclose])
        return gw, client

    yield _make
    for step in reversed(cleanup):
        await step()


@pytest.fixture
async def tritons() -> AsyncIterator[tuple[Recorder, list[FakeTriton]]]:
    seen: Recorder = []

    def fail(request: pb.ModelInferRequest) -> grpc.StatusCode | None:
        return grpc.StatusCode.INVALID_ARGUMENT if request.model_name == "bad" else None

    servers = [await FakeTriton(n, seen, fail).start() for n in ("a", "b")]
    yield seen, servers
    for s in servers:
        await s.server.stop(0)


def inputs() -> list[grpcclient.InferInput]:
    x = grpcclient.InferInput("INPUT", [1, 2], "FP32")
    x.set_data_from_numpy(np.array([[1.0, 2.0]], dtype=np.float32))
    return [x]


def config(servers: list[FakeTriton], **extra: Any) -> dict[str, Any]:
    ep = [{"http": s.address, "grpc": s.address} for s in servers]
    return {"pools": {"cpu": {"endpoints": ep[:1]}, "canary": {"endpoints": ep[1:]}},
            "models": {"m": {"pool": "cpu"}, "bad": {"pool": "cpu"}}, **extra}


async def test_model_infer_is_forwarded_as_sent(
        make: Make, tritons: tuple[Recorder, list[FakeTriton]]) -> None:
    seen, servers = tritons
    _, client = await make(config(servers))
    result = await client.infer("m", inputs(), headers={"traceparent": "00-abc-def-01"})
    assert result.get_response().id == "a"
    (server, request, metadata) = seen[-1]
    assert server == "a"
    assert request.model_name == "m" and request.inputs[0].name == "INPUT"
    assert np.frombuffer(request.raw_input_contents[0], np.float32).tolist() == [1.0, 2.0]
    assert metadata["traceparent"] == "00-abc-def-01"


async def test_a_split_routes_by_weight_and_pin_and_names_the_variant(
        make: Make, tritons: tuple[Recorder, list[FakeTriton]]) -> None:
    seen, servers = tritons
    cfg = config(servers)
    cfg["models"]["m"]["split"] = {
        "variants": {"stable": {"weight": 100}, "canary": {"weight": 0, "pool": "canary"}},
        "pin_header": "x-servegate-variant"}
    _, client = await make(cfg)
    await client.infer("m", inputs())
    assert seen[-1][0] == "a"
    await client.infer("m", inputs(), headers={"x-servegate-variant": "canary"})
    assert seen[-1][0] == "b"
    with pytest.raises(InferenceServerException) as err:
        await client.infer("m", inputs(), headers={"x-servegate-variant": "nope"})
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"


async def test_api_keys_over_metadata(make: Make,
                                      tritons: tuple[Recorder, list[FakeTriton]]) -> None:
    seen, servers = tritons
    cfg = {**config(servers), "auth": {}, "tenants": {"acme": {"models": ["m"]}}}
    _, client = await make(cfg, keys={"acme": ["k"]})
    with pytest.raises(InferenceServerException) as err:
        await client.infer("m", inputs())
    assert err.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as err:
        await client.infer("bad", inputs(), headers={"authorization": "Bearer k"})
    assert err.value.status() == "StatusCode.PERMISSION_DENIED"
    await client.infer("m", inputs(), headers={"authorization": "Bearer k"})
    assert "authorization" not in seen[-1][2]  # the key is never forwarded


async def test_errors_unknown_model_backend_status_and_no_grpc_address(
        make: Make, tritons: tuple[Recorder, list[FakeTriton]]) -> None:
    _, servers = tritons
    cfg = config(servers)
    cfg["pools"]["rest"] = {"endpoints": ["127.0.0.1:9"]}
    cfg["models"]["r"] = {"pool": "rest"}
    _, client = await make(cfg)
    for model, code, words in (("nope", "NOT_FOUND", "unknown model"),
                               ("bad", "INVALID_ARGUMENT", "a says no"),
                               ("r", "UNAVAILABLE", "gRPC address")):
        with pytest.raises(InferenceServerException) as err:
            await client.infer(model, inputs())
        assert err.value.status() == f"StatusCode.{code}" and words in err.value.message()


async def test_max_in_flight_is_resource_exhausted(
        make: Make, tritons: tuple[Recorder, list[FakeTriton]]) -> None:
    _, servers = tritons
    cfg = config(servers)
    cfg["models"]["m"]["max_in_flight"] = 1
    gw, client = await make(cfg)
    gw.admission.model_in_flight["m"] = 1  # one call already in flight on this replica
    with pytest.raises(InferenceServerException) as err:
        await client.infer("m", inputs())
    assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    gw.admission.model_in_flight["m"] = 0
    await asyncio.wait_for(client.infer("m", inputs()), 5)


async def test_eject_on_5xx_pool_serves_grpc(
        make: Make, tritons: tuple[Recorder, list[FakeTriton]]) -> None:
    """``health.eject_on_5xx`` judges REST answers by their status; a gRPC answer is served,
    and an error status the endpoint sends is passed on, not counted as a 5xx answer."""
    _, servers = tritons
    cfg = config(servers)
    cfg["pools"]["cpu"]["health"] = {"eject_on_5xx": True}
    gw, client = await make(cfg)
    for _ in range(3):
        assert (await client.infer("m", inputs())).get_response().id == "a"
    assert all(ep.admitted for ep in gw.runtime.state.pools["cpu"].endpoints)
