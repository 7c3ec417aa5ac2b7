"""gateway.grpc.errors (the gRPC status map) and gateway.grpc.upstream.translate."""

from __future__ import annotations

import logging

import grpc
import pytest

from gateway.errors import (
    BadRequest,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    Unsupported,
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
)
from gateway.grpc.errors import grpc_status, http_status
from gateway.grpc.upstream import translate
from gateway.grpc.wire import MalformedMessage
from router import NoEndpoint, UnknownModel

C = grpc.StatusCode


@pytest.mark.parametrize(("exc", "code"), [
    (UnknownModel("m"), C.NOT_FOUND),
    (NotFound("x"), C.NOT_FOUND),
    (BadRequest("x"), C.INVALID_ARGUMENT),
    (MalformedMessage("x"), C.INVALID_ARGUMENT),
    (PayloadTooLarge(10), C.RESOURCE_EXHAUSTED),
    (Unsupported("x"), C.UNIMPLEMENTED),
    (MethodNotAllowed("GET"), C.UNIMPLEMENTED),
    (NoEndpoint("cpu"), C.UNAVAILABLE),
    (Unavailable("x"), C.UNAVAILABLE),
    (UpstreamConnectError("h:1", "refused"), C.UNAVAILABLE),
    (UpstreamBroken("h:1", "reset"), C.UNAVAILABLE),
    (UpstreamTimeout("h:1", "slow"), C.DEADLINE_EXCEEDED),
    (UpstreamError("h:1", "other"), C.INTERNAL),
    (GatewayError("x"), C.INTERNAL),
])
def test_codes(exc: Exception, code: grpc.StatusCode) -> None:
    assert grpc_status(exc) == (code, str(exc))


def test_messages_name_the_problem() -> None:
    assert "unknown model" in grpc_status(UnknownModel("m"))[1]
    assert "10 bytes" in grpc_status(PayloadTooLarge(10))[1]
    assert "h:1" in grpc_status(UpstreamBroken("h:1", "reset"))[1]


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "NOT_FOUND", "UNIMPLEMENTED", "INTERNAL",
                                  "DEADLINE_EXCEEDED", "CANCELLED"])
def test_upstream_status_passes_through_unchanged(code: str) -> None:
    exc = UpstreamStatus("h:1", code, "[request id: r] unexpected inference input 'WRONG'")
    assert grpc_status(exc) == (C[code], exc.details)


def test_unknown_upstream_code_name_is_unknown() -> None:
    assert grpc_status(UpstreamStatus("h:1", "BOGUS", "d")) == (C.UNKNOWN, "d")


def test_unexpected_error_is_internal_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "servegate.grpc"):
        assert grpc_status(KeyError("secret")) == (C.INTERNAL, "internal gateway error")
    assert "unhandled error" in caplog.text


def test_subclass_inherits_its_parents_code() -> None:
    class Quota(Unavailable):
        pass

    assert grpc_status(Quota("over quota"))[0] == C.UNAVAILABLE


@pytest.mark.parametrize(("code", "status"), [
    (C.OK, 200), (C.INVALID_ARGUMENT, 400), (C.NOT_FOUND, 404), (C.CANCELLED, 499),
    (C.RESOURCE_EXHAUSTED, 429), (C.UNIMPLEMENTED, 501), (C.UNAVAILABLE, 503),
    (C.DEADLINE_EXCEEDED, 504), (C.INTERNAL, 500),
])
def test_http_status_for_the_metrics_class(code: grpc.StatusCode, status: int) -> None:
    assert http_status(code) == status


def test_every_code_has_an_http_status() -> None:
    assert all(100 <= http_status(code) < 600 for code in C)


REFUSED = ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
           "Failed to connect to remote host: Connection refused")


@pytest.mark.parametrize(("code", "details", "clients", "expected"), [
    (C.UNAVAILABLE, REFUSED, False, UpstreamConnectError),
    (C.UNAVAILABLE, "Socket closed", False, UpstreamBroken),
    (C.UNAVAILABLE, "Connection reset by peer", True, UpstreamBroken),
    (C.DEADLINE_EXCEEDED, "Deadline Exceeded", False, UpstreamTimeout),
    (C.DEADLINE_EXCEEDED, "Deadline Exceeded", True, UpstreamStatus),
    (C.INVALID_ARGUMENT, "bad input", False, UpstreamStatus),
    (C.NOT_FOUND, "Request for unknown model", False, UpstreamStatus),
    (C.INTERNAL, "boom", True, UpstreamStatus),
    (C.CANCELLED, "Cancelled", False, UpstreamStatus),
])
def test_translate(code: grpc.StatusCode, details: str, clients: bool,
                   expected: type[Exception]) -> None:
    error = translate(code, details, "10.0.0.7:8001", clients)
    assert type(error) is expected
    assert getattr(error, "endpoint", None) == "10.0.0.7:8001"
    if isinstance(error, UpstreamStatus):
        assert grpc_status(error) == (code, details)  # passed through as it came
    else:
        assert isinstance(error, UpstreamError) and details in str(error)
