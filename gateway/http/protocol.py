"""The gateway's own HTTP/1.1 server protocol for the REST port (httptools, under uvicorn's server).

Where it sits: between the listening socket and the REST front. uvicorn's ``Server`` still
owns the sockets and the shutdown (:mod:`gateway.server` passes this class as ``http=``), but
requests do not go through uvicorn's ASGI cycle: each one is parsed here into an
:class:`~gateway.http.request.HttpRequest` with its body, and a model call goes straight to
:meth:`gateway.http.app.GatewayApp.model_call` with this connection as its
:class:`~gateway.http.request.Responder`. Everything else (health, metadata, ``/metrics``,
statistics, the admin API) is run as ASGI (:meth:`V2Protocol._asgi`), off the hot path. A
profile showed uvicorn's per-request machinery (scope dict, cycle object, ``receive``/``send``
messages, two writes) costing about a third of a forwarded call's CPU.

- **One write per response**: status line, headers and body leave in one ``write`` (a body
  above 4 KiB as a second buffer of the same vectored ``writelines``, not copied). Streamed answers
  (``generate_stream``) use chunked transfer coding, each chunk written as it comes and
  the writer held while the client's socket is full.
- **Keep-alive and pipelining**: requests on one connection are answered in order, one at a
  time; a pipelined request waits parsed (reading pauses while more than a few wait). An idle
  connection is closed after ``keep_alive_s``. ``Expect: 100-continue`` is answered before the
  body is read.
- **Bounded bodies**: a body past the largest any route accepts is refused with 413 (before
  reading when Content-Length says so) and the connection closed; each route's own limit is
  checked by the pipeline.
- **A deadline for receiving each request** (slowloris): head and body must have arrived
  within ``timeout_s`` of the request's first byte (of the connection opening, for the first
  one), else 408 in V2 error JSON and the connection is closed. One timer per connection,
  re-armed only when it fires; per request two attribute writes and a clock read. Time the
  gateway spends not reading (pipelined requests waiting, reading paused) does not count.
- **V2 errors from the parser**: a request the parser rejects (malformed request line or
  header, a URL over httptools' limits) gets 400 with ``{"error": ...}`` and the connection is
  closed.
- **Draining**: once the gateway drains (SIGTERM), every response says ``connection: close``
  and its connection closes after it; ``shutdown()`` (uvicorn's server calls it) closes idle
  connections at once and busy ones after their response.
- **The client going away** closes nothing upstream for a unary call (its answer is dropped),
  and cancels a streamed one (:meth:`on_gone`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools

from gateway.adapters.upstream import Headers
from gateway.errors import BadRequest, GatewayError, PayloadTooLarge, RequestTimeout
from gateway.http.errors import error_response
from gateway.http.request import HttpRequest

log = logging.getLogger("servegate.http")

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_KEEP_ALIVE_S = 5.0
_JOIN_MAX = 4 * 1024  # above this a body goes with its head as two buffers, not one copy
_MAX_URL = 65535  # what httptools' URL parser takes (uvicorn answers a longer one with 400)
_MAX_WAITING = 8  # pipelined requests parsed ahead before reading pauses
_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode())
                 for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE = b"connection: close\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class Draining:
    """Shared by every connection of one server: set when the gateway starts draining."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = False


