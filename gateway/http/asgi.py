"""Tiny ASGI helpers shared by the REST handlers: read a bounded body, send a response."""

from __future__ import annotations

import json
from typing import Any

from gateway.errors import BadRequest, PayloadTooLarge
from gateway.upstream import Headers

Scope = dict[str, Any]
Message = dict[str, Any]


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Any, limit: int) -> bytes:
    """The whole request body; 413 before reading when Content-Length is over ``limit``."""
    declared = header(scope, b"content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(f"invalid Content-Length header: {declared[:32]!r}") from None
        if size > limit:
            raise PayloadTooLarge(limit)
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
