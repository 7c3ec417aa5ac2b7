"""The one place where errors become HTTP responses: V2 error JSON ``{"error": "..."}``.

The status comes from the one table both fronts share (:mod:`gateway.statuses`); the headers
that go with some of them (Retry-After, WWW-Authenticate, Allow, Connection) are added here.
"""

from __future__ import annotations

import logging
from json.encoder import encode_basestring_ascii as _quote

from gateway.adapters.upstream import Headers
from gateway.errors import (
    MethodNotAllowed,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
    Unavailable,
)
from gateway.statuses import status_of

log = logging.getLogger("servegate.http")

JSON = (b"content-type", b"application/json")
# Error messages echo parts of the request (model names, header values); bounded in size.
MAX_MESSAGE_CHARS = 1024


def error_response(exc: BaseException) -> tuple[int, Headers, bytes]:
    """``(status, headers, body)`` for an error; unexpected exceptions become a logged 500."""
    row = status_of(exc)
    status = 0 if row is None else row[0]
    if status == 0:
        log.exception("unhandled error", exc_info=exc)
        status, message = 500, "internal gateway error"
    else:
        message = str(exc)
        if len(message) > MAX_MESSAGE_CHARS:  # e.g. a 60 KB model name from the URL
            message = message[:MAX_MESSAGE_CHARS] + "..."
    headers: Headers = [JSON]
    if isinstance(exc, Unavailable | Overloaded):
        headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    elif status == 503:
        headers.append((b"retry-after", b"1"))
    if isinstance(exc, Unauthorized):
        headers.append((b"www-authenticate", b"Bearer"))
    if isinstance(exc, MethodNotAllowed):
        headers.append((b"allow", exc.allowed.encode()))
    if isinstance(exc, RequestTimeout | PayloadTooLarge):  # the body was not read to its end
        headers.append((b"connection", b"close"))
    # = json.dumps({"error": message}), through the C string encoder only
    return status, headers, b'{"error": ' + _quote(message).encode() + b"}"
