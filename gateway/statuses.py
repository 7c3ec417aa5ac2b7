"""The one table: every error the gateway raises, with its HTTP status and its gRPC code.

Where it sits: read by the two places that answer with an error, the REST front
(:func:`gateway.http.errors.error_response`) and the gRPC front
(:func:`gateway.grpc.errors.grpc_status`), so a call refused over REST and the same call over
gRPC always say the same thing. The entry is found by walking the exception's MRO (as
starlette's exception handlers do), so a new subclass inherits its parent's row until it is
given its own. gRPC codes are ``grpc.StatusCode`` member names: this module imports no
protocol library.
"""

from __future__ import annotations

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

#                                       HTTP  gRPC
STATUSES: dict[type[BaseException], tuple[int, str]] = {
    BadRequest:                         (400, "INVALID_ARGUMENT"),
    UnknownVariant:                     (400, "INVALID_ARGUMENT"),
    Unauthorized:                       (401, "UNAUTHENTICATED"),
    Forbidden:                          (403, "PERMISSION_DENIED"),
    NotFound:                           (404, "NOT_FOUND"),
    UnknownModel:                       (404, "NOT_FOUND"),
    MethodNotAllowed:                   (405, "UNIMPLEMENTED"),
    RequestTimeout:                     (408, "DEADLINE_EXCEEDED"),
    PayloadTooLarge:                    (413, "RESOURCE_EXHAUSTED"),
    Overloaded:                         (429, "RESOURCE_EXHAUSTED"),
    Unsupported:                        (501, "UNIMPLEMENTED"),
    UpstreamBroken:                     (502, "UNAVAILABLE"),
    Unavailable:                        (503, "UNAVAILABLE"),
    NoEndpoint:                         (503, "UNAVAILABLE"),
    UpstreamConnectError:               (503, "UNAVAILABLE"),
    UpstreamTimeout:                    (504, "DEADLINE_EXCEEDED"),
    GatewayError:                       (500, "INTERNAL"),
}


def status_of(exc: BaseException) -> tuple[int, str] | None:
    """``(HTTP status, gRPC code name)`` for a known error; ``None`` for anything else (a bug:
    the fronts log it and answer 500 / INTERNAL)."""
    kind = type(exc)
    try:
        return _FOUND[kind]
    except KeyError:
        pass
    row = None
    for cls in kind.__mro__:
        row = STATUSES.get(cls)
        if row is not None:
            break
    if len(_FOUND) < 256:  # exception types are few; bounded all the same
        _FOUND[kind] = row
    return row


_FOUND: dict[type[BaseException], tuple[int, str] | None] = {}  # walked once per type