class _Request:
    """A request being received: what the parser has given so far."""

    __slots__ = ("body", "headers", "size", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.size = 0


class V2Protocol(asyncio.Protocol):
    # Set per server by :func:`v2_protocol`.
    timeout_s = DEFAULT_TIMEOUT_S
    keep_alive_s = DEFAULT_KEEP_ALIVE_S
    front: Any = None  # gateway.http.app.GatewayApp (model calls, body limit)
    draining = Draining()

    def __init__(self, config: Any, server_state: Any, app_state: Any = None,
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not config.loaded:
            config.load()
        self.app = config.loaded_app  # ASGI: everything that is not a model call
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self._req: _Request | None = None  # being received
        self._waiting: deque[tuple[HttpRequest, bool]] = deque()  # received, not yet answered
        self._busy = False  # a request is being answered
        self._keep_alive = True  # the request being answered allows keep-alive
        self._head_only = False  # ... is a HEAD
        self._refused = False  # the request being received was answered already (413)
        self._closing = False  # close after the response being written
        self._reading_paused = False
        self._write_paused: asyncio.Future[None] | None = None
        self._gone: Callable[[], None] | None = None  # a streamed call's cancel
        self._streaming = False
        self._timer: asyncio.TimerHandle | None = None
        self._started: float | None = None  # loop time the request being received began
        self._idle_since: float | None = None  # loop time the connection went idle
        self._in_body = False
        self._lost = False
        self._limit = 0  # the request being received: its body limit

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        self.client = transport.get_extra_info("peername")
        self.server = transport.get_extra_info("sockname")
        self._started = self.loop.time()
        self._timer = self.loop.call_later(self.timeout_s, self._check_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter = self._write_paused
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        gone = self._gone
        if gone is not None:
            self._gone = None
            gone()
        self._waiting.clear()

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        if self._write_paused is None:
            self._write_paused = self.loop.create_future()

    def resume_writing(self) -> None:
        waiter = self._write_paused
        self._write_paused = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol upgrade here: the request is answered over HTTP/1.1
        except httptools.HttpParserError as exc:
            if not self._refused:
                self._answer(BadRequest(f"invalid HTTP request: {exc}"))
            else:
                self.transport.close()

    def shutdown(self) -> None:
        """The server is stopping: close now if idle, else after the response."""
        if self._busy or self._waiting:
            self._closing = True
        else:
            self.transport.close()

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._req = _Request()
        self._idle_since = None
        if self._started is None:  # else the connection's first request: counted from its start
            self._started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        req = self._req
        assert req is not None
        req.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._req
        assert req is not None
        req.headers.append((name.lower(), value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        self._in_body = True
        req = self._req
        assert req is not None
        if len(req.url) > _MAX_URL:
            self._refuse(BadRequest(f"request URL of {len(req.url)} bytes is over the limit "
                                    f"of {_MAX_URL}"))
            return
        limit = self._limit = self.front.body_limit_for(req.url)
        for name, value in req.headers:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    self._refuse(PayloadTooLarge(limit))
                    return
            elif name == b"expect" and value.lower() == b"100-continue":
                self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        req = self._req
        if req is None or self._refused:
            return
        req.size += len(body)
        if req.size > self._limit:
            self._refuse(PayloadTooLarge(self._limit))
            return
        req.body.append(body)

    def on_message_complete(self) -> None:
        self._started = None
        self._in_body = False
        req = self._req
        self._req = None
        if req is None or self._refused:
            return
        parser = self.parser
        url = req.url
        if b"?" in url or b"%" in url or not url.startswith(b"/"):
            parsed = httptools.parse_url(url)
            path = parsed.path.decode("latin-1")
            if "%" in path:
                path = unquote(path, encoding="latin-1")
            query = parsed.query or b""
        else:
            path, query = url.decode("latin-1"), b""
        body = req.body
        request = HttpRequest(parser.get_method().decode("ascii"), path, query, req.headers,
                              body[0] if len(body) == 1 else b"".join(body))
        keep_alive = parser.should_keep_alive()
        if self._busy:
            self._waiting.append((request, keep_alive))
            if len(self._waiting) >= _MAX_WAITING and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()
            return
        self._begin(request, keep_alive)

    # ------------------------------------------------------------------ answering

    def _begin(self, request: HttpRequest, keep_alive: bool) -> None:
        self._busy = True
        self._keep_alive = keep_alive
        self._head_only = request.method == "HEAD"
        task = self.loop.create_task(self._serve(request))
        self.tasks.add(task)
        task.add_done_callback(self._done)

    async def _serve(self, request: HttpRequest) -> None:
        front = self.front
        path = request.path
        if path.startswith("/v2/models/") and not path.endswith("/stats"):
            await front.model_call(request, self)
        else:
            await self._asgi(request)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._busy = False
        self._gone = None
        if not task.cancelled() and task.exception() is not None:
            log.error("request handler failed", exc_info=task.exception())
            self.transport.close()
            return
        if task.cancelled() or self._streaming or not self._keep_alive or self._closing \
                or self.transport.is_closing():
            self.transport.close()  # a response cut short cannot be followed by another
            return
        if self._waiting:
            request, keep_alive = self._waiting.popleft()
            if self._reading_paused and len(self._waiting) < _MAX_WAITING // 2:
                self._reading_paused = False
                self.transport.resume_reading()
            self._begin(request, keep_alive)
        else:
            self._idle_since = self.loop.time()

    def _closes(self) -> bool:
        """Whether the response being written is this connection's last."""
        if not self._keep_alive or self._closing or self.draining.on:
            self._keep_alive = False
            return True
        return False

    # Responder (gateway.http.request): the answer to the request being served.

    async def reply(self, status: int, headers: Headers, body: bytes) -> None:
        if self._lost:
            return  # the client went away: the answer has nowhere to go
        head = self._head(status, headers, b"content-length: %d\r\n" % len(body))
        if self._head_only or not body:
            self.transport.write(head)
        elif len(body) <= _JOIN_MAX:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))

    async def start(self, status: int, headers: Headers) -> None:
        if self._lost:
            return
        self._streaming = not self._head_only
        self.transport.write(self._head(status, headers, _CHUNKED))

    def _head(self, status: int, headers: Headers, framing: bytes) -> bytes:
        """Status line and headers of the answer being written, its ``framing`` header
        (length or chunked), and ``connection: close`` when it is the connection's last (a
        ``connection`` header of the answer only says whether it must be)."""
        parts = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in headers:
            if name == b"connection":
                if value.lower() == b"close":
                    self._keep_alive = False
                continue
            parts += (name, b": ", value, b"\r\n")
        parts.append(framing)
        if self._closes():
            parts.append(_CLOSE)
        parts.append(b"\r\n")
        return b"".join(parts)

    async def write(self, chunk: bytes) -> None:
        if self._lost:
            return
        if chunk and not self._head_only:
            self.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        waiter = self._write_paused
        if waiter is not None:
            await waiter

    async def end(self, chunk: bytes = b"") -> None:
        if self._lost:
            return
        if not self._head_only:
            if chunk:
                self.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n", _LAST_CHUNK))
            else:
                self.transport.write(_LAST_CHUNK)
        self._streaming = False

    def on_gone(self, callback: Callable[[], None]) -> Callable[[], None]:
        if self.transport.is_closing():
            callback()
            return _nothing
        self._gone = callback
        return self._unwatch

    def _unwatch(self) -> None:
        self._gone = None

    # ------------------------------------------------------------------ ASGI (off the hot path)

    async def _asgi(self, request: HttpRequest) -> None:
        """Run the ASGI app for one request, its answer written as the app sends it."""
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "server": self.server, "client": self.client,
            "scheme": "http", "root_path": "", "method": request.method,
            "path": request.path, "raw_path": request.path.encode("latin-1"),
            "query_string": request.query, "headers": request.headers, "state": {},
        }
        body_sent = False
        gone = self.loop.create_future()

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await gone
            return {"type": "http.disconnect"}

        start: dict[str, Any] | None = None
        streaming = False

        async def send(message: dict[str, Any]) -> None:
            nonlocal start, streaming
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if streaming:
                await (self.write(body) if more else self.end(body))
            elif more:
                streaming = True
                await self.start(start["status"], _without_length(start.get("headers", [])))
                await self.write(body)
            else:
                await self.reply(start["status"], _without_length(start.get("headers", [])),
                                 body)

        def on_gone() -> None:
            if not gone.done():
                gone.set_result(None)

        self._gone = on_gone
        try:
            await self.app(scope, receive, send)
        finally:
            self._gone = None
            if not gone.done():
                gone.cancel()
        if start is None:
            self._keep_alive = False  # the app sent nothing: nothing can follow either
            self._answer(GatewayError("the request was not answered"))

    # ------------------------------------------------------------------ errors, deadlines

    def _refuse(self, error: GatewayError) -> None:
        """Answer the request being received now, read nothing more of it, and close."""
        self._refused = True
        self._answer(error)

    def _answer(self, error: GatewayError) -> None:
        """Send ``error`` as a V2 error response and close the connection."""
        if self._lost:
            return
        status, headers, body = error_response(error)
        self._keep_alive = False
        self.transport.write(self._head(status, headers, b"content-length: %d\r\n" % len(body))
                             + body)
        self.transport.close()

    def _check_deadline(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        idle = self._idle_since
        if idle is not None and not self._busy and self._req is None:
            if now - idle >= self.keep_alive_s:
                self.transport.close()  # idle keep-alive connection
                return
            self._timer = self.loop.call_later(idle + self.keep_alive_s - now,
                                               self._check_deadline)
            return
        due = None if self._started is None else self._started + self.timeout_s
        if due is not None and now >= due:
            if not self._excused():
                part = "request body" if self._in_body else "request head"
                self._answer(RequestTimeout(self.timeout_s, part))
                return
            due = now + self.timeout_s
        wait = self.timeout_s if due is None else due - now
        if idle is not None:
            wait = min(wait, self.keep_alive_s)
        self._timer = self.loop.call_later(wait, self._check_deadline)

    def _excused(self) -> bool:
        """Whether a late request is not the client's doing: the gateway stopped reading, or
        a pipelined head waits for the request before it."""
        return self._reading_paused or (not self._in_body and self._busy)


def _without_length(headers: Any) -> Headers:
    return [(bytes(k).lower(), bytes(v)) for k, v in headers
            if bytes(k).lower() not in (b"content-length", b"transfer-encoding")]


def _nothing() -> None:
    pass


def v2_protocol(front: Any, draining: Draining, timeout_s: float = DEFAULT_TIMEOUT_S,
                keep_alive_s: float = DEFAULT_KEEP_ALIVE_S) -> type[V2Protocol]:
    """The protocol class for one server: its REST front, drain flag and deadlines."""
    return type("V2Protocol", (V2Protocol,), {
        "front": front, "draining": draining, "timeout_s": timeout_s,
        "keep_alive_s": keep_alive_s})
