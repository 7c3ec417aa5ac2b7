"""gateway.http.app.parse_model_path and gateway.http.errors.error_response."""

from __future__ import annotations

import json
import logging

import pytest

from contracts import ConfigError
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
    UpstreamTimeout,
)
from gateway.http.app import parse_model_path
from gateway.http.errors import error_response
from router import NoEndpoint, UnknownModel


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        ("m", ("m", "", "")),
        ("m/infer", ("m", "", "infer")),
        ("m/ready", ("m", "", "ready")),
        ("m/config", ("m", "", "config")),
        ("m/stats", ("m", "", "stats")),
        ("m/generate", ("m", "", "generate")),
        ("m/generate_stream", ("m", "", "generate_stream")),
        ("m/versions/2/generate_stream", ("m", "2", "generate_stream")),
        ("m/versions/2/infer", ("m", "2", "infer")),
        ("m/versions/3", ("m", "3", "")),
        ("m/versions/12/ready", ("m", "12", "ready")),
        ("m/versions/1/config", ("m", "1", "config")),
        ("m/versions/1/stats", ("m", "1", "stats")),
        ("my_model-v1.onnx/versions/7/generate", ("my_model-v1.onnx", "7", "generate")),
        # a model may be called "versions"
        ("versions", ("versions", "", "")),
        ("versions/infer", ("versions", "", "infer")),
        ("versions/versions/1/infer", ("versions", "1", "infer")),
        # a non-numeric version is parsed; the app answers 400 for it
        ("m/versions/x/infer", ("m", "x", "infer")),
    ],
)
def test_parse_model_path(rest: str, expected: tuple[str, str, str]) -> None:
    assert parse_model_path(rest) == expected


@pytest.mark.parametrize(
    "rest",
    [
        "",
        "/infer",
        "/versions/1/infer",
        "m/nope",
        "m/INFER",
        "m/infer/extra",
        "m/generate_stream/x",
        "m/trace/setting",
        "m/load",
        "m/versions",  # "versions" alone is not an action
        "m/versions/2/nope",
        "m/versions/2/infer/x",
        "m/versions/2/versions/3/infer",
        # an empty version segment is not "no version"
        "m/versions/",
        "m/versions//infer",
    ],
)
def test_parse_model_path_rejects(rest: str) -> None:
    assert parse_model_path(rest) is None


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    values = [v for k, v in headers if k == name]
    assert len(values) <= 1, f"{name!r} repeated"
    return values[0] if values else None


@pytest.mark.parametrize(
    ("exc", "status", "message", "retry_after", "allow"),
    [
        (UnknownModel("m"), 404,
         "Request for unknown model: 'm' is not routed by this gateway", None, None),
        (UnknownModel("m", "3"), 404,
         "Request for unknown model: 'm' version 3 is not routed by this gateway", None, None),
        (NotFound("Not Found: /v2/x"), 404, "Not Found: /v2/x", None, None),
        (NoEndpoint("cpu"), 503, "no healthy endpoint in pool 'cpu'", b"1", None),
        (Unavailable("cold start", retry_after_s=7), 503, "cold start", b"7", None),
        (Unavailable("busy"), 503, "busy", b"1", None),
        (PayloadTooLarge(1024), 413, "request body exceeds the limit of 1024 bytes", None, None),
        (MethodNotAllowed("POST"), 405, "Method Not Allowed", None, b"POST"),
        (MethodNotAllowed("GET"), 405, "Method Not Allowed", None, b"GET"),
        (UpstreamTimeout("h:1", "no response within 5s"), 504,
         "upstream h:1: no response within 5s", None, None),
        (UpstreamBroken("h:1", "reset"), 502, "upstream h:1: reset", None, None),
        (UpstreamConnectError("h:1", "connect failed: refused"), 503,
         "upstream h:1: connect failed: refused", b"1", None),
        (UpstreamError("h:1", "other"), 500, "upstream h:1: other", None, None),
        (BadRequest("bad version"), 400, "bad version", None, None),
        (Unsupported("model control is not supported"), 501,
         "model control is not supported", None, None),
        (GatewayError("boom"), 500, "boom", None, None),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_error_response(
    exc: BaseException, status: int, message: str, retry_after: bytes | None,
    allow: bytes | None,
) -> None:
    got_status, headers, body = error_response(exc)
    assert got_status == status
    assert header(headers, b"content-type") == b"application/json"
    assert header(headers, b"retry-after") == retry_after
    assert header(headers, b"allow") == allow
    assert json.loads(body) == {"error": message}
    assert all(k == k.lower() for k, _ in headers)


def test_subclass_inherits_parent_status() -> None:
    class SlowUpstream(UpstreamTimeout):
        pass

    class ModelGone(UnknownModel):
        pass

    assert error_response(SlowUpstream("h:1", "x"))[0] == 504
    assert error_response(ModelGone("m"))[0] == 404


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("secret internal detail"), KeyError("k"), ValueError("v"),
     ConfigError("c.yaml", [("a", "b")]), AssertionError()],
    ids=lambda e: type(e).__name__,
)
def test_unexpected_error_is_a_generic_500(
    exc: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="servegate.http"):
        status, headers, body = error_response(exc)
    assert status == 500
    assert json.loads(body) == {"error": "internal gateway error"}
    assert b"secret" not in body
    assert header(headers, b"retry-after") is None
    assert header(headers, b"content-type") == b"application/json"
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_headers_are_fresh_per_call() -> None:
    _, first, _ = error_response(NoEndpoint("p"))
    first.append((b"x", b"y"))
    _, second, _ = error_response(BadRequest("b"))
    assert second == [(b"content-type", b"application/json")]


def test_message_is_json_escaped() -> None:
    _, _, body = error_response(BadRequest('quote " and \\ and \n newline and ünïcode'))
    assert json.loads(body) == {"error": 'quote " and \\ and \n newline and ünïcode'}
