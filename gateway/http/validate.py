"""Cheap checks of a REST infer body's framing, before it is forwarded.

Where it sits: in the REST request path right after the body is read (:func:`read_body`) and
before the proxy picks an endpoint, for ``infer`` and ``generate`` calls only
(:func:`check_infer_body`). Neither check parses the JSON or touches tensor data.

- **Inference-Header-Content-Length.** The binary tensor extension splits the body there: the
  JSON header is that many bytes, the tensors follow. A value that is not a non-negative decimal
  integer, or that points past the end of the body, can never frame a valid request: 400 here
  instead of handing Triton a body it has to take apart. With a ``Content-Encoding`` the header
  gives the *uncompressed* JSON size (tritonclient sets it so), so only its syntax is checked.
- **Declared shapes (infer only).** Triton's HTTP front end allocates and fills a buffer for a
  JSON input's declared shape *before* it compares the shape with the data: an 80-byte body
  declaring ``"shape": [1, 100000000]`` costs it 380 MB and over a second, ``[1, 4000000000]``
  16 GB, and a product past 2**63 kills the server (found by the schemathesis run). A tensor
  takes at least one byte of the body per element (JSON or binary; shared memory does not cross
  the gateway), so a shape that declares more elements than the body has bytes is refused with
  400. The ``"shape": [...]`` arrays are found by a byte search in the JSON part of the body
  (all of it without the binary extension, the header part with it); inside JSON strings a
  quote is escaped, so the search only matches keys. A compressed body is not searched.
"""

from __future__ import annotations

import re

from gateway.adapters.upstream import Headers
from gateway.errors import BadRequest

INFERENCE_HEADER = b"inference-header-content-length"
_IDENTITY = (b"", b"identity")
_SHAPE_KEY = b'"shape"'
_SHAPE = re.compile(rb'"shape"\s*:\s*\[([^\]]*)\]')


def check_infer_body(headers: Headers, body: bytes, action: str) -> None:
    """Raise :class:`BadRequest` for a body no Triton could accept (see the module doc)."""
    framed = False
    encoded = False
    for key, _ in headers:  # one pass; the common request has neither header
        if key == INFERENCE_HEADER:
            framed = True
        elif key == b"content-encoding":
            encoded = True
    json_size = check_inference_header(headers, body) if framed else None
    if action == "infer" and (not encoded or _encoding(headers) in _IDENTITY):
        check_declared_shapes(body, len(body) if json_size is None else json_size)


def check_inference_header(headers: Headers, body: bytes) -> int | None:
    """The JSON part's size if ``Inference-Header-Content-Length`` frames ``body``; ``None``
    without the header; :class:`BadRequest` if it cannot."""
    values = [v for k, v in headers if k == INFERENCE_HEADER]
    if not values:
        return None
    if len(set(values)) > 1:
        raise BadRequest("conflicting Inference-Header-Content-Length headers")
    raw = bytes(values[0]).strip()
    if not raw.isdigit() or len(raw) > 20:  # isdigit: no sign, no blank; 20 digits > int64
        shown = raw[:32].decode("latin-1")
        raise BadRequest(f"invalid Inference-Header-Content-Length header '{shown}': expected "
                         "the byte length of the JSON part of the body")
    size = int(raw)
    if size > len(body) and _encoding(headers) in _IDENTITY:
        raise BadRequest(f"Inference-Header-Content-Length {size} is past the end of the "
                         f"request body ({len(body)} bytes)")
    return size


def check_declared_shapes(body: bytes, json_end: int) -> None:
    """Refuse a ``"shape"`` in ``body[:json_end]`` declaring more elements than ``body`` has
    bytes (without copying the body)."""
    pos = body.find(_SHAPE_KEY, 0, json_end)
    while pos >= 0:
        match = _SHAPE.match(body, pos, json_end)
        if match is None:
            pos += len(_SHAPE_KEY)
        else:
            dims = match.group(1)
            if _elements_over(dims, len(body)):
                shown = dims[:64].decode("latin-1")
                raise BadRequest(f"input shape [{shown}] declares more elements than the "
                                 f"{len(body)} byte request body can carry")
            pos = match.end()
        pos = body.find(_SHAPE_KEY, pos, json_end)


def _elements_over(dims: bytes, limit: int) -> bool:
    """Whether the dimensions' product passes ``limit``; ``False`` for anything that is not a
    list of non-negative integers (Triton rejects those itself, cheaply)."""
    cap = limit + 1
    product = 1
    for part in dims.split(b","):
        part = part.strip()
        if not part.isdigit() or len(part) > 20:
            return False
        value = int(part)
        if not value:
            return False
        product = min(product * value, cap)  # capped: a long shape never builds a huge int
    return product == cap


def _encoding(headers: Headers) -> bytes:
    for key, value in headers:
        if key == b"content-encoding":
            return bytes(value).strip().lower()
    return b""
