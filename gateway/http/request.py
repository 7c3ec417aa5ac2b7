"""One REST request as the REST front reads it, and how it answers, whatever the server.

Where it sits: between the server that parsed the bytes (the gateway's own HTTP/1.1 protocol,
:mod:`gateway.http.protocol`, or any ASGI server through :class:`gateway.http.app.GatewayApp`)
and the REST front's model calls. The server builds an :class:`HttpRequest` (the body already
read, bounded) and hands a :class:`Responder` that writes the answer: whole (one write) or
streamed (Server-Sent Events, chunk by chunk as they come).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.adapters.upstream import Headers


def find_header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), or ``None``."""
    for key, value in headers:
        if key == name:
            return bytes(value)
    return None


class HttpRequest:
    """Method, path (percent-decoded), query string, headers (names lower case), body."""

    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(self, method: str, path: str, query: bytes, headers: Headers,
                 body: bytes) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        return find_header(self.headers, name)


class Responder(Protocol):
    """Writes one request's answer to its client."""

    async def reply(self, status: int, headers: Headers, body: bytes) -> None:
        """The whole answer at once (the server adds framing and connection headers)."""

    async def start(self, status: int, headers: Headers) -> None:
        """Begin an answer whose body follows in :meth:`write` calls (chunked)."""

    async def write(self, chunk: bytes) -> None:
        """One piece of a started answer, sent on as it is (waits while the client is slow)."""

    async def end(self, chunk: bytes = b"") -> None:
        """The last piece of a started answer."""

    def on_gone(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` if the client disconnects before the answer ends; returns the
        function that cancels this watch."""
