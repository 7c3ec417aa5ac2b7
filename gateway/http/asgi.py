"""Tiny ASGI helpers shared by the REST handlers: read a bounded body, send a response.

Where it sits: between an ASGI server (the gateway's own protocol runs everything that is not
a model call as ASGI) and the REST handlers. :func:`read_body` reads an ASGI request body:
bounded in size (413 before reading when the declared length is over the limit, or as soon as
the bytes received pass it) and, if asked, in time (408 when the whole body has not arrived
within ``timeout_s``). The gateway's own server bounds the time at the connection instead
(:mod:`gateway.http.protocol`, ``limits.body_timeout_s``), where it costs no timer per
request; ``timeout_s`` is for an ASGI server without such a deadline.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gateway.adapters.upstream import Headers
from gateway.errors import BadRequest, PayloadTooLarge, RequestTimeout

Scope = dict[str, Any]
Message = dict[str, Any]


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Any, limit: int,
                    timeout_s: float | None = None) -> bytes:
    """The whole request body; 413 before reading when Content-Length is over ``limit``,
    408 when a ``timeout_s`` is given and the body is not complete within it (one deadline
    for all of it)."""
    declared = header(scope, b"content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(f"invalid Content-Length header: {declared[:32]!r}") from None
        if size > limit:
            raise PayloadTooLarge(limit)
    if timeout_s is None:
        return await _receive_body(receive, limit)
    try:
        async with asyncio.timeout(timeout_s):
            return await _receive_body(receive, limit)
    except TimeoutError:
        raise RequestTimeout(timeout_s) from None


async def _receive_body(receive: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(send: Any, status: int, headers: Headers, body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Any, status: int, doc: Any) -> None:
    await respond(send, status, [(b"content-type", b"application/json")],
                  json.dumps(doc, separators=(",", ":")).encode())
