"""The one place where errors become gRPC statuses (``grpc.StatusCode`` and details).

The code comes from the one table both fronts share (:mod:`gateway.statuses`). A status an
endpoint answered with (:class:`~gateway.errors.UpstreamStatus`) passes through unchanged.

    UnknownModel, NotFound                  NOT_FOUND
    BadRequest (malformed message, ...)     INVALID_ARGUMENT
    PayloadTooLarge, Overloaded             RESOURCE_EXHAUSTED
    Unsupported, MethodNotAllowed           UNIMPLEMENTED
    NoEndpoint, Unavailable,
    UpstreamConnectError, UpstreamBroken    UNAVAILABLE
    UpstreamTimeout, RequestTimeout         DEADLINE_EXCEEDED
    UpstreamStatus                          the endpoint's own code and details
    any other GatewayError                  INTERNAL
    anything else                           INTERNAL "internal gateway error" (logged)

:func:`http_status` gives the HTTP status a code corresponds to, for the metrics' status class.
"""

from __future__ import annotations

import logging

import grpc

from gateway.errors import UpstreamStatus
from gateway.statuses import status_of

log = logging.getLogger("servegate.grpc")

MAX_DETAILS_BYTES = 1024

# grpc-gateway's mapping (google.rpc.Code -> HTTP), used for the status-class label only.
_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """``(code, details)`` for an error; unexpected exceptions become a logged INTERNAL."""
    if isinstance(exc, UpstreamStatus):
        return (grpc.StatusCode.__members__.get(exc.code, grpc.StatusCode.UNKNOWN),
                bounded(exc.details))
    row = status_of(exc)
    if row is None:
        log.exception("unhandled error", exc_info=exc)
        return grpc.StatusCode.INTERNAL, "internal gateway error"
    return grpc.StatusCode[row[1]], bounded(str(exc))


def bounded(details: str) -> str:
    """At most ``MAX_DETAILS_BYTES`` of UTF-8: details travel percent-encoded in the
    ``grpc-message`` trailer, and a client drops a call whose metadata passes 8 KiB (a
    RESOURCE_EXHAUSTED of its own instead of the status sent), e.g. a 10 KB model name echoed
    back in NOT_FOUND."""
    raw = details.encode()
    if len(raw) <= MAX_DETAILS_BYTES:
        return details
    return raw[:MAX_DETAILS_BYTES].decode(errors="ignore") + "..."


def http_status(code: grpc.StatusCode) -> int:
    return _HTTP.get(code, 500)
