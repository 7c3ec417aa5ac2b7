"""Reading the few fields the gateway needs straight from protobuf bytes.

Where it sits: first step of every model-scoped gRPC call. ``ModelInferRequest`` and the
model-scoped requests (``ModelReady``, ``ModelMetadata``, ``ModelConfig``, ``ModelStatistics``)
all keep the model name in field 1 and the version in field 2 (``ModelInferRequest`` its id in
field 3), each a length-delimited string at the top level. :func:`request_head` walks the
message's top-level fields, jumping over every other one (tensors included) without copying,
so the request is forwarded as the same bytes it arrived as, never parsed or re-encoded.

Wire format: each field is a varint key ``(number << 3) | wire_type`` followed by a varint
(type 0), 8 bytes (type 1), a varint length and that many bytes (type 2) or 4 bytes (type 5).
For a repeated occurrence of a scalar field the last one wins, as in any protobuf parser.
"""

from __future__ import annotations

from gateway.errors import BadRequest


class MalformedMessage(BadRequest):
    def __init__(self, what: str) -> None:
        super().__init__(f"malformed request message: {what}")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint starting at ``pos`` and the position after it."""
    result = 0
    shift = 0
    end = len(buf)
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise MalformedMessage("varint longer than 10 bytes")
    raise MalformedMessage("truncated varint")


def request_head(raw: bytes) -> tuple[str, str, str]:
    """``(model name, model version, request id)`` (fields 1, 2, 3) of a request message."""
    found = [b"", b"", b"", b""]  # by field number; 1..3 used
    pos = 0
    end = len(raw)
    while pos < end:
        if raw[pos] < 0x80:  # one-byte key: fields numbered below 16, the common case
            key = raw[pos]
            pos += 1
        else:
            key, pos = _varint(raw, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise MalformedMessage("field number 0")
        if wire_type == 2:
            if pos < end and raw[pos] < 0x80:
                size = raw[pos]
                pos += 1
            else:
                size, pos = _varint(raw, pos)
            stop = pos + size
            if stop > end:
                raise MalformedMessage("truncated length-delimited field")
            if number < 4:
                found[number] = raw[pos:stop]
            pos = stop
        elif wire_type == 0:
            _, pos = _varint(raw, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise MalformedMessage(f"unsupported wire type {wire_type}")
    if pos > end:
        raise MalformedMessage("truncated fixed-size field")
    try:
        return found[1].decode(), found[2].decode(), found[3].decode()
    except UnicodeDecodeError:
        raise MalformedMessage("a string field is not valid UTF-8") from None


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def retarget(raw: bytes, model: str, version: str) -> bytes:
    """The same request addressed to ``model``/``version``: fields 1 and 2 are appended, and
    the last occurrence of a field wins, so nothing else in the message is touched."""
    name, ver = model.encode(), version.encode()
    return b"".join((raw, b"\x0a", _encode_varint(len(name)), name,
                     b"\x12", _encode_varint(len(ver)), ver))
