"""gateway.http.protocol.V2Protocol in-process: bytes in through ``data_received``, bytes out
through a recording transport, the gateway wired as ``servegate gateway`` wires it, against a
scripted upstream. Over real sockets and real Triton, the integration tests cover the rest."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from contracts import parse_config
from gateway.adapters.upstream import Headers, UpstreamResponse
from gateway.http.protocol import Draining, V2Protocol, v2_protocol
from gateway.server import Gateway
from gateway.settings import GatewaySettings, ServerSettings

BODY = b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}'
CONFIG = {"pools": {"cpu": {"endpoints": ["10.0.0.1:8000"]}},
          "models": {"m": {"pool": "cpu", "max_body_bytes": 1024}}}


class Upstream:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.gate: asyncio.Event | None = None

    async def request(self, host: str, port: int, method: bytes, target: bytes,
                      headers: Headers, body: bytes, connect_timeout: float,
                      read_timeout: float) -> UpstreamResponse:
        self.sent.append(target)
        if self.gate is not None:
            await self.gate.wait()
        return UpstreamResponse(200, [(b"content-type", b"application/json")],
                                b'{"target":"' + target + b'"}')

    async def aclose(self) -> None:
        return None


class Transport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.data += data

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.data += part

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5000)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def connect(tmp_path: Path, draining: Draining | None = None,
            ) -> tuple[V2Protocol, Transport, Upstream, Gateway]:
    up = Upstream()
    gw = Gateway(parse_config(CONFIG), GatewaySettings(tmp_path / "x.yaml",
                                                      ServerSettings(grpc_port=0)), upstream=up)
    gw.ready = True
    config = uvicorn.Config(gw.app, lifespan="off",
                            http=v2_protocol(gw.app, draining or Draining()))
    config.load()
    proto = config.http_protocol_class(config=config, server_state=ServerState())
    transport = Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport, up, gw


def post(path: str = "/v2/models/m/infer", body: bytes = BODY, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: gw\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
            ).encode() + body


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0)


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split ``data`` into (status, headers, body) by Content-Length."""
    out = []
    rest = bytes(data)
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:])
        size = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:size]))
        rest = rest[size:]
    return out


async def test_one_write_per_response_and_keep_alive(tmp_path: Path) -> None:
    proto, transport, _, _ = connect(tmp_path)
    writes: list[bytes] = []
    transport.write = writes.append  # type: ignore[method-assign]
    proto.data_received(post())
    await until(lambda: bool(writes))
    await until(lambda: not proto._busy)
    assert len(writes) == 1  # status line, headers and body together
    ((status, headers, body),) = responses(writes[0])
    assert status == 200 and body == b'{"target":"/v2/models/m/infer"}'
    assert "connection" not in headers and not transport.closed


async def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    proto, transport, up, _ = connect(tmp_path)
    up.gate = asyncio.Event()
    proto.data_received(post("/v2/models/m/infer?a=1") + post("/v2/models/m/versions/1/infer")
                        + b"GET /v2/health/live HTTP/1.1\r\nhost: gw\r\n\r\n")
    await until(lambda: len(up.sent) == 1)
    assert transport.data == b""  # the first is still upstream: nothing else answered yet
    up.gate.set()
    await until(lambda: len(responses(transport.data)) == 3)
    (s1, _, b1), (s2, _, b2), (s3, _, _) = responses(transport.data)
    assert (s1, s2, s3) == (200, 200, 200)
    assert b"a=1" in b1 and b"versions/1" in b2


async def test_body_over_the_routes_limit_is_413_before_it_is_read(tmp_path: Path) -> None:
    proto, transport, up, _ = connect(tmp_path)
    proto.data_received(b"POST /v2/models/m/infer HTTP/1.1\r\nhost: gw\r\n"
                        b"content-length: 5000\r\n\r\n")
    ((status, headers, body),) = responses(transport.data)
    assert status == 413 and "1024" in json.loads(body)["error"]
    assert headers["connection"] == "close" and transport.closed and not up.sent


async def test_chunked_body_is_cut_off_at_the_limit(tmp_path: Path) -> None:
    proto, transport, up, _ = connect(tmp_path)
    proto.data_received(b"POST /v2/models/m/infer HTTP/1.1\r\nhost: gw\r\n"
                        b"transfer-encoding: chunked\r\n\r\n")
    for _ in range(3):
        proto.data_received(b"200\r\n" + b"x" * 512 + b"\r\n")
    ((status, _, _),) = responses(transport.data)
    assert status == 413 and transport.closed and not up.sent


async def test_expect_continue_head_and_http10(tmp_path: Path) -> None:
    proto, transport, _, _ = connect(tmp_path)
    proto.data_received(post(extra="expect: 100-continue\r\n")[:-len(BODY)])
    assert transport.data == b"HTTP/1.1 100 Continue\r\n\r\n"
    proto.data_received(BODY)
    await until(lambda: b"200 OK" in transport.data)
    await until(lambda: not proto._busy)
    transport.data.clear()
    proto.data_received(b"HEAD /v2/health/ready HTTP/1.1\r\nhost: gw\r\n\r\n")
    await until(lambda: b"\r\n\r\n" in transport.data)
    assert transport.data.endswith(b"\r\n\r\n")  # a HEAD answer has no body
    await until(lambda: not proto._busy)
    transport.data.clear()
    proto.data_received(b"GET /v2/models/m/ready HTTP/1.0\r\n\r\n")
    await until(lambda: transport.closed)
    ((status, headers, _),) = responses(transport.data)
    assert status == 200 and headers["connection"] == "close"


async def test_draining_closes_after_the_response(tmp_path: Path) -> None:
    draining = Draining()
    proto, transport, _, _ = connect(tmp_path, draining)
    draining.on = True
    proto.data_received(post())
    await until(lambda: transport.closed)
    ((status, headers, _),) = responses(transport.data)
    assert status == 200 and headers["connection"] == "close"


@pytest.mark.parametrize(("raw", "status"), [
    (b"BREW /v2 HTTP/1.1\r\nhost: gw\r\n\r\n", 400),
    (b"GET /v2/models/" + b"a" * 70_000 + b"/ready HTTP/1.1\r\nhost: gw\r\n\r\n", 400),
    (b"GET /v2/models/nope/ready HTTP/1.1\r\nhost: gw\r\n\r\n", 404),
    (b"PUT /v2/models/m/infer HTTP/1.1\r\nhost: gw\r\ncontent-length: 0\r\n\r\n", 405),
])
async def test_bad_requests_get_v2_errors(tmp_path: Path, raw: bytes, status: int) -> None:
    proto, transport, up, _ = connect(tmp_path)
    proto.data_received(raw)
    await until(lambda: b"\r\n\r\n" in transport.data)
    await until(lambda: not proto._busy)
    ((got, headers, body),) = responses(transport.data)
    assert got == status and headers["content-type"] == "application/json"
    assert "error" in json.loads(body) and not up.sent


async def test_client_gone_mid_call_drops_the_answer(tmp_path: Path) -> None:
    proto, transport, up, _ = connect(tmp_path)
    up.gate = asyncio.Event()
    proto.data_received(post())
    await until(lambda: bool(up.sent))
    proto.connection_lost(None)
    up.gate.set()
    await until(lambda: not proto._busy)
    assert transport.data == b""
