"""The one place where errors become HTTP responses: V2 error JSON ``{"error": "..."}``.

The status is found by walking the exception's MRO (starlette's ``_exception_handler`` does
the same), so a new subclass inherits its parent's status until it is given its own.
"""

from __future__ import annotations

import json
import logging

from gateway.adapters.upstream import Headers
from gateway.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
    Unavailable,
    Unsupported,
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamTimeout,
)
from router import NoEndpoint, UnknownModel
from router.splits import UnknownVariant

log = logging.getLogger("servegate.http")

_STATUS: dict[type[BaseException], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    UnknownModel: 404,
    UnknownVariant: 400,
    MethodNotAllowed: 405,
    RequestTimeout: 408,
    PayloadTooLarge: 413,
    Overloaded: 429,
    Unavailable: 503,
    NoEndpoint: 503,
    UpstreamConnectError: 503,
    UpstreamBroken: 502,
    UpstreamTimeout: 504,
    Unsupported: 501,
    GatewayError: 500,
}

JSON = (b"content-type", b"application/json")
# Error messages echo parts of the request (model names, header values); bounded in size.
MAX_MESSAGE_CHARS = 1024


def error_response(exc: BaseException) -> tuple[int, Headers, bytes]:
    """``(status, headers, body)`` for an error; unexpected exceptions become a logged 500."""
    status = next((_STATUS[c] for c in type(exc).__mro__ if c in _STATUS), 0)
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
    return status, headers, json.dumps({"error": message}).encode()
