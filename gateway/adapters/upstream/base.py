"""The upstream port: how the data plane sends one HTTP request to one Triton endpoint.

Where it sits: the last hop of the request path (``gateway.pipeline.proxy`` picks the endpoint, this
sends the bytes). Implementations translate their library's errors into
:class:`gateway.errors.UpstreamError` subclasses, so the proxy's retry and health logic never
sees a third-party exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

Headers = list[tuple[bytes, bytes]]

# Headers that describe one connection, not the message: never forwarded in either direction.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer",
    b"upgrade", b"proxy-authenticate", b"proxy-authorization", b"host", b"content-length",
    b"expect",
})


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: Headers  # hop-by-hop and content-length removed; names lower-case
    body: bytes


class UpstreamStream(Protocol):
    """A response whose body is read as it arrives (Server-Sent Events from ``generate_stream``).

    ``chunks()`` yields body bytes in the order the endpoint sent them, and raises an
    :class:`~gateway.errors.UpstreamError` if the transfer breaks or stalls; ``close()`` gives
    the connection back when the body was read to its end, else aborts it.
    """

    status: int
    headers: Headers

    def chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class Upstream(Protocol):
    async def request(
        self, host: str, port: int, method: bytes, target: bytes, headers: Headers, body: bytes,
        connect_timeout: float, read_timeout: float,
    ) -> UpstreamResponse:
        """Send one request; raise an :class:`~gateway.errors.UpstreamError` on transport failure.

        ``headers`` must already be end-to-end only (no hop-by-hop, no Host or Content-Length).
        """
        ...

    async def stream(
        self, host: str, port: int, method: bytes, target: bytes, headers: Headers, body: bytes,
        connect_timeout: float, read_timeout: float,
    ) -> UpstreamStream:
        """Send one request and return once the response head arrived; the body streams.
        ``read_timeout`` bounds the wait for the head and then each gap between chunks."""
        ...

    async def aclose(self) -> None: ...
