"""gateway.adapters.upstream.native.NativeUpstream against small scripted HTTP/1.1 servers.

Each test runs its own ``asyncio.start_server`` on 127.0.0.1, port 0, with a handler that
scripts what the "Triton" side does on each accepted connection. Nothing sleeps hoping for an
event: tests wait on events or conditions, each with a deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from gateway.adapters.upstream import HOP_BY_HOP, NativeUpstream, UpstreamResponse
from gateway.errors import UpstreamBroken, UpstreamConnectError, UpstreamTimeout

HOST = "127.0.0.1"
DEADLINE = 2.0  # generous upper bound for any single wait; tests finish far sooner
MiB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# the scripted server
# --------------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    raw_header_names: list[str]
    body: bytes


@dataclass
class Conn:
    index: int  # 1-based, in accept order
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: list[Request] = field(default_factory=list)
    got_request: asyncio.Event = field(default_factory=asyncio.Event)
    peer_closed: asyncio.Event = field(default_factory=asyncio.Event)


Handler = Callable[["Server", Conn], Awaitable[None]]
Start = Callable[[Handler], Awaitable["Server"]]


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request (Content-Length framing), or ``None`` at a clean EOF between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    assert version == "HTTP/1.1"
    headers: dict[str, str] = {}
    names: list[str] = []
    for line in lines[1:]:
        if line:
            name, value = line.split(":", 1)
            names.append(name)
            assert name.lower() not in headers, f"duplicate header {name}"
            headers[name.lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, target, headers, names, body)


async def wait_eof(conn: Conn) -> None:
    """Block until the client closes or resets the connection, then flag it."""
    try:
        while await conn.reader.read(65536):
            pass
    except ConnectionError:
        pass
    conn.peer_closed.set()


def response(
    body: bytes = b"", status: str = "200 OK", headers: list[tuple[str, str]] | None = None,
    content_length: bool = True,
) -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def echo_body(req: Request) -> bytes:
    return f"{req.method} {req.target} ".encode() + req.body


async def serve_echo(server: Server, conn: Conn, extra: list[tuple[str, str]] | None = None
                     ) -> None:
    """Keep-alive echo: answer every request with ``METHOD TARGET <body>``."""
    while True:
        req = await read_request(conn.reader)
        if req is None:
            conn.peer_closed.set()
            return
        conn.requests.append(req)
        conn.got_request.set()
        conn.writer.write(response(echo_body(req), headers=extra))
        await conn.writer.drain()


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.conns: list[Conn] = []
        self.accepted_event = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def accepted(self) -> int:
        return len(self.conns)

    @property
    def requests(self) -> list[Request]:
        return [r for c in self.conns for r in c.requests]

    async def start(self) -> Server:
        self._server = await asyncio.start_server(self._on_client, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                         ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Conn(len(self.conns) + 1, reader, writer)
        self.conns.append(conn)
        self.accepted_event.set()
        try:
            await self.handler(self, conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            conn.peer_closed.set()
        except asyncio.CancelledError:
            pass  # stop() cancelled a handler still waiting; end quietly
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for conn in self.conns:
            conn.writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=DEADLINE)
        await asyncio.wait_for(self._server.wait_closed(), DEADLINE)


@pytest.fixture
async def upstream() -> AsyncIterator[NativeUpstream]:
    up = NativeUpstream()
    yield up
    await up.aclose()


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[Server] = []

    async def _start(handler: Handler) -> Server:
        server = await Server(handler).start()
        servers.append(server)
        return server

    yield _start
    for server in servers:
        await server.stop()


async def call(
    up: NativeUpstream, server: Server, target: bytes = b"/v2/models/m/infer",
    body: bytes = b"", method: bytes = b"POST", headers: list[tuple[bytes, bytes]] | None = None,
    read_timeout: float = DEADLINE,
) -> UpstreamResponse:
    return await up.request(HOST, server.port, method, target, headers or [], body,
                            DEADLINE, read_timeout)


async def wait_until(pred: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.002)


async def wait_event(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), DEADLINE)


# --------------------------------------------------------------------------------------------
# successful exchanges
# --------------------------------------------------------------------------------------------


async def test_content_length_response(upstream: NativeUpstream, start: Start) -> None:
    server = await start(serve_echo)
    resp = await call(upstream, server, body=b'{"inputs": []}',
                      headers=[(b"content-type", b"application/json"), (b"x-req", b"1")])
    assert resp.status == 200
    assert resp.body == b'POST /v2/models/m/infer {"inputs": []}'
    assert resp.headers == []  # only Content-Length came back, and it is stripped
    (req,) = server.requests
    assert req.method == "POST" and req.target == "/v2/models/m/infer"
    assert req.headers["host"] == f"{HOST}:{server.port}"
    assert req.headers["content-length"] == "14"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["x-req"] == "1"


async def test_get_without_body_sends_content_length_zero(
    upstream: NativeUpstream, start: Start
) -> None:
    server = await start(serve_echo)
    resp = await call(upstream, server, method=b"GET", target=b"/v2/models/m/ready")
    assert resp.body == b"GET /v2/models/m/ready "
    (req,) = server.requests
    assert req.headers["content-length"] == "0"
    assert req.body == b""


@pytest.mark.parametrize(
    ("status_line", "status"),
    [("400 Bad Request", 400), ("404 Not Found", 404), ("500 Internal Server Error", 500),
     ("503 Service Unavailable", 503)],
)
async def test_error_statuses_are_responses_not_exceptions(
    upstream: NativeUpstream, start: Start, status_line: str, status: int
) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        while (req := await read_request(conn.reader)) is not None:
            conn.requests.append(req)
            conn.writer.write(response(b'{"error":"x"}', status=status_line))

    server = await start(handler)
    for _ in range(2):
        resp = await call(upstream, server)
        assert (resp.status, resp.body) == (status, b'{"error":"x"}')
    assert server.accepted == 1  # an error status does not spoil the connection


async def test_chunked_response(upstream: NativeUpstream, start: Start) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        while (req := await read_request(conn.reader)) is not None:
            conn.requests.append(req)
            conn.writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n"
                b"5\r\nhello\r\n"
            )
            await conn.writer.drain()
            conn.writer.write(b"1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n")
            await conn.writer.drain()

    server = await start(handler)
    for _ in range(2):
        resp = await call(upstream, server)
        assert resp.status == 200
        assert resp.body == b"hello world"
        assert resp.headers == [(b"x-kind", b"chunked")]
        assert all(k != b"transfer-encoding" for k, _ in resp.headers)
    assert server.accepted == 1  # a complete chunked response keeps the connection


async def test_empty_body_responses(upstream: NativeUpstream, start: Start) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        while (req := await read_request(conn.reader)) is not None:
            conn.requests.append(req)
            if req.target == "/204":
                conn.writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            else:
                conn.writer.write(response(b""))

    server = await start(handler)
    assert (await call(upstream, server, target=b"/204")).status == 204
    resp = await call(upstream, server, target=b"/200")
    assert (resp.status, resp.body) == (200, b"")
    assert server.accepted == 1


async def test_hop_by_hop_headers_stripped(upstream: NativeUpstream, start: Start) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        while (req := await read_request(conn.reader)) is not None:
            conn.requests.append(req)
            conn.writer.write(response(b"{}", headers=[
                ("Connection", "keep-alive"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("Trailer", "X-Checksum"),
                ("Proxy-Authenticate", "Basic"),
                ("TE", "trailers"),
                ("Content-Type", "application/json"),
                ("X-Custom-Header", "Mixed-Case Value"),
                ("Inference-Header-Content-Length", "2"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
            ]))

    server = await start(handler)
    resp = await call(upstream, server)
    assert resp.headers == [
        (b"content-type", b"application/json"),
        (b"x-custom-header", b"Mixed-Case Value"),
        (b"inference-header-content-length", b"2"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    assert not {k for k, _ in resp.headers} & HOP_BY_HOP
    assert resp.body == b"{}"
    assert upstream.idle_connections(HOST, server.port) == 1


# --------------------------------------------------------------------------------------------
# connection reuse
# --------------------------------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(upstream: NativeUpstream, start: Start) -> None:
    server = await start(serve_echo)
    for i in range(5):
        resp = await call(upstream, server, target=f"/r{i}".encode(), body=b"x" * i)
        assert resp.body == f"POST /r{i} ".encode() + b"x" * i
        assert upstream.idle_connections(HOST, server.port) == 1
    assert server.accepted == 1
    assert len(server.conns[0].requests) == 5


async def test_connection_close_response_is_not_reused(
    upstream: NativeUpstream, start: Start
) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        req = await read_request(conn.reader)
        assert req is not None
        conn.requests.append(req)
        conn.writer.write(response(echo_body(req), headers=[("Connection", "close")]))
        await conn.writer.drain()
        await wait_eof(conn)  # leave the closing to the client

    server = await start(handler)
    resp = await call(upstream, server, target=b"/a")
    assert resp.body == b"POST /a "
    assert resp.headers == []
    assert upstream.idle_connections(HOST, server.port) == 0
    await wait_event(server.conns[0].peer_closed)  # the client closed it
    resp = await call(upstream, server, target=b"/b")
    assert resp.body == b"POST /b "
    assert server.accepted == 2


async def test_http10_response_without_keep_alive_is_not_reused(
    upstream: NativeUpstream, start: Start
) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        req = await read_request(conn.reader)
        assert req is not None
        conn.requests.append(req)
        conn.writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await conn.writer.drain()
        await wait_eof(conn)

    server = await start(handler)
    assert (await call(upstream, server)).body == b"ok"
    assert upstream.idle_connections(HOST, server.port) == 0
    assert (await call(upstream, server)).body == b"ok"
    assert server.accepted == 2


async def test_server_closing_idle_connection_is_transparent(
    upstream: NativeUpstream, start: Start
) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        # keep-alive response, then the server's idle timeout closes the connection
        req = await read_request(conn.reader)
        assert req is not None
        conn.requests.append(req)
        conn.writer.write(response(echo_body(req)))
        await conn.writer.drain()
        conn.writer.close()

    server = await start(handler)
    assert (await call(upstream, server, target=b"/1")).body == b"POST /1 "
    # the client notices the close while the connection sits idle ...
    await wait_until(lambda: upstream.idle_connections(HOST, server.port) == 0)
    # ... and the next request opens a fresh connection
    assert (await call(upstream, server, target=b"/2")).body == b"POST /2 "
    assert server.accepted == 2


async def test_server_reset_of_idle_connection_is_transparent(
    upstream: NativeUpstream, start: Start
) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        req = await read_request(conn.reader)
        assert req is not None
        conn.requests.append(req)
        conn.writer.write(response(echo_body(req)))
        await conn.writer.drain()
        rst(conn.writer)

    server = await start(handler)
    await call(upstream, server)
    await wait_until(lambda: upstream.idle_connections(HOST, server.port) == 0)
    assert (await call(upstream, server, target=b"/2")).body == b"POST /2 "
    assert server.accepted == 2


async def test_idle_connections_are_per_endpoint(upstream: NativeUpstream, start: Start) -> None:
    a = await start(serve_echo)
    b = await start(serve_echo)
    for _ in range(3):
        assert (await call(upstream, a, target=b"/a")).body == b"POST /a "
        assert (await call(upstream, b, target=b"/b")).body == b"POST /b "
    assert (a.accepted, b.accepted) == (1, 1)
    assert upstream.idle_connections(HOST, a.port) == 1
    assert upstream.idle_connections(HOST, b.port) == 1


async def test_max_idle_per_endpoint(start: Start) -> None:
    server = await start(serve_echo)
    up = NativeUpstream(max_idle_per_endpoint=2)
    try:
        await asyncio.gather(*(call(up, server, target=f"/{i}".encode()) for i in range(5)))
        assert server.accepted == 5
        assert up.idle_connections(HOST, server.port) == 2
        # the three surplus connections were closed by the client
        await wait_until(lambda: sum(c.peer_closed.is_set() for c in server.conns) == 3)
    finally:
        await up.aclose()


# --------------------------------------------------------------------------------------------
# large bodies
# --------------------------------------------------------------------------------------------


async def test_large_request_body(upstream: NativeUpstream, start: Start) -> None:
    body = bytes(range(256)) * (8 * MiB // 256)
    digest = hashlib.sha256(body).hexdigest()

    async def handler(server: Server, conn: Conn) -> None:
        while (req := await read_request(conn.reader)) is not None:
            conn.requests.append(req)
            conn.writer.write(response(hashlib.sha256(req.body).hexdigest().encode()))

    server = await start(handler)
    resp = await call(upstream, server, body=body)
    assert resp.body.decode() == digest
    (req,) = server.requests
    assert req.headers["content-length"] == str(8 * MiB)
    assert len(req.body) == 8 * MiB
    # the connection stays usable afterwards
    assert (await call(upstream, server, body=b"abc")).body.decode() == (
        hashlib.sha256(b"abc").hexdigest())
    assert server.accepted == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_large_response_body(upstream: NativeUpstream, start: Start, chunked: bool) -> None:
    payload = hashlib.sha256(b"seed").digest() * (8 * MiB // 32)

    async def handler(server: Server, conn: Conn) -> None:
        while (req := await read_request(conn.reader)) is not None:
            conn.requests.append(req)
            if not chunked:
                conn.writer.write(response(payload))
            else:
                conn.writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                step = 1 * MiB + 7
                for i in range(0, len(payload), step):
                    part = payload[i:i + step]
                    conn.writer.write(b"%x\r\n" % len(part) + part + b"\r\n")
                    await conn.writer.drain()
                conn.writer.write(b"0\r\n\r\n")
            await conn.writer.drain()

    server = await start(handler)
    resp = await call(upstream, server)
    assert len(resp.body) == 8 * MiB
    assert resp.body == payload
    assert upstream.idle_connections(HOST, server.port) == 1


# --------------------------------------------------------------------------------------------
# failures
# --------------------------------------------------------------------------------------------


def rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_connect_refused(upstream: NativeUpstream) -> None:
    # A bound socket that never listens: connecting to it is refused, and nobody else can
    # take the port while the test holds it.
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        with pytest.raises(UpstreamConnectError) as info:
            await upstream.request(HOST, port, b"POST", b"/", [], b"x", 1.0, 1.0)
    assert info.value.endpoint == f"{HOST}:{port}"
    assert "connect failed" in str(info.value)
    assert upstream.idle_connections(HOST, port) == 0


async def test_no_response_times_out_and_connection_is_dropped(
    upstream: NativeUpstream, start: Start
) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        if conn.index == 1:  # the first connection swallows the request and never answers
            req = await read_request(conn.reader)
            assert req is not None
            conn.requests.append(req)
            conn.got_request.set()
            await wait_eof(conn)
        else:
            await serve_echo(server, conn)

    server = await start(handler)
    with pytest.raises(UpstreamTimeout) as info:
        await call(upstream, server, read_timeout=0.2)
    assert info.value.endpoint == f"{HOST}:{server.port}"
    assert "0.2s" in str(info.value)
    # the timed-out connection was closed, not pooled
    assert upstream.idle_connections(HOST, server.port) == 0
    await wait_event(server.conns[0].peer_closed)
    # the next request gets a fresh connection and succeeds
    assert (await call(upstream, server, target=b"/next")).body == b"POST /next "
    assert server.accepted == 2


async def test_partial_headers_then_silence_times_out(
    upstream: NativeUpstream, start: Start
) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        req = await read_request(conn.reader)
        assert req is not None
        conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part")
        await conn.writer.drain()
        await wait_eof(conn)

    server = await start(handler)
    with pytest.raises(UpstreamTimeout):
        await call(upstream, server, read_timeout=0.2)
    await wait_event(server.conns[0].peer_closed)
    assert upstream.idle_connections(HOST, server.port) == 0


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("when", ["before-response", "mid-headers", "mid-body", "mid-chunks"])
async def test_connection_lost_mid_response(
    upstream: NativeUpstream, start: Start, how: str, when: str
) -> None:
    partial = {
        "before-response": b"",
        "mid-headers": b"HTTP/1.1 200 OK\r\nContent-Le",
        "mid-body": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10,
        "mid-chunks": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    }[when]

    async def handler(server: Server, conn: Conn) -> None:
        req = await read_request(conn.reader)
        assert req is not None
        conn.writer.write(partial)
        await conn.writer.drain()
        if how == "rst":
            rst(conn.writer)
        else:
            conn.writer.close()

    server = await start(handler)
    with pytest.raises(UpstreamBroken) as info:
        await call(upstream, server)
    assert "connection closed before a complete response" in str(info.value)
    assert upstream.idle_connections(HOST, server.port) == 0


@pytest.mark.parametrize(
    "garbage",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header Without Colon\r\n\r\n",
        b"\x00\x01\x02\x03" * 64,
    ],
    ids=["not-http", "bad-status", "bad-content-length", "bad-chunk-size", "bad-header",
         "binary"],
)
async def test_garbage_response(upstream: NativeUpstream, start: Start, garbage: bytes) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        if conn.index == 1:
            req = await read_request(conn.reader)
            assert req is not None
            conn.writer.write(garbage)
            await conn.writer.drain()
            await wait_eof(conn)
        else:
            await serve_echo(server, conn)

    server = await start(handler)
    with pytest.raises(UpstreamBroken) as info:
        await call(upstream, server)
    assert info.value.endpoint == f"{HOST}:{server.port}"
    # the broken connection is closed by the client and never reused
    await wait_event(server.conns[0].peer_closed)
    assert upstream.idle_connections(HOST, server.port) == 0
    assert (await call(upstream, server, target=b"/ok")).body == b"POST /ok "
    assert server.accepted == 2


async def test_unsolicited_bytes_after_response_drop_the_connection(
    upstream: NativeUpstream, start: Start
) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        req = await read_request(conn.reader)
        assert req is not None
        # one response for one request, then a second response nobody asked for
        conn.writer.write(response(b"first") + response(b"second"))
        await conn.writer.drain()
        await wait_eof(conn)

    server = await start(handler)
    resp = await call(upstream, server)
    assert resp.body == b"first"
    await wait_event(server.conns[0].peer_closed)
    assert upstream.idle_connections(HOST, server.port) == 0


# --------------------------------------------------------------------------------------------
# concurrency, cancellation, close
# --------------------------------------------------------------------------------------------


async def test_concurrent_requests_get_their_own_responses(
    upstream: NativeUpstream, start: Start
) -> None:
    release = asyncio.Event()
    n = 50

    async def handler(server: Server, conn: Conn) -> None:
        while (req := await read_request(conn.reader)) is not None:
            conn.requests.append(req)
            if len(server.requests) >= n:
                release.set()
            await wait_event(release)  # hold every response until all requests are in flight
            conn.writer.write(response(echo_body(req)))
            await conn.writer.drain()

    server = await start(handler)

    async def one(i: int) -> tuple[int, UpstreamResponse]:
        body = f"payload-{i}-".encode() * (i + 1)
        return i, await call(upstream, server, target=f"/req/{i}".encode(), body=body)

    results = await asyncio.gather(*(one(i) for i in range(n)))
    for i, resp in results:
        assert resp.status == 200
        assert resp.body == f"POST /req/{i} ".encode() + f"payload-{i}-".encode() * (i + 1)
    assert server.accepted == n  # all in flight at once: one connection each
    assert upstream.idle_connections(HOST, server.port) == n

    # a second wave reuses the pooled connections
    release.set()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    assert [r.body for _, r in results] == [
        f"POST /req/{i} ".encode() + f"payload-{i}-".encode() * (i + 1) for i in range(n)]
    assert server.accepted == n


async def test_cancellation_aborts_the_connection(upstream: NativeUpstream, start: Start) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        if conn.index == 1:
            req = await read_request(conn.reader)
            assert req is not None
            conn.requests.append(req)
            conn.got_request.set()
            await wait_eof(conn)
        else:
            await serve_echo(server, conn)

    server = await start(handler)
    task = asyncio.create_task(call(upstream, server))
    await wait_event(server.accepted_event)
    await wait_event(server.conns[0].got_request)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_event(server.conns[0].peer_closed)  # the server sees EOF (or a reset)
    assert upstream.idle_connections(HOST, server.port) == 0
    assert (await call(upstream, server, target=b"/after")).body == b"POST /after "
    assert server.accepted == 2


async def test_aclose_closes_idle_connections(start: Start) -> None:
    server = await start(serve_echo)
    up = NativeUpstream()
    await asyncio.gather(*(call(up, server, target=f"/{i}".encode()) for i in range(3)))
    # gather may or may not overlap the three; whatever it opened is now idle
    opened = server.accepted
    assert up.idle_connections(HOST, server.port) == opened
    await up.aclose()
    assert up.idle_connections(HOST, server.port) == 0
    for conn in server.conns:
        await wait_event(conn.peer_closed)


async def test_request_in_flight_during_aclose_is_not_pooled(start: Start) -> None:
    release = asyncio.Event()

    async def handler(server: Server, conn: Conn) -> None:
        while (req := await read_request(conn.reader)) is not None:
            conn.requests.append(req)
            conn.got_request.set()
            await wait_event(release)
            conn.writer.write(response(b"late"))
            await conn.writer.drain()
        conn.peer_closed.set()

    server = await start(handler)
    up = NativeUpstream()
    task = asyncio.create_task(call(up, server))
    await wait_event(server.accepted_event)
    await wait_event(server.conns[0].got_request)
    await up.aclose()
    release.set()
    assert (await task).body == b"late"  # the in-flight request still completes
    assert up.idle_connections(HOST, server.port) == 0
    await wait_event(server.conns[0].peer_closed)


# --------------------------------------------------------------------------------------------
# streamed responses (generate_stream)
# --------------------------------------------------------------------------------------------

async def test_stream_hands_on_each_chunk_as_it_arrives_then_reuses_the_connection(
        upstream: NativeUpstream, start: Start) -> None:
    go_on = asyncio.Event()

    async def handler(server: Server, conn: Conn) -> None:
        while (req := await read_request(conn.reader)) is not None:
            conn.requests.append(req)
            conn.writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                              b"Content-Type: text/event-stream\r\n\r\n"
                              b"8\r\ndata: 1\n\r\n")
            await conn.writer.drain()
            await go_on.wait()  # the second event exists only after the first was read
            conn.writer.write(b"8\r\ndata: 2\n\r\n0\r\n\r\n")
            await conn.writer.drain()

    server = await start(handler)
    stream = await upstream.stream(HOST, server.port, b"POST", b"/v2/models/m/generate_stream",
                                   [], b"{}", DEADLINE, DEADLINE)
    assert stream.status == 200
    assert stream.headers == [(b"content-type", b"text/event-stream")]
    chunks = stream.chunks()
    assert await anext(chunks) == b"data: 1\n"
    go_on.set()
    assert [c async for c in chunks] == [b"data: 2\n"]
    stream.close()
    assert upstream.idle_connections(HOST, server.port) == 1
    again = await call(upstream, server)  # the same connection serves the next request
    assert again.status == 200 and server.accepted == 1


async def test_a_stalled_stream_times_out_and_a_closed_one_is_never_reused(
        upstream: NativeUpstream, start: Start) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        req = await read_request(conn.reader)
        assert req is not None
        conn.writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwait\r\n")
        await conn.writer.drain()
        await wait_eof(conn)

    server = await start(handler)
    stream = await upstream.stream(HOST, server.port, b"POST", b"/", [], b"", DEADLINE, 0.2)
    chunks = stream.chunks()
    assert await anext(chunks) == b"wait"
    with pytest.raises(UpstreamTimeout, match="idle"):
        await anext(chunks)
    stream.close()
    assert upstream.idle_connections(HOST, server.port) == 0


async def test_a_stream_left_unread_is_aborted(upstream: NativeUpstream, start: Start) -> None:
    async def handler(server: Server, conn: Conn) -> None:
        await read_request(conn.reader)
        conn.writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
        await conn.writer.drain()
        await wait_eof(conn)

    server = await start(handler)
    stream = await upstream.stream(HOST, server.port, b"POST", b"/", [], b"", DEADLINE,
                                   DEADLINE)
    stream.close()  # the client went away before the end
    await wait_event(server.conns[0].peer_closed)
    assert upstream.idle_connections(HOST, server.port) == 0


async def test_read_deadline_follows_each_request_on_a_reused_connection(
    upstream: NativeUpstream, start: Start
) -> None:
    """One timer per connection: a later request with a longer deadline is not cut short by
    the earlier one's, and a shorter deadline after a longer one still fires on time."""
    async def handler(server: Server, conn: Conn) -> None:
        while True:
            req = await read_request(conn.reader)
            if req is None:
                return
            if req.target == "/slow":
                await asyncio.sleep(0.5)
            conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await conn.writer.drain()

    server = await start(handler)
    assert (await call(upstream, server, read_timeout=0.3)).status == 200
    assert (await call(upstream, server, target=b"/slow", read_timeout=2.0)).status == 200
    assert (await call(upstream, server, read_timeout=30.0)).status == 200
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(UpstreamTimeout):
        await call(upstream, server, target=b"/slow", read_timeout=0.1)
    assert loop.time() - began < 0.45  # the 0.1 s deadline, not the 30 s one armed before
    assert server.accepted == 1
