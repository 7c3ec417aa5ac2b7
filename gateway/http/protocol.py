"""uvicorn's httptools HTTP/1.1 protocol with three changes at the socket, below the ASGI app.

Where it sits: between the listening socket and :class:`gateway.http.app.GatewayApp`; passed
to uvicorn as ``http=`` by :func:`gateway.server.serve` (built by :func:`v2_protocol`).

- **A deadline for receiving each request.** uvicorn waits for a request's bytes forever: a
  client that connects and sends nothing, trickles its head, or stops in the middle of its body
  holds its connection (and, mid-body, a handler waiting in ``read_body``) for as long as it
  likes (slowloris). Here a request, head and body, must have arrived within ``timeout_s`` of
  its first byte (of the connection opening, for the first one), else the client gets 408 in V2
  error JSON and the connection is closed; a handler still reading the body then sees the
  client gone. Each connection has one timer, re-armed only when it fires; per request the cost
  is two attribute writes and a clock read (a timer per request, e.g. ``asyncio.timeout``
  around the body read, costs more than the whole body read). Time the gateway spends not
  reading (flow control: the handler has not asked for the body yet) does not count against
  the client, and neither does the time after the request arrived (the upstream call has its
  own deadlines); idle keep-alive connections keep uvicorn's own timeout.
- **V2 errors from the parser.** A request the parser rejects before it can reach the app (an
  unknown method token, a malformed request line or header, a URL over httptools' 64 KiB) is
  answered by uvicorn itself, in ``text/plain``; here the same 400 (and connection close)
  carries ``{"error": ...}`` like every other gateway error.

- **One write per response.** uvicorn writes a response's head when the app starts it and the
  body when the app sends it: two ``send`` syscalls (and often two TCP segments) for every
  small answer, the largest single cost a profile of the gateway showed. Here each request's
  cycle writes through a :class:`_Corked` transport that holds the head back and sends it with
  the first body chunk (a body that never comes - a HEAD answer - is flushed when the response
  completes).

Both answers come from :func:`gateway.http.errors.error_response`, the one place statuses are
chosen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import BadRequest, GatewayError, RequestTimeout
from gateway.http.errors import error_response

DEFAULT_TIMEOUT_S = 30.0
_JOIN_MAX = 64 * 1024  # above this a body goes with its head as two buffers, not one copy


class _Corked:
    """The transport as one response's cycle sees it: its first write (the head) is held and
    goes out with the next one; everything else is the real transport's."""

    __slots__ = ("_done", "_held", "_started", "transport")

    def __init__(self, transport: asyncio.Transport, done: Callable[[], None]) -> None:
        self.transport = transport
        self._done = done  # the cycle's own "response complete" callback
        self._held: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) <= _JOIN_MAX:
                self.transport.write(held + data)
            else:
                self.transport.writelines((held, data))
        elif self._started:
            self.transport.write(data)
        else:
            self._started = True
            self._held = data

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def finish(self) -> None:
        """The response is complete: a head with no body written (HEAD) goes out now."""
        self.flush()
        self._done()

    def __getattr__(self, name: str) -> object:
        return getattr(self.transport, name)


class V2HttpToolsProtocol(HttpToolsProtocol):
    timeout_s = DEFAULT_TIMEOUT_S
    _timer: asyncio.TimerHandle | None = None
    _started: float | None = None  # loop time the request being received began; None: none
    _in_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._started = self.loop.time()
        self._timer = self.loop.call_later(self.timeout_s, self._check_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._started is None:  # else the connection's first request: counted from its start
            self._started = self.loop.time()

    def on_headers_complete(self) -> None:
        self._in_body = True
        super().on_headers_complete()
        cycle = self.cycle
        corked = _Corked(self.transport, cycle.on_response)
        cycle.transport = corked  # type: ignore[assignment]
        cycle.on_response = corked.finish

    def on_message_complete(self) -> None:
        self._started = None
        self._in_body = False
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self._answer(BadRequest(msg))

    def _check_deadline(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        due = None if self._started is None else self._started + self.timeout_s
        if due is not None and now >= due:
            if not self._excused():
                part = "request body" if self._in_body else "request head"
                self._answer(RequestTimeout(self.timeout_s, part))
                return
            due = now + self.timeout_s
        self._timer = self.loop.call_later(
            self.timeout_s if due is None else due - now, self._check_deadline)

    def _excused(self) -> bool:
        """Whether a late request is not the client's doing: the gateway stopped reading (flow
        control), a pipelined head waits for the request before it, or the handler has already
        answered and is finishing."""
        cycle = self.cycle
        if self.flow.read_paused:
            return True
        if cycle is None:
            return False
        if self._in_body:
            return bool(cycle.response_started)
        return not cycle.response_complete

    def _answer(self, error: GatewayError) -> None:
        """Send ``error`` as a V2 error response and close the connection."""
        status, headers, body = error_response(error)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
        head += [name + b": " + value + b"\r\n" for name, value in
                 (*self.server_state.default_headers, *headers) if name != b"connection"]
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def v2_protocol(timeout_s: float = DEFAULT_TIMEOUT_S) -> type[V2HttpToolsProtocol]:
    """The protocol class for one server, with its request deadline."""
    return type("V2HttpToolsProtocol", (V2HttpToolsProtocol,), {"timeout_s": timeout_s})
