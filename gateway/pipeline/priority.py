"""Writing a request's priority class into the request as Triton's V2 ``priority`` parameter.

Where it sits: after admission, just before an infer request is forwarded, and only when its
class maps to a Triton level above 0 (``priorities`` in the config). Triton's dynamic batcher
then serves higher levels first (1 is the highest; a level above the model's
``priority_levels`` falls back to its default).

- gRPC: ``ModelInferRequest.parameters`` is a protobuf map (field 4). A map entry appended to
  the message overrides an earlier entry with the same key, so the entry
  ``{"priority": uint64_param}`` is appended to the bytes: no parsing, no re-encoding.
- REST: the JSON header (the whole body without the binary-tensor extension) gets
  ``parameters.priority``; only the header is decoded, and only when it is at most
  :data:`MAX_JSON_HEADER` bytes and not compressed (otherwise the request goes as it came
  and the caller counts it). Binary tensor data after the header is never touched.
"""

from __future__ import annotations

import json

from gateway.adapters.upstream import Headers

MAX_JSON_HEADER = 64 * 1024
_HLEN = b"inference-header-content-length"
_PRIORITY_KEY = b"priority"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def grpc_priority_entry(level: int) -> bytes:
    """The bytes of one ``parameters`` map entry ``"priority" -> uint64_param(level)``."""
    param = b"\x28" + _varint(level)  # InferParameter.uint64_param: field 5, varint
    entry = (b"\x0a" + _varint(len(_PRIORITY_KEY)) + _PRIORITY_KEY
             + b"\x12" + _varint(len(param)) + param)
    return b"\x22" + _varint(len(entry)) + entry  # ModelInferRequest.parameters: field 4


def grpc_with_priority(request: bytes, level: int) -> bytes:
    return request + grpc_priority_entry(level)


def rest_with_priority(body: bytes, headers: Headers, level: int) -> tuple[bytes, Headers] | None:
    """The body and headers with ``parameters.priority`` set, or ``None`` if it cannot be
    done cheaply and safely (compressed, header too large, or not a JSON object: Triton
    answers a malformed request itself)."""
    hlen_at = -1
    for i, (key, value) in enumerate(headers):
        if key == b"content-encoding" and value.strip().lower() != b"identity":
            return None
        if key == _HLEN:
            hlen_at = i
    if hlen_at >= 0:
        raw = headers[hlen_at][1]
        if not raw.isdigit() or int(raw) > len(body):
            return None
        split = int(raw)
    else:
        split = len(body)
    if split > MAX_JSON_HEADER:
        return None
    try:
        doc = json.loads(body[:split])
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    params = doc.setdefault("parameters", {})
    if not isinstance(params, dict):
        return None
    params["priority"] = level
    head = json.dumps(doc, separators=(",", ":")).encode()
    new_headers = list(headers)
    if hlen_at >= 0:
        new_headers[hlen_at] = (_HLEN, str(len(head)).encode())
    return head + body[split:], new_headers
