"""gateway.statuses: one table for both fronts - a refusal says the same over REST and gRPC."""

from __future__ import annotations

import grpc
import pytest

from gateway.errors import (
    BadRequest,
    GatewayError,
    Overloaded,
    Unavailable,
    UpstreamBroken,
    UpstreamTimeout,
)
from gateway.grpc.errors import grpc_status, http_status
from gateway.http.errors import error_response
from gateway.statuses import STATUSES, status_of
from router import NoEndpoint, UnknownModel


def instances() -> list[BaseException]:
    return [BadRequest("bad"), Overloaded("busy", "rate", 2), Unavailable("no", 3),
            UpstreamBroken("ep", "reset"), UpstreamTimeout("ep", "slow"), NoEndpoint("p"),
            UnknownModel("m"), GatewayError("odd")]


@pytest.mark.parametrize("exc", instances(), ids=lambda e: type(e).__name__)
def test_both_fronts_answer_from_the_table(exc: BaseException) -> None:
    http, code = status_of(exc) or (0, "")
    assert error_response(exc)[0] == http
    assert grpc_status(exc)[0] == grpc.StatusCode[code]


def test_every_row_is_an_exception_with_a_real_grpc_code() -> None:
    for cls, (_http, code) in STATUSES.items():
        assert issubclass(cls, Exception)
        status = grpc.StatusCode[code]
        assert http_status(status) >= 400, (cls, code)


def test_an_unknown_exception_is_none_and_answered_as_internal() -> None:
    assert status_of(ValueError("bug")) is None
    assert error_response(ValueError("bug"))[0] == 500
    assert grpc_status(ValueError("bug")) == (grpc.StatusCode.INTERNAL, "internal gateway error")
